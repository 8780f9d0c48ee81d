"""Run FRet stages in order, time them, export records and write `manifest.json`.

Every stage's statistics land in `stages/<stage>.stats.json`, so the manifest written by `export`
describes the latest run of every stage even when stages were run one at a time.

Two steps stand outside the per-build stages because they serve a whole (possibly sharded) build
once: `embed` embeds the corpus, or slice `shard.index` of `shard.count` of it, into
`retrieve.index_dir`, and `index` checks the slices and builds the search index (`embed` over the
whole corpus does both). A shard (sharding.py) writes `<output_dir>/shard-I-of-N/` and only reads
that index; an unsharded build embeds its corpus in `retrieve` when its own index is missing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import (
    LIST_PASSAGES, MANIFEST, Passage, Record, dataset_files, read_manifest, write_manifest, write_records,
)
from gecko_lightning.errors import UserError, keep_on_os_error

from .. import corpus
from ..config import BuildConfig
from ..corpus import file_sha256, read_jsonl, write_json, write_jsonl
from . import split, stages
from .context import LLM_STAGES, STAGES, Context
from .sharding import resolve_shard, shard_dir

log = logging.getLogger(__name__)
STEPS = ("embed", "index")  # the shared corpus index; `--stage embed` / `--stage index`, on their own


def _stats_file(ctx: Context, stage: str) -> Path:
    return ctx.out / "stages" / f"{stage}.stats.json"


def _retries(ctx: Context) -> int:
    return getattr(ctx._llm, "counts", {}).get("retries", 0) if ctx._llm is not None else 0


def run_stage(ctx: Context, stage: str) -> dict[str, Any]:
    start, retries = time.perf_counter(), _retries(ctx)
    stats = export(ctx) if stage == "export" else getattr(stages, stage)(ctx)
    stats["wall_s"] = round(time.perf_counter() - start, 3)
    if stage in LLM_STAGES:
        stats["llm_calls"] = ctx.counter.llm_calls[stage]
        stats["cache_hits"] = ctx.counter.cache_hits[stage]
        stats["llm_retries"] = _retries(ctx) - retries
        stats["llm_failures"] = ctx.counter.llm_failures[stage]
        # The model loads (and is probed) before the first stage runs, so wall_s excludes the load;
        # it is reported once, with the first LLM stage of the run.
        stats["llm_load_s"] = round(ctx.llm_load_s, 3)
        ctx.llm_load_s = 0.0
        stats["llm_calls_per_s"] = round(stats["llm_calls"] / max(stats["wall_s"], 1e-9), 3)
    stats.update(prompt_versions=dict(ctx.prompt_versions), models=dict(ctx.models))
    if stage != "export":
        write_json(_stats_file(ctx, stage), stats)
    log.info("stage %s done in %.1fs", stage, stats["wall_s"])
    return stats


def corpus_fingerprint(cfg: BuildConfig) -> str | None:
    """The build's corpus as `corpus.corpus_fingerprint` identifies it (None when it can't tell)."""
    return corpus.corpus_fingerprint(cfg.corpus)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config as the manifest stores it, minus where the build lives (moving it changes nothing)."""
    return {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k != "output_dir"}


# Sections whose default writes something an older build did not: absent from a stored config, they
# mean the value that build had (a build from before the test split held no seed out).
ABSENT_MEANS = {"test_split": {"fraction": 0.0}}


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the keys added to `BuildConfig` since it was written, at their defaults:
    a new key left at its default builds what the old manifest describes (ABSENT_MEANS says otherwise)."""
    defaults = BuildConfig().to_dict()
    config = {**{k: v for k, v in ABSENT_MEANS.items() if k not in config}, **config}
    return {k: {**defaults[k], **v} if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
            for k, v in {**defaults, **config}.items()}


def finished_build(cfg: BuildConfig) -> dict[str, Any] | None:
    """The manifest of a complete build of exactly this config and corpus in `cfg.output_dir`, else None.

    The manifest is removed before any stage runs and written last, so its presence means every
    stage and the export finished; the shards it lists must all still be there. A sharded `cfg`
    (as `sharding.resolve_shard` returns it) is looked for in its shard folder.
    """
    out = shard_dir(cfg)
    try:
        manifest = read_manifest(out)
    except (ValueError, OSError):  # unreadable or another schema version: rebuild
        return None
    if not manifest or _comparable(_with_defaults(manifest.get("config", {}))) != _comparable(cfg.to_dict()):
        return None
    if manifest.get("corpus_sha256") != corpus_fingerprint(cfg):
        return None
    if not manifest.get("shards") or not all((out / s).is_file() for s in manifest["shards"]):
        return None
    sums = manifest.get("shard_sha256") or {}
    if set(sums) != set(manifest["shards"]) or any(file_sha256(out / s) != h for s, h in sums.items()):
        log.warning("%s: a shard differs from its manifest sha256 (truncated or edited); rebuilding from the cache", out)
        return None
    if any((manifest.get("llm_failures") or {}).values()):  # some calls failed: a re-run asks them again
        return None
    return manifest


def run(cfg: BuildConfig, stage_names: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run the named stages (all by default) in pipeline order; returns {stage: stats}.

    A complete build of the same config and corpus is not run again unless `force` (a forced run
    still answers every LLM call from the cache); its stats come back with `skipped: True`.
    The shard comes from `cfg.shard` or the Slurm array (`sharding.resolve_shard`). `embed` and
    `index` (STEPS) run only on their own.
    """
    names = stage_names or list(STAGES)
    bad = [s for s in names if s not in STAGES + STEPS]
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; choose from {list(STAGES + STEPS)} (comma-separated for several)")
    cfg = resolve_shard(cfg)
    if set(names) & set(STEPS):
        if not set(names) <= set(STEPS):
            raise UserError(f"--stage {','.join(names)}: embed and index build the corpus index that every shard "
                            f"searches; run them on their own (--stage embed, then the build)")
        return {s: run_step(cfg, s) for s in STEPS if s in names}
    if stage_names is None and not force and (done := finished_build(cfg)) is not None:
        log.info("%s holds a finished build of this config and corpus; reusing it (--force rebuilds)", shard_dir(cfg))
        return {s: {**done["stages"].get(s, {}), "skipped": True} for s in STAGES[:-1]} | {
            "export": {"records": done["records"], "shards": len(done["shards"]), "skipped": True}}
    if cfg.shard.count is not None and "retrieve" in names:
        from ..index import check_index  # torch and faiss load only for a stage that searches

        check_index(cfg)  # before the LLM loads; generate checks the passages before its first call
    return run_stages(cfg, names)


def run_stages(cfg: BuildConfig, names: list[str]) -> dict[str, Any]:
    """Run `names` of STAGES for `cfg` exactly as given (no shard resolution, no reuse of a finished build)."""
    ctx = Context(cfg)
    (ctx.out / MANIFEST).unlink(missing_ok=True)  # the build is incomplete until export writes it again
    # Stage files are written whole or not at all, and each batch of LLM calls is one cache transaction,
    # so a full disk loses nothing finished: the same command resumes from there.
    kept = f"finished stages are kept in {ctx.out / 'stages'} and finished LLM calls are cached in {ctx.cache.path}"
    try:
        with keep_on_os_error(kept):
            if any(s in LLM_STAGES for s in names):
                ctx.llm()  # load + probe before any work, so a bad server fails at start-up
            return {s: run_stage(ctx, s) for s in STAGES if s in names}
    finally:
        ctx.cache.close()


def run_step(cfg: BuildConfig, step: str) -> dict[str, Any]:
    """`embed` (slice `shard.index` of `shard.count`, or everything) or `index` (merge the slices)."""
    from ..index import embed_corpus, finish_index

    start = time.perf_counter()
    if step == "index":
        manifest = finish_index(cfg, corpus_fingerprint(cfg))
        stats = {"passages": manifest["passages"], "slices": len(manifest["slices"]), "passages_sha256": manifest["passages_sha256"]}
    else:
        rows, _ = stages.prepared_corpus(cfg, stages.passage_truncator(cfg.llm))
        stats = embed_corpus(cfg, rows, corpus_fingerprint(cfg))
    stats["wall_s"] = round(time.perf_counter() - start, 3)
    log.info("step %s done in %.1fs", step, stats["wall_s"])
    return stats


def _passage(row: dict[str, Any]) -> Passage:
    return Passage(text=row["text"], title=row["title"])


def build_records(ctx: Context) -> list[Record]:
    """One record per selected query; `meta` holds every candidate's scores so ablations re-select offline."""
    by_id = {r["id"]: r for r in read_jsonl(ctx.stage_file("corpus"))}
    chosen = {split.row_key(s): s for s in read_jsonl(ctx.stage_file("select"))}
    records = []
    for row in read_jsonl(ctx.stage_file("rerank")):
        if split.row_key(row) not in chosen:  # held out for the test split, or dropped as a leak (split.py)
            continue
        sel = chosen[split.row_key(row)]
        given = {"query_id": row["query_id"]} if row.get("query_id") is not None else {}
        meta = {"seed_id": row["seed_id"], **given, "task_type": row["task_type"], "positive_id": sel["positive_id"],
                "negative_id": sel["negative_id"], "seed_retrieval_rank": row["seed_retrieval_rank"],
                "candidates": row["candidates"]}
        neg = _passage(by_id[sel["negative_id"]]) if sel["negative_id"] else None
        records.append(Record(id=split.record_id(row), source="fret", task=row["task"], query=row["query"],
                              positive=_passage(by_id[sel["positive_id"]]), negative=neg, symmetric=False, meta=meta))
    return records


def export(ctx: Context) -> dict[str, Any]:
    records = build_records(ctx)
    size, fmt = ctx.cfg.export.shard_size, ctx.cfg.export.format
    for old in (p for p in ctx.out.glob("shard-*") if p.is_file()):
        old.unlink()  # a re-export with fewer shards must not leave stale ones behind
    for n, start in enumerate(range(0, max(len(records), 1), size)):
        write_records(records[start : start + size], ctx.out / f"shard-{n:05d}.{fmt}")
    shard_sha256 = {p.name: file_sha256(p) for p in dataset_files(ctx.out)}
    lists = write_list_passages(ctx.out, records, read_jsonl(ctx.stage_file("corpus")))
    test_file = ctx.stage_file("test")
    split.write_beir(ctx.out, read_jsonl(test_file) if test_file.is_file() else [], read_jsonl(ctx.stage_file("corpus")))
    write_manifest(ctx.out, **_manifest(ctx, records), shard_sha256=shard_sha256, lists=lists)
    return {"records": len(records), "shards": len(shard_sha256)}


def write_list_passages(out: Path, records: list[Record], corpus_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`out/LIST_PASSAGES`: each passage the records' candidate lists name, once, so a fit can score a
    whole list (model.distill) without the corpus; the manifest's `lists` says what it holds and costs."""
    named = {c["id"] for r in records for c in r.meta["candidates"]}
    rows = [{"id": p["id"], "title": p["title"], "text": p["text"]} for p in corpus_rows if p["id"] in named]
    path = out / LIST_PASSAGES
    write_jsonl(path, rows)
    sizes = [len(r.meta["candidates"]) for r in records]
    return {"file": LIST_PASSAGES, "passages": len(rows), "bytes": path.stat().st_size,
            "candidates_per_record": round(sum(sizes) / max(1, len(sizes)), 3), "sha256": file_sha256(path)}


def _manifest(ctx: Context, records: list[Record]) -> dict[str, Any]:
    per_stage = {s: json.loads(_stats_file(ctx, s).read_text()) for s in STAGES[:-1] if _stats_file(ctx, s).is_file()}
    gen, sel = per_stage.get("generate", {}), per_stage.get("select", {})
    prompt_versions, models = {}, {}
    for stats in per_stage.values():
        prompt_versions.update(stats.get("prompt_versions", {}))
        models.update(stats.get("models", {}))
    return {
        "source": "fret",
        "records": len(records),
        "counts": {s: {k: v for k, v in st.items() if isinstance(v, int) and not isinstance(v, bool)} for s, st in per_stage.items()},
        "task_distribution": dict(Counter(r.meta["task_type"] for r in records).most_common()),
        "positive_ne_seed_rate": sel.get("positive_ne_seed_rate"),
        "llm_top1_ne_seed_rate": sel.get("llm_top1_ne_seed_rate"),
        "parse_failure_rate": gen.get("parse_failure_rate"),
        "parse_failures": gen.get("parse_failures"),
        "truncated_passages": gen.get("truncated_passages"),
        "empty_passages_skipped": gen.get("empty_passages_skipped", 0),
        "empty_passages_first": gen.get("empty_passages_first", []),
        **({"documents": gen["documents"]} if "documents" in gen else {}),
        "round_trip": per_stage.get("retrieve", {}).get("round_trip"),
        "test_split": sel.get("test_split"),
        "shard": gen.get("shard"),
        "models": models,
        "prompt_versions": prompt_versions,
        "wall_time_s": {s: st["wall_s"] for s, st in per_stage.items()},
        "llm_calls": {s: per_stage[s].get("llm_calls", 0) for s in LLM_STAGES if s in per_stage},
        "cache_hits": {s: per_stage[s].get("cache_hits", 0) for s in LLM_STAGES if s in per_stage},
        "llm_calls_per_s": {s: per_stage[s].get("llm_calls_per_s", 0.0) for s in LLM_STAGES if s in per_stage},
        "llm_retries": {s: per_stage[s].get("llm_retries", 0) for s in LLM_STAGES if s in per_stage},
        "llm_failures": {s: per_stage[s].get("llm_failures", 0) for s in LLM_STAGES if s in per_stage},
        "stages": per_stage,
        "config": ctx.cfg.to_dict(),
        "corpus_sha256": corpus_fingerprint(ctx.cfg),
    }
