"""`gecko build fret ... --push-to-hub REPO`: a dataset card for a finished build, then one upload.

The card's YAML front matter names only the record shards as the `train` split, so
`datasets.load_dataset(REPO)` reads the records and never the stage files uploaded beside them
(`stages/` keeps every candidate's scores, for re-selection). The LLM cache stays home: it is large
and holds raw model outputs. The card body is the manifest in short: records, task mix, models,
prompt versions and rates. A README.md the user wrote (without our first-line marker) is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from gecko_lightning.data.schema import MANIFEST, SHARD_SUFFIXES, atomic_write, read_manifest
from gecko_lightning.errors import UserError
from gecko_lightning.hub import upload_folder

log = logging.getLogger(__name__)
CARD = "README.md"
MARK = "<!-- dataset card written by `gecko build fret`; delete this line to keep your own edits -->"
UPLOAD = [CARD, MANIFEST, "shard-*", "stages/*"]
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(records: int) -> str:
    """The Hub's `size_categories` bucket for a record count."""
    return next((name for limit, name in SIZES if records < limit), "100M<n<1B")


def shard_pattern(shards: list[str]) -> str | list[str]:
    """`shard-*<suffix>` when every shard fits that glob (one format), else the exact list."""
    suffixes = {next((s for s in SHARD_SUFFIXES if name.endswith(s)), None) for name in shards}
    if len(suffixes) == 1 and None not in suffixes and all(name.startswith("shard-") for name in shards):
        return f"shard-*{suffixes.pop()}"
    return list(shards)


def front_matter(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "license": "other",
        "task_categories": ["sentence-similarity", "text-retrieval"],
        "size_categories": [size_category(manifest["records"])],
        "tags": ["gecko", "fret", "synthetic", "llm-generated", "text-embeddings"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": shard_pattern(manifest["shards"])}]}],
    }


def _table(head: tuple[str, str], rows: dict[str, Any]) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows.items()), ""]


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def card_text(manifest: dict[str, Any], repo: str) -> str:
    """The whole README.md for `repo`: front matter, then the manifest's summary."""
    cfg = manifest.get("config", {})
    select = cfg.get("select", {})
    summary = {"records": manifest["records"], "shards": len(manifest["shards"]),
               "corpus": f"`{cfg.get('corpus', {}).get('path')}`",
               "positive": select.get("positive"), "negative": select.get("negative")}
    if manifest.get("from"):
        summary["re-selected from"] = f"`{manifest['from']}`"
    rates = {"positive differs from the seed": _rate(manifest.get("positive_ne_seed_rate")),
             "LLM top-1 differs from the seed": _rate(manifest.get("llm_top1_ne_seed_rate")),
             "generation parse failures": _rate(manifest.get("parse_failure_rate"))}
    calls = {stage: f"{n} (cache hits {manifest.get('cache_hits', {}).get(stage, 0)})"
             for stage, n in manifest.get("llm_calls", {}).items()}
    body = [
        "---", yaml.safe_dump(front_matter(manifest), sort_keys=False).rstrip(), "---", MARK, "",
        "# FRet training data", "",
        "Built with `gecko build fret` (gecko_lightning): an LLM wrote a task and a query for each seed "
        "passage, an embedder retrieved candidates, the LLM re-ranked them (query likelihood + relevance, "
        "reciprocal-rank fusion), and the selection below chose a positive and a hard negative. The "
        "`license` above is a placeholder: set it to the terms of the corpus and of the LLM.", "",
        *_table(("", "value"), summary),
        "## Task mix", "", *_table(("task type", "records"), manifest.get("task_distribution", {})),
        "## Models", "", *_table(("role", "model"), manifest.get("models", {})),
        "## Prompt versions", "", *_table(("stage", "version"), manifest.get("prompt_versions", {})),
        "## Rates", "", *_table(("rate", "value"), rates),
        "## LLM calls", "", *_table(("stage", "calls"), calls),
        "## Files", "",
        "- `shard-*`: the records (the `train` split): `id`, `source`, `task`, `query`, `positive` and "
        "`negative` ({`text`, `title`}), `symmetric`, and `meta` with every candidate's scores.",
        "- `manifest.json`: the full build report and config.",
        "- `stages/`: each stage's output and statistics (`gecko build fret --from` re-selects from them).", "",
        "```python", "from datasets import load_dataset", "", f'records = load_dataset("{repo}", split="train")', "```", "",
    ]
    return "\n".join(body)


def write_card(folder: str | Path, repo: str) -> Path:
    """Write `folder/README.md` from its manifest, unless the user wrote their own (no marker line)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest.get("shards"):
        raise UserError(f"--push-to-hub: {folder} holds no finished build ({MANIFEST} is missing); build it first")
    path = folder / CARD
    if path.is_file() and MARK not in path.read_text(encoding="utf-8"):
        log.warning("%s was written by hand (no marker line); uploading it as it is", path)
        return path
    atomic_write(path, lambda tmp: tmp.write_text(card_text(manifest, repo), encoding="utf-8"))
    return path


def push_build(folder: str | Path, repo: str, private: bool = False) -> str:
    """Write the card and upload the build (card, manifest, shards, stage files) as a dataset repo."""
    write_card(folder, repo)
    return upload_folder(folder, repo, repo_type="dataset", private=private, allow_patterns=UPLOAD,
                         message="Upload a FRet build with gecko build fret")
