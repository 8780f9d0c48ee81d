"""Read what `gecko fit` writes, without the trainer: a Lightning `.ckpt` file or a DeepSpeed folder.

Lightning's DeepSpeed strategy writes a *folder* under every ZeRO stage (1, 2 and 3): its
`save_checkpoint` calls DeepSpeed's `engine.save_checkpoint(path, client_state=<the Lightning
checkpoint minus state_dict and optimizer_states>, tag="checkpoint")`, which lays out

    last.ckpt/latest                                              the tag, "checkpoint"
    last.ckpt/zero_to_fp32.py                                     DeepSpeed's own recovery script
    last.ckpt/checkpoint/mp_rank_00_model_states.pt               "module" + client state (ZeRO-1/2)
    last.ckpt/checkpoint/zero_pp_rank_<r>_mp_rank_00_model_states.pt   the same per rank (ZeRO-3)
    last.ckpt/checkpoint/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   fp32 partitions, one per rank

`read_checkpoint` merges such a folder into one fp32 state dict with Lightning's
`convert_zero_checkpoint_to_fp32_state_dict` (which needs the deepspeed package) in a temporary file
(under TMPDIR), and reads a `.ckpt` file directly.

`GeckoModule.on_save_checkpoint` adds `encoder_record` under ENCODER_KEY: the encoder's settings
(pooling, projection, text format) and its backbone's config.json and tokenizer files, so the
encoder is rebuilt from the checkpoint alone: no base model weights are read and no network is
needed. A checkpoint written before that falls back to the base model's config and tokenizer by name
(small files from the Hub at most, never its weights).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoConfig, AutoTokenizer

from gecko_lightning.encoder import GeckoEncoder, declaring_folder, backbone_class, declared_pooling, drop_unused_pooler
from gecko_lightning.errors import MissingPathError, UserError
from gecko_lightning.paths import local_model_path, model_loading, resolve_path
from gecko_lightning.text_format import Template
from gecko_lightning.user_files import load_torch_file

ENCODER_KEY = "gecko_encoder"  # {"settings": GeckoEncoder.settings(), "files": {name: bytes}}
DATA_KEY = "gecko_data"  # {source name: {"path": ..., "source": ...}}: what the model was trained on
DEEPSPEED_TAG_FILE = "latest"


class Checkpoint(NamedTuple):
    """A `gecko fit` checkpoint read back: the encoder (eval mode, CPU), the GeckoModule hyper-parameters
    and the training data it records ({} when it records none)."""

    encoder: GeckoEncoder
    hparams: dict
    data: dict


def encoder_record(encoder: GeckoEncoder) -> dict:
    """ENCODER_KEY's value: settings plus the files that rebuild the encoder without its base model."""
    with tempfile.TemporaryDirectory() as tmp:
        encoder.backbone.config.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    return {"settings": encoder.settings(), "files": files}


def is_deepspeed_checkpoint(path: str | os.PathLike) -> bool:
    """A folder in the layout above: a `latest` tag file, or a tag folder holding `*model_states.pt`."""
    path = Path(path)
    return path.is_dir() and ((path / DEEPSPEED_TAG_FILE).is_file() or any(path.glob("*/*model_states.pt")))


def _convert_deepspeed(folder: Path, out_file: Path) -> None:
    try:
        # The converter prints its progress to stdout ("Processing zero checkpoint ...", "Parsing
        # checkpoint created by deepspeed=="): stderr takes it, with whatever its imports print, so a
        # command's stdout holds only its own output.
        with contextlib.redirect_stdout(sys.stderr):
            from lightning.pytorch.utilities import deepspeed as lightning_deepspeed

            lightning_deepspeed.convert_zero_checkpoint_to_fp32_state_dict(str(folder), str(out_file))
    except ModuleNotFoundError:
        raise UserError(
            f"{folder} is a DeepSpeed checkpoint folder; reading it needs the deepspeed package: "
            "pip install 'gecko-lightning[deepspeed]' (or convert it where deepspeed is installed, see docs/scaling.md)"
        ) from None
    except (FileNotFoundError, ValueError, KeyError, IndexError) as e:
        raise UserError(f"{folder} is not a complete DeepSpeed checkpoint folder ({type(e).__name__}: {e}); "
                        "pass the folder Lightning wrote (it holds `latest` and `checkpoint/`)") from e


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Lightning's checkpoint dict, "state_dict" included, from a `.ckpt` file or a DeepSpeed folder."""
    path = Path(path)
    if is_deepspeed_checkpoint(path):
        with tempfile.TemporaryDirectory(prefix="gecko-zero-") as tmp:
            out = Path(tmp) / "fp32.ckpt"
            _convert_deepspeed(path, out)
            return torch.load(out, map_location="cpu", weights_only=False)
    if path.is_dir():
        raise UserError(f"{path} is a folder but no DeepSpeed checkpoint (no `latest` file, no */*model_states.pt); "
                        "pass a .ckpt file or the folder Lightning's DeepSpeed strategy wrote")
    if not path.is_file():
        raise MissingPathError(f"{path}: no such checkpoint file or folder")
    ckpt = load_torch_file(path, "PyTorch/Lightning checkpoint")  # truncated or corrupt: one line naming it
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a Lightning checkpoint; pass one written by `gecko fit`")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The encoder, hyper-parameters and data record of a `gecko fit` checkpoint (file or DeepSpeed folder).

    The encoder weights are loaded strictly: a key missing or left over is an error, never a silently
    random layer.
    """
    path = Path(resolve_path(str(path)))
    ckpt = read_checkpoint(path)
    weights = {k.removeprefix("encoder."): v for k, v in (ckpt.get("state_dict") or {}).items() if k.startswith("encoder.")}
    if not weights:
        raise UserError(f"checkpoint {path} holds no encoder weights (no 'encoder.*' keys in its state_dict); "
                        "pass a checkpoint written by `gecko fit` (GeckoModule) or an exported model folder")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    encoder = _build_encoder(ckpt.get(ENCODER_KEY), hparams, path)
    if not any(k.startswith("backbone.pooler.") for k in weights):
        drop_unused_pooler(encoder.backbone)  # GeckoModule trains without it
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"checkpoint {path}: its encoder weights do not match the encoder it describes ({first})") from e
    return Checkpoint(encoder.eval(), hparams, dict(ckpt.get(DATA_KEY) or {}))


def encoder_from_checkpoint(path: str | os.PathLike) -> GeckoEncoder:
    """The encoder of a `gecko fit` checkpoint: a Lightning `.ckpt` file or the folder Lightning's
    DeepSpeed strategy writes (any ZeRO stage), in eval mode on the CPU. Built from the backbone config
    and tokenizer saved in the checkpoint, never from the base model's weights."""
    return load_checkpoint(path).encoder


def _build_encoder(record: dict | None, hparams: dict, path: Path) -> GeckoEncoder:
    """A randomly initialised encoder of the checkpoint's architecture, ready for its state dict."""
    if record:
        with tempfile.TemporaryDirectory(prefix="gecko-encoder-") as tmp:
            for name, data in record["files"].items():
                (Path(tmp) / Path(name).name).write_bytes(data)
            return _from_config(tmp, tmp, record["settings"])
    base = hparams.get("model_name_or_path")
    if not base:
        raise UserError(f"checkpoint {path} records neither its encoder ({ENCODER_KEY}) nor hyper_parameters.model_name_or_path; "
                        "pass a checkpoint written by `gecko fit`")
    base = local_model_path(resolve_path(base))
    tokenizer = local_model_path(resolve_path(hparams.get("tokenizer") or base), "tokenizer")
    with model_loading(base):  # a Hub name that cannot be reached or found: one line, no retries
        folder = declaring_folder(base)
    pooling = hparams.get("pooling") or (declared_pooling(folder).get("pooling") if folder else None) or "mean"
    settings = {"pooling": pooling, "normalize": True, "projection_dim": hparams.get("projection_dim"),
                "max_length": hparams.get("max_length", 512)}
    return _from_config(base, tokenizer, settings)


def _from_config(config_dir: str, tokenizer_dir: str, settings: dict) -> GeckoEncoder:
    with model_loading(config_dir):
        config = AutoConfig.from_pretrained(config_dir)  # config.json only
    backbone = backbone_class(config).from_config(config)  # random weights, replaced by the checkpoint's
    text_format = Template.from_dict(settings["text_format"]) if settings.get("text_format") else None
    with model_loading(tokenizer_dir, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return GeckoEncoder(backbone, tokenizer, projection_dim=settings.get("projection_dim"),
                        normalize=settings.get("normalize", True), max_length=settings.get("max_length", 512),
                        pooling=settings.get("pooling", "mean"), text_format=text_format)
