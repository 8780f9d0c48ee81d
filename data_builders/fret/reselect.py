"""`gecko build fret --from DIR --output_dir OUT`: re-select a finished build with 0 LLM calls.

The positive/negative choice (`select.*`), the shard format (`export.*`) and the held-out test
seeds (`test_split.*`) are the only keys that change no LLM call: `select` reads `stages/rerank.jsonl` and `export` reads `stages/corpus.jsonl`.
So those two files and the earlier stages' statistics are copied from DIR into OUT, `select` and
`export` run there, and OUT's manifest reports the source build's stage statistics plus `from: DIR`.
A difference in any other key would need new LLM calls or a new retrieval: that is a build
(`--config ... --cache.path=DIR/llm_cache.sqlite`), not a re-selection, so it is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import MANIFEST, read_manifest, write_manifest
from gecko_lightning.errors import MissingPathError, UserError

from . import runner
from ..config import BuildConfig, load_config

FREE = ("select", "export", "test_split")  # the sections a re-selection may change
NEEDS = ("corpus", "rerank")  # the stage files select and export read


def source_config(source: Path) -> dict[str, Any]:
    """The build config stored in DIR's manifest, once DIR is known to be a finished build."""
    if not source.is_dir():
        raise MissingPathError(f"--from {source}: no such folder; name the output_dir of a finished build")
    manifest = read_manifest(source)
    if not manifest.get("config") or not manifest.get("shards"):
        raise UserError(f"--from {source}: no finished build there ({MANIFEST} is missing or incomplete); "
                        f"finish it first: gecko build fret --config ... --output_dir {source}")
    for name in NEEDS:
        if not (source / "stages" / f"{name}.jsonl").is_file():
            raise UserError(f"--from {source}: stages/{name}.jsonl is missing, so its scores are gone; "
                            f"rebuild it (the LLM cache answers the calls again)")
    return manifest["config"]


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix == "":  # sections; dict-valued keys (columns) stay whole
            out.update(_flat(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def changed_keys(source: BuildConfig, cfg: BuildConfig) -> list[str]:
    """Dotted keys outside `select.*`, `export.*`, `test_split.*` and `output_dir` whose values differ."""
    a, b = _flat(source.to_dict()), _flat(cfg.to_dict())
    return [k for k in a if a[k] != b[k] and k != "output_dir" and k.split(".")[0] not in FREE]


def _check(source: Path, cfg: BuildConfig) -> None:
    out = Path(cfg.output_dir)
    if out.resolve() == source.resolve():
        raise UserError(f"--from {source} and --output_dir {out} are the same folder; re-select into a new "
                        f"--output_dir (or re-run --stage select,export in place)")
    try:
        built = load_config(None, source_config(source))
    except UserError as e:
        raise UserError(f"{source / MANIFEST}: its config no longer parses ({e}); rebuild it") from e
    changed = changed_keys(built, cfg)
    if changed:
        old, new = _flat(built.to_dict()), _flat(cfg.to_dict())
        diffs = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise UserError(f"--from {source}: only select.*, export.* and test_split.* can change without new LLM calls, but "
                        f"{diffs}; build that config with --config instead (--cache.path={source}/llm_cache.sqlite reuses calls)")
    if read_manifest(source).get("corpus_sha256") != runner.corpus_fingerprint(cfg):
        raise UserError(f"--from {source}: corpus file {cfg.corpus.path} changed since that build; rebuild it")
    if (out / "stages" / "generate.jsonl").is_file():  # never overwrite the stage files of an LLM build
        raise UserError(f"--output_dir {out} holds a build of its own (stages/generate.jsonl); choose an empty folder")


def reselect(source: str | Path, cfg: BuildConfig) -> dict[str, Any]:
    """Copy DIR's select inputs into `cfg.output_dir`, run `select` and `export` there; returns their stats."""
    source = Path(source)
    _check(source, cfg)
    stages_out = Path(cfg.output_dir) / "stages"
    stages_out.mkdir(parents=True, exist_ok=True)
    for name in NEEDS:
        shutil.copy2(source / "stages" / f"{name}.jsonl", stages_out / f"{name}.jsonl")
    for stage in runner.STAGES[: runner.STAGES.index("select")]:  # their stats go into OUT's manifest
        stats = source / "stages" / f"{stage}.stats.json"
        if stats.is_file():
            shutil.copy2(stats, stages_out / stats.name)
    result = runner.run(cfg, ["select", "export"])
    manifest = read_manifest(cfg.output_dir)
    manifest.pop("schema_version", None)
    write_manifest(cfg.output_dir, **{**manifest, "from": str(source)})
    return result
