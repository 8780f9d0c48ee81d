"""`tracking.wandb: true`: a finished build as a W&B run of job_type `build` (docs/tracking.md).

The run holds the manifest's counts and timings as its summary, a table of the first
`tracking.table_rows` records (query, task, positive, negative and the LLM's scores of both), and the
build folder as a `dataset` artifact named after the build. Only what training and evaluation read
goes into the artifact (the manifest, the record shards, the test split, the stage files); the LLM
cache, the corpus index and the run's own folder stay out. The run is started after the build has
finished and touches none of its files but `wandb/` and `wandb_artifact.json`.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

from gecko_lightning.artifacts import artifact_name, log_folder, start_run, write_run_record
from gecko_lightning.data.schema import MANIFEST, Record, dataset_files, iter_records, read_manifest

from .config import BuildConfig
from .fret.sharding import resolve_shard, shard_dir

log = logging.getLogger(__name__)

ARTIFACT_FOLDERS = ("test", "stages", "candidates")  # besides the manifest and the shards
TABLE_COLUMNS = ["id", "task_type", "task", "query", "positive", "negative", "positive_is_seed",
                 "positive_ql", "positive_rc", "positive_fused", "negative_ql", "negative_rc", "negative_fused"]


def artifact_files(folder: Path) -> list[Path]:
    """The files of a build that its dataset artifact holds."""
    files = [folder / MANIFEST, *dataset_files(folder)]
    for sub in ARTIFACT_FOLDERS:
        files += [p for p in (folder / sub).rglob("*") if p.is_file()] if (folder / sub).is_dir() else []
    return files


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's counts and timings, flat, for the run's summary (minutes per stage, LLM calls...)."""
    out: dict[str, Any] = {"records": manifest.get("records")}
    for key in ("parse_failures", "parse_failure_rate", "positive_ne_seed_rate", "llm_top1_ne_seed_rate",
                "truncated_passages", "empty_passages_skipped"):
        out[key] = manifest.get(key)
    for key in ("llm_calls", "cache_hits", "llm_retries", "llm_failures", "llm_calls_per_s", "task_distribution"):
        out.update({f"{key}/{k}": v for k, v in (manifest.get(key) or {}).items()})
    minutes = {s: round(w / 60, 4) for s, w in (manifest.get("wall_time_s") or {}).items()}
    out.update({f"minutes/{s}": m for s, m in minutes.items()}, **{"minutes/total": round(sum(minutes.values()), 4)})
    return {k: v for k, v in out.items() if v is not None}


def _scores(record: Record, passage_id: str | None) -> list[float | None]:
    cand = next((c for c in record.meta.get("candidates", []) if c["id"] == passage_id), {})
    return [cand.get("ql"), cand.get("rc"), cand.get("fused")]


def table_row(record: Record) -> list[Any]:
    """One row of the records table (TABLE_COLUMNS), scores from the candidates the build kept in `meta`."""
    meta = record.meta
    negative = record.negative.text if record.negative is not None else None
    return [record.id, meta.get("task_type"), record.task, record.query, record.positive.text, negative,
            meta.get("positive_id") == meta.get("seed_id"),
            *_scores(record, meta.get("positive_id")), *_scores(record, meta.get("negative_id"))]


def sample_rows(folder: Path, n: int) -> list[list[Any]]:
    return [table_row(r) for r in itertools.islice(iter_records(folder), n)]


def log_build(cfg: BuildConfig, folder: str | Path) -> dict[str, Any]:
    """Log the finished build in `folder` as a run of job_type `build`; returns its dataset artifact's record."""
    import wandb

    folder, tracking = Path(folder), cfg.tracking
    manifest = read_manifest(folder)
    out = Path(cfg.output_dir).resolve()
    # a shard is named after its build too: fret_wiki-shard-03-of-16, not shard-03-of-16
    name = artifact_name(tracking.artifact or (out.name if folder.resolve() == out else f"{out.name}-{folder.name}"))
    run = start_run("build", folder, tracking.project, tracking.mode, name=name, config=cfg.to_dict())
    try:
        run.summary.update(summary(manifest))
        run.log({"records_sample": wandb.Table(columns=TABLE_COLUMNS, data=sample_rows(folder, tracking.table_rows))})
        meta = {k: manifest.get(k) for k in ("records", "corpus_sha256", "models", "prompt_versions", "shard_sha256")}
        record = log_folder(run, folder, name, "dataset", artifact_files(folder), tracking.reference_above_mb, meta)
        write_run_record(run, "build", inputs=[], outputs=[record])
    finally:
        run.finish()
    return record


def log_finished(cfg: BuildConfig, folder: Path | None = None) -> dict[str, Any] | None:
    """`log_build` on `folder` (default: where `cfg` builds, its shard folder if sharded) once it holds a
    manifest; a run of single stages has none (the manifest is written last) and logs nothing."""
    folder = folder or shard_dir(resolve_shard(cfg))
    if not (folder / MANIFEST).is_file():
        log.info("tracking: %s holds no finished build (no %s); nothing logged", folder, MANIFEST)
        return None
    return log_build(cfg, folder)
