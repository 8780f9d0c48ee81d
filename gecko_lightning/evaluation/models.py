"""Turn `--model` into a GeckoEncoder: a Lightning checkpoint, an exported folder, or a Hub name.

Sibling: `gecko_lightning.export` writes the folders read here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.paths import resolve_path


class ModelLoadError(ValueError):
    """`--model` points at something we cannot turn into an encoder; the message says why and what to pass."""


def checkpoint_hparams(path: str | Path) -> dict:
    """Hyper-parameters saved in a Lightning checkpoint, after checking it holds encoder weights."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ModelLoadError(f"{path} is not a readable PyTorch/Lightning checkpoint ({type(e).__name__}: {e})") from e
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    if not any(k.startswith("encoder.") for k in state):
        raise ModelLoadError(
            f"checkpoint {path} holds no encoder weights (no 'encoder.*' keys in its state_dict); "
            "pass a checkpoint written by `gecko fit` (GeckoModule) or an exported model folder"
        )
    return dict(ckpt.get("hyper_parameters", {}))


def load_checkpoint_encoder(path: str | Path) -> tuple[GeckoEncoder, dict]:
    """(encoder, hparams) from a `gecko fit` checkpoint, on CPU."""
    hparams = checkpoint_hparams(path)
    from gecko_lightning.module import GeckoModule

    module = GeckoModule.load_from_checkpoint(str(path), map_location="cpu")
    return module.encoder, hparams


def _sentence_transformers_max_length(folder: Path) -> int | None:
    """max_seq_length of a sentence-transformers folder, which its published scores were computed with."""
    cfg = folder / "sentence_bert_config.json"
    return json.loads(cfg.read_text()).get("max_seq_length") if cfg.is_file() else None


def load_encoder(spec: str, max_length: int | None = None) -> GeckoEncoder:
    """GeckoEncoder from a `.ckpt` file, a local folder (exported, saved or sentence-transformers) or a Hub name.

    max_length: None keeps the model's own limit (sentence_bert_config.json's max_seq_length when present).
    Pooling and normalisation are the folder's own (modules.json), see `GeckoEncoder.from_pretrained`.
    """
    spec = resolve_path(spec)  # `package:<pkg>/<sub>` is a local folder too
    path = Path(spec)
    if path.is_file():
        encoder, _ = load_checkpoint_encoder(path)
    elif path.is_dir():
        encoder = GeckoEncoder.from_pretrained(path, max_length=_sentence_transformers_max_length(path) or 512)
    elif spec.endswith(".ckpt") or spec.startswith((".", "/")):
        raise ModelLoadError(f"--model {spec}: no such file or folder")
    else:
        encoder = GeckoEncoder.from_pretrained(spec, max_length=_hub_max_length(spec) or 512)
    if max_length:
        encoder.max_length = max_length
    return encoder


def _hub_max_length(name: str) -> int | None:
    try:
        from huggingface_hub import hf_hub_download

        return _sentence_transformers_max_length(Path(hf_hub_download(name, "sentence_bert_config.json")).parent)
    except Exception:  # noqa: BLE001 - plain HF models have no such file
        return None
