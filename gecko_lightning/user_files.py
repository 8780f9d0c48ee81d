"""Is a file the user handed us whole? Config YAML and model weights, checked before a library reads them.

A truncated download or a mis-indented key otherwise surfaces 20 to 70 lines deep in PyYAML,
jsonargparse, safetensors or torch.load, naming an internal buffer instead of the user's file.
These checks read only what they must (a YAML document; a safetensors header; a checkpoint's zip
directory through `mmap`, so no tensor is copied) and turn a failure into one `UserError` that names
the file, what was expected, and the fix. Siblings: `errors.py` formats OS errors (a full disk),
`checkpoint.read_checkpoint` loads checkpoints through `load_torch_file`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from gecko_lightning.errors import UserError

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
# What transformers' from_pretrained looks for in a folder, in its own order of preference.
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS + ".index.json", PYTORCH_BIN, PYTORCH_BIN + ".index.json")


def _first_line(error: BaseException) -> str:
    """The library's own reason, first sentence only: torch appends a paragraph of speculation."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text.split(". ")[0].rstrip(".")


def check_yaml(path: str | os.PathLike, flag: str = "--config") -> None:
    """A YAML syntax error as `FLAG FILE: line L, column C: <reason>`; a missing file is left to the parser."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return
    try:
        yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        context = f" ({e.context} at line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise UserError(f"{flag} {path}: YAML syntax error at {where}: {e.problem}{context}; "
                        f"fix the indentation or quoting there") from None
    except yaml.YAMLError as e:
        raise UserError(f"{flag} {path}: not valid YAML ({_first_line(e)}); fix the file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{flag} {path}: byte {e.start} is not UTF-8; save the file as UTF-8") from None


def _cut_short(path: Path, expected: str, error: BaseException) -> UserError:
    return UserError(f"{path} is not a readable {expected} ({_first_line(error)}): the file is truncated or corrupt, "
                     f"e.g. a copy cut off mid-transfer; copy or write it again")


def load_torch_file(path: str | os.PathLike, expected: str = "PyTorch checkpoint", weights_only: bool = False) -> Any:
    """`torch.load(path)` on CPU, through mmap so no tensor is copied until used; a file that cannot be read
    is one UserError naming it and `expected`."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file, or a broken one: mmap's reason is "Invalid argument"
        pass
    try:  # read in full: a legacy file loads, and a broken one fails with torch's own reason
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except OSError as e:  # torch took the cut-off zip for a legacy file and seeks past its end: EINVAL says nothing
        if zipfile.is_zipfile(path):
            raise _cut_short(path, expected, e) from None
        raise _cut_short(path, expected, OSError(f"{path.stat().st_size} bytes and no zip directory at the end, "
                                                 f"which torch.save writes last")) from None
    except Exception as e:  # noqa: BLE001 - pickle, EOF and zip errors alike
        raise _cut_short(path, expected, e) from None


def check_safetensors(path: Path) -> None:
    """The header parses and covers the whole file; a truncated copy fails here, before any tensor is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as e:  # noqa: BLE001 - SafetensorError is not importable by a stable name
        raise _cut_short(path, "safetensors file", e) from None


def check_weights_folder(folder: str | os.PathLike) -> None:
    """A local model folder holds weights that transformers can read; the message names the file at fault."""
    folder = Path(folder)
    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        raise UserError(f"{folder} holds no model weights: expected {SAFETENSORS} or {PYTORCH_BIN} (or a sharded "
                        f"*.index.json) beside config.json; pass a folder written by `gecko export` or save_pretrained, "
                        f"or a `gecko fit` .ckpt")
    weights = found[0]
    if weights.name == SAFETENSORS:
        check_safetensors(weights)
    elif weights.name == PYTORCH_BIN:
        load_torch_file(weights, f"{PYTORCH_BIN} weights file", weights_only=True)
