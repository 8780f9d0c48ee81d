"""Turn `--model` into a GeckoEncoder: a `gecko fit` checkpoint (a .ckpt file or a DeepSpeed folder),
an exported folder, or a Hub name.

Checkpoints are read by `checkpoint.encoder_from_checkpoint`, never by the LightningModule: evaluation does
not import the trainer. Sibling: `gecko_lightning.export` writes the folders read here.
"""

from __future__ import annotations

import json
from pathlib import Path

from gecko_lightning.checkpoint import encoder_from_checkpoint, is_deepspeed_checkpoint
from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.errors import UserError
from gecko_lightning.paths import model_loading, resolve_path


class ModelLoadError(UserError):
    """`--model` points at something we cannot turn into an encoder; the message says why and what to pass."""


def _sentence_transformers_max_length(folder: Path) -> int | None:
    """max_seq_length of a sentence-transformers folder, which its published scores were computed with."""
    cfg = folder / "sentence_bert_config.json"
    return json.loads(cfg.read_text()).get("max_seq_length") if cfg.is_file() else None


def load_encoder(spec: str, max_length: int | None = None) -> GeckoEncoder:
    """GeckoEncoder from a checkpoint (`.ckpt` file or DeepSpeed folder), a local folder (exported, saved or
    sentence-transformers) or a Hub name.

    max_length: None keeps the model's own limit (sentence_bert_config.json's max_seq_length when present).
    Pooling and normalisation are the folder's own (modules.json), see `GeckoEncoder.from_pretrained`.
    """
    spec = resolve_path(spec)  # `package:<pkg>/<sub>` is a local folder too
    path = Path(spec)
    if path.is_file() or is_deepspeed_checkpoint(path):
        encoder = encoder_from_checkpoint(path)
    elif path.is_dir():
        encoder = GeckoEncoder.from_pretrained(path, max_length=_sentence_transformers_max_length(path) or 512)
    elif spec.endswith(".ckpt") or spec.startswith((".", "/")):
        raise ModelLoadError(f"--model {spec}: no such file or folder")
    else:
        with model_loading(spec):  # a Hub name: one line, and no retries when the Hub is down
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
