"""Merge finished shard folders into one build, the unsharded build byte for byte.

`merge_builds` turns the finished shard folders into one build: the stage files concatenated in shard
order (the unsharded order), the LLM caches combined, then `select` and `export` run as in any build.
Which seeds a shard builds and where it writes: `sharding.py`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import MANIFEST, SchemaError, read_manifest, write_manifest
from gecko_lightning.errors import MissingPathError, UserError

from ..config import load_config
from ..corpus import file_sha256, read_jsonl, write_json, write_jsonl
from ..llm.cache import LLMCache
from .runner import run_stages
from .sharding import shard_name

MERGED_FILES = ("generate", "retrieve", "rerank")  # concatenated in shard order; select and export run again
CORPUS_KEYS = ("corpus_passages", "truncated_passages", "empty_passages_skipped", "empty_passages_first")
SAME_KEYS = CORPUS_KEYS + ("top_k",)  # equal in every shard, kept once
UNION_KEYS = ("prompt_versions", "models")  # a stage run on its own lists fewer; a name must agree
TIMES = ("wall_s", "llm_load_s")  # summed: the work the shards did, whatever ran in parallel
MARKER = ".merge-in-progress"
# Where a shard ran and how it reached its LLM server, not what it computed: these may differ between shards.
RUNTIME_KEYS = ("llm.base_url", "llm.api_key_env", "llm.concurrency", "llm.timeout_s", "llm.max_retries", "llm.backoff_s",
                "llm.max_wait_s", "llm.max_failures", "llm.fake_delay_s", "llm.device", "retrieve.device", "retrieve.index_dir", "cache.path")


@dataclasses.dataclass
class _Part:
    dir: Path
    manifest: dict[str, Any]

    @property
    def shard(self) -> dict[str, Any]:
        return self.manifest["shard"]


def _part(folder: Path) -> _Part:
    """A finished shard folder, or a UserError naming it and what to run."""
    if not folder.is_dir():
        raise MissingPathError(f"--merge {folder}: no such folder; name the shard-I-of-N folders of a sharded build")
    try:
        manifest = read_manifest(folder)
    except SchemaError as e:
        raise UserError(f"--merge {folder}: {e}") from None
    if not manifest:
        raise UserError(f"--merge {folder}: no {MANIFEST}, so this shard has not finished; run it again with the "
                        f"same config and --shard.index/--shard.count (its LLM cache resumes it), then merge")
    if not manifest.get("shard"):
        raise UserError(f"--merge {folder}: not a shard (its manifest has no shard section); merge takes the "
                        f"shard-I-of-N folders of one sharded build")
    failed = {s: n for s, n in (manifest.get("llm_failures") or {}).items() if n}
    if failed:
        raise UserError(f"--merge {folder}: LLM calls failed in this shard {failed}; run the shard again to retry "
                        f"them (finished calls come from its cache), then merge")
    for name, digest in (manifest.get("shard_sha256") or {}).items():
        if not (folder / name).is_file() or file_sha256(folder / name) != digest:
            raise UserError(f"--merge {folder}: record file {name} is missing or changed since the shard finished; "
                            f"run the shard again")
    needed = ["corpus.jsonl"] + [f"{name}{ext}" for name in MERGED_FILES for ext in (".jsonl", ".stats.json")]
    for name in needed:
        if not (folder / "stages" / name).is_file():
            raise UserError(f"--merge {folder}: stages/{name} is missing; run the shard again")
    return _Part(folder, manifest)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def _check_parts(parts: list[_Part]) -> None:
    """One build's shards, each once, all of them: same config and corpus, seed runs that tile the seeds."""
    first = parts[0]
    count = first.shard["count"]
    seen: dict[int, Path] = {}
    for p in parts:
        i = p.shard["index"]
        if p.shard["count"] != count:
            raise UserError(f"--merge: {p.dir} is shard {i} of {p.shard['count']} but {first.dir} is one of {count}; "
                            f"merge the shards of one build")
        if i in seen:
            raise UserError(f"--merge: shard {i} of {count} given twice ({seen[i]} and {p.dir})")
        seen[i] = p.dir
        want, got = _flat(_config(first.manifest)), _flat(_config(p.manifest))
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k) and k not in RUNTIME_KEYS)
        if diff:
            raise UserError(f"--merge: {p.dir} was built with another config than {first.dir}: "
                            + ", ".join(f"{k}: {want.get(k)!r} vs {got.get(k)!r}" for k in diff))
        if p.manifest.get("corpus_sha256") != first.manifest.get("corpus_sha256"):
            raise UserError(f"--merge: {p.dir} and {first.dir} read different corpus files (corpus_sha256 differs)")
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise UserError(f"--merge: shard(s) {missing} of {count} are missing (e.g. {shard_name(missing[0], count)}); "
                        f"run them with --shard.index I --shard.count {count} and merge all {count}")
    stop = 0
    for p in sorted(parts, key=lambda p: p.shard["index"]):
        lo, hi = p.shard["seed_range"]
        if lo != stop or p.shard["total_seeds"] != first.shard["total_seeds"]:
            raise UserError(f"--merge: {p.dir} covers seeds {lo}..{hi} but the shards before it end at {stop}; "
                            f"the shards do not split one seed list")
        stop = hi
    if stop != first.shard["total_seeds"]:
        raise UserError(f"--merge: the shards cover {stop} of {first.shard['total_seeds']} seeds")


def _config(manifest: dict[str, Any]) -> dict[str, Any]:
    """A shard's config as the merged build's: no output_dir, no shard."""
    return {k: v for k, v in manifest["config"].items() if k not in ("output_dir", "shard")}


def _merge_value(where: str, key: str, values: list[Any]) -> Any:
    if key in TIMES:
        return round(sum(values), 3)
    if key in UNION_KEYS:
        union: dict[str, Any] = {}
        for name, value in ((k, v) for d in values for k, v in d.items()):
            if union.setdefault(name, value) != value:
                raise UserError(f"--merge: the shards disagree on {where}.{name} ({union[name]!r} vs {value!r})")
        return union
    if key == "index":  # the one corpus index, wherever each shard saw it mounted
        _merge_value(f"{where}.passages_sha256", "passages_sha256", [v["passages_sha256"] for v in values])
        return values[0]
    if key not in SAME_KEYS and isinstance(values[0], dict):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _merge_value(f"{where}.{k}", k, [v.get(k, 0) for v in values]) for k in keys}
    if key not in SAME_KEYS and isinstance(values[0], int) and not isinstance(values[0], bool):
        return sum(values)
    if any(v != values[0] for v in values):
        raise UserError(f"--merge: the shards disagree on {where} ({values}); they are not shards of one build")
    return values[0]


def merge_stats(stage: str, stats: list[dict[str, Any]]) -> dict[str, Any]:
    """One stage's statistics over all shards: counts summed, rates recomputed from the sums, times per shard."""
    rates = ("parse_failure_rate", "llm_calls_per_s")
    out = {k: _merge_value(f"{stage}.{k}", k, [s.get(k) for s in stats]) for k in stats[0] if k not in (*rates, "shard")}
    if "parse_failure_rate" in stats[0]:
        out["parse_failure_rate"] = sum(out["parse_failures"].values()) / max(1, out["seeds"])  # as generate computes it
    if "llm_calls_per_s" in stats[0]:
        out["llm_calls_per_s"] = round(out["llm_calls"] / max(out["wall_s"], 1e-9), 3)
    out["shards_wall_s"] = [s["wall_s"] for s in stats]
    return out


def _check_output(out: Path, parts: list[_Part]) -> None:
    for p in parts:
        if out.resolve() == p.dir.resolve() or p.dir.resolve() in out.resolve().parents:
            raise UserError(f"--output_dir {out} is inside shard {p.dir}; merge into the sharded build's output_dir "
                            f"or an empty folder")
    previous = read_manifest(out) if (out / MANIFEST).is_file() else {}
    ours = bool(previous.get("merged_from")) or (out / MARKER).exists()
    records = [p for p in out.glob("shard-*") if p.is_file()]  # export replaces these
    if not ours and (previous or records or (out / "stages" / "generate.jsonl").is_file()):
        raise UserError(f"--output_dir {out} holds a build that is not a merge; merge into an empty folder or the "
                        f"sharded build's output_dir")


def _concat(parts: list[_Part], name: str, dest: Path) -> None:
    """Write the shards' stages/<name>.jsonl one after the other (the unsharded order)."""
    rows = []
    for p in parts:
        mine = read_jsonl(p.dir / "stages" / f"{name}.jsonl")
        lo, hi = p.shard["seed_range"]
        if name == "generate" and len(mine) != hi - lo:
            raise UserError(f"--merge {p.dir}: stages/generate.jsonl holds {len(mine)} rows for its {hi - lo} seeds; "
                            f"run the shard again")
        rows += mine
    twice = [seed for seed, n in Counter(r["seed_id"] for r in rows).items() if n > 1]
    if twice:
        raise UserError(f"--merge: seed {twice[0]!r} is in stages/{name}.jsonl of two shards; they overlap")
    write_jsonl(dest / f"{name}.jsonl", rows)


def _merge_caches(parts: list[_Part], dest: Path) -> None:
    """Every shard's LLM calls into one cache, so the merged build re-runs (--force) with 0 calls."""
    LLMCache(dest).close()  # creates the table
    sources = dict.fromkeys(Path(p.manifest["config"]["cache"]["path"] or p.dir / "llm_cache.sqlite") for p in parts)
    with sqlite3.connect(dest, timeout=60) as db:
        for source in (s for s in sources if s.is_file() and s.resolve() != dest.resolve()):
            db.execute("ATTACH DATABASE ? AS part", (str(source),))
            db.execute("INSERT OR IGNORE INTO calls (key, value) SELECT key, value FROM part.calls")
            db.commit()
            db.execute("DETACH DATABASE part")


def _training_queries(manifest: dict[str, Any]) -> int:
    """Records plus the training records the test split dropped as leaks (split.py)."""
    dropped = (manifest.get("test_split") or {}).get("training_records_dropped") or {}
    return manifest["records"] + sum(dropped.values())


def merge_builds(dirs: list[Path], output_dir: Path) -> dict[str, Any]:
    """Merge the finished shard folders of one build into `output_dir`; returns its manifest.

    The result is the unsharded build: the same stage files (concatenated in shard order), its config
    (without the shard), its records (select and export run on the merged files), one LLM cache.
    The manifest adds `merged_from` and `shards_wall_time_s` (each shard's stage times).
    """
    if not dirs:
        raise UserError("--merge needs the shard folders of a build, e.g. --merge OUT/shard-*-of-4")
    parts = sorted((_part(Path(d)) for d in dirs), key=lambda p: p.shard["index"])
    _check_parts(parts)
    out = Path(output_dir)
    _check_output(out, parts)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()  # a merge cut short may be merged again over itself
    (out / MANIFEST).unlink(missing_ok=True)
    config = _config(parts[0].manifest)
    cfg = load_config(None, {**config, "output_dir": str(out), "cache": {**config["cache"], "path": None}})
    stages_dir = out / "stages"
    stages_dir.mkdir(exist_ok=True)
    shutil.copyfile(parts[0].dir / "stages" / "corpus.jsonl", stages_dir / "corpus.jsonl")  # one truncated corpus
    for name in MERGED_FILES:
        _concat(parts, name, stages_dir)
        stats = [json.loads((p.dir / "stages" / f"{name}.stats.json").read_text()) for p in parts]
        write_json(stages_dir / f"{name}.stats.json", merge_stats(name, stats))
    _merge_caches(parts, out / "llm_cache.sqlite")
    run_stages(cfg, ["select", "export"])
    manifest = read_manifest(out)
    # A leak may cross shards (a positive relevant to another shard's test query), so records alone
    # need not add up; records plus those dropped as leaks are each shard's training queries, and do.
    merged, shards = _training_queries(manifest), sum(_training_queries(p.manifest) for p in parts)
    if merged != shards:
        (out / MANIFEST).unlink()  # not a finished build
        raise UserError(f"--merge: the merged build has {merged} training queries (records plus leaks dropped), the "
                        f"shards' manifests {shards}; a shard's stage files changed after it finished")
    manifest.pop("schema_version")
    manifest.update(merged_from=[{"dir": str(p.dir), **p.shard, "records": p.manifest["records"]} for p in parts],
                    shards_wall_time_s=[p.manifest["wall_time_s"] for p in parts])
    write_manifest(out, **manifest)
    (out / MARKER).unlink()
    return read_manifest(out)
