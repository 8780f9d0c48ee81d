"""The `gecko eval --output` file: {dataset: {metric: score}} plus one `_meta` entry on how it was scored.

    {"_meta": {"labels": {"variant": "tuned", "seed": "0"}, "model": "out/model", "prompts": "gecko",
               "split": "test", "dims": null},
     "scifact": {"ndcg_at_10": 64.51, "recall_at_100": 92.5, "mrr_at_10": 60.47},
     "sts-test.csv": {"spearman": 82.03}}

Scores are 0-100. The labels (`gecko eval --label KEY=VALUE`) travel inside the file, so `gecko report`
groups files into variants and seeds from the files themselves, wherever they were moved. Written by
cli.py; read by `gecko report` (report_evals.py) and `gecko export` (the model card's table).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import atomic_write
from gecko_lightning.errors import UserError

META = "_meta"  # the one key that is not a dataset; a leading underscore keeps it apart from file names
_LABEL = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
SHAPE = '{"_meta": {...}, dataset: {metric: score}}'


def parse_labels(items: list[str]) -> dict[str, str]:
    """`["variant=tuned", "seed=0"]` -> {"variant": "tuned", "seed": "0"}; values stay strings."""
    labels: dict[str, str] = {}
    for item in items:
        match = _LABEL.match(item)
        if not match:
            raise UserError(f"--label {item!r}: expected KEY=VALUE (letters, digits, _ . - in KEY), e.g. --label variant=tuned")
        key, value = match.groups()
        if key in labels:
            raise UserError(f"--label {key} is given twice ({labels[key]!r} and {value!r}); keep one")
        labels[key] = value
    return labels


def write_results(path: Path, results: dict[str, dict[str, float]], meta: dict[str, Any]) -> None:
    """`_meta` first, then the scores; an interrupted run leaves the previous file or none, never half of one."""
    body = json.dumps({META: meta, **results}, indent=2, allow_nan=False) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(body))


def scores_of(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The {dataset: {metric: score}} part of a loaded file; files from before `_meta` have only that."""
    return {k: v for k, v in results.items() if k != META}


def read_results(path: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """(scores, meta) of an `--output` file, checked: every dataset maps metric names to finite numbers."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read it as JSON ({e}); pass a `gecko eval --output` file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a JSON {type(data).__name__}, not a `gecko eval --output` file ({SHAPE})")
    meta = data.get(META, {})
    if not isinstance(meta, dict) or not isinstance(meta.get("labels", {}), dict):
        raise UserError(f"{path}: its {META!r} entry must be an object with an object 'labels'; re-write it with gecko eval")
    scores = scores_of(data)
    for dataset, per in scores.items():
        if not isinstance(per, dict) or not per or not all(_is_score(v) for v in per.values()):
            shown = json.dumps(per)[:60]
            raise UserError(f"{path}: {dataset!r} maps to {shown}, not to {{metric: score}}; "
                            f"is it a `gecko eval --output` file ({SHAPE})?")
    if not scores:
        raise UserError(f"{path}: holds no scores; pass a `gecko eval --output` file ({SHAPE})")
    return scores, meta


def _is_score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
