"""`gecko report ... --build DIR`: what a `gecko build fret` build cost, read from its manifest.json.

    gecko report base.json tuned.json --build outputs/demo/fret --output results.md

A gain means little without its price, so the report puts beside it the minutes and LLM calls of
each build stage, the training records the build wrote and its held-out test split. Every figure
comes from the manifest the build wrote (data_builders/fret/runner.py `_manifest`); this module only
reads it, since the trainer never imports the builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import MANIFEST, read_manifest
from gecko_lightning.errors import UserError

LLM_STAGES = ("generate", "rerank")  # the stages that call the LLM; the others report 0 calls


def read_build(folder: str | Path) -> dict[str, Any]:
    """The manifest of a finished FRet build, or a UserError naming the folder and what to run."""
    manifest = read_manifest(folder)
    if not manifest:
        raise UserError(f"--build {folder}: no {MANIFEST} there; name the --output_dir of a finished "
                        f"`gecko build fret` (one that printed its manifest)")
    if manifest.get("source") != "fret" or "wall_time_s" not in manifest:
        raise UserError(f"--build {folder}: its {MANIFEST} is not a FRet build's (source {manifest.get('source')!r}); "
                        f"name the --output_dir of `gecko build fret`")
    return manifest


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def cost_rows(manifest: dict[str, Any]) -> list[tuple[str, float, int, int]]:
    """(stage, seconds, LLM calls, cache hits) per stage in build order, the LLM's load time in its first stage."""
    rows = []
    for stage, wall in manifest["wall_time_s"].items():
        stats = (manifest.get("stages") or {}).get(stage, {})
        seconds = wall + stats.get("llm_load_s", 0.0)
        rows.append((stage, seconds, (manifest.get("llm_calls") or {}).get(stage, 0), (manifest.get("cache_hits") or {}).get(stage, 0)))
    return rows


def cost_markdown(folder: str | Path) -> str:
    """A table of the build's stages (minutes, LLM calls, cache hits) and a line on its records and test split."""
    manifest = read_build(folder)
    rows = cost_rows(manifest)
    lines = [f"What the build cost ({folder}):", "", "| stage | minutes | LLM calls | cache hits |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {s} | {_minutes(t)} | {c} | {h} |" for s, t, c, h in rows]
    lines.append(f"| total | {_minutes(sum(r[1] for r in rows))} | {sum(r[2] for r in rows)} | {sum(r[3] for r in rows)} |")
    lines += ["", f"Training records: {manifest['records']}. " + _split_line(manifest.get("test_split"), manifest.get("counts", {}).get("generate", {}))]
    if any(h for *_, h in rows):
        lines.append("Cache hits are calls answered from the build's LLM cache (an earlier run made them).")
    return "\n".join(lines) + "\n"


def _split_line(split: dict[str, Any] | None, generate: dict[str, Any]) -> str:
    # what the split drew from: generated queries' seeds, a query log (corpus.queries), or both
    given, seeds = generate.get("given_queries", 0), generate.get("seeds", 1)
    drawn = "the given queries" if given and not seeds else "the seeds and given queries" if given else "the seeds"
    if not split or not split.get("queries"):
        return f"No held-out test split (test_split.fraction: 0, or none of {drawn} fell in it)."
    dropped = split.get("training_records_dropped") or {}
    return (f"Held-out test split: {split['queries']} queries ({split['fraction']:.0%} of {drawn}), "
            f"{split['qrels']} relevance labels from the LLM ({split['relevance']}: {split['rule']}); "
            f"training records dropped so none leaks into it: {dropped.get('query_in_test', 0)} with a test query, "
            f"{dropped.get('positive_relevant_to_test', 0)} with a positive relevant to one.")
