"""`gecko build fret`: a typed command line over `BuildConfig` (jsonargparse, like `gecko fit`).

    gecko build fret --config configs/data/<x>.yaml [--config more.yaml] [--section.key=value ...]
                     [--stage S[,S...]] [--output_dir DIR] [--force] [--push-to-hub REPO [--private]]
    gecko build fret --from DIR --output_dir OUT [--select.positive=seed --select.negative=none ...]
    gecko build fret --merge DIR [DIR ...] --output_dir OUT
    gecko build fret --help | --print_config

Stages: generate, retrieve, rerank, select, export (all, in that order, by default). `--help` lists
every key with its docstring; values parse as YAML (`--filter.round_trip_top_k=null`); later
`--config` files override earlier ones; `--print_config` prints a YAML that `--config` reads back.
A finished build of the same config and corpus is reused as it is; `--force` runs the stages again.
`--from` re-selects a finished build with 0 LLM calls (data_builders/fret/reselect.py); `--merge` joins
finished shard builds (data_builders/fret/merge.py); `--push-to-hub` uploads the result with a dataset
card (data_builders/hub_card.py). Bad input is one line, `gecko build: error: ...`, and exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace

from gecko_lightning.errors import UserError, debug
from gecko_lightning.user_files import check_yaml

from .config import BuildParser, build_parser, config_from  # noqa: F401  (other commands extend this parser)

USAGE = "usage: gecko build fret [--config FILE ...] [--section.key=value ...] [--stage S[,S...]] [--output_dir DIR] (gecko build fret --help)"
SUMMARY_KEYS = ("wall_s", "llm_calls", "cache_hits", "records", "queries", "shards", "skipped", "from")


def fret_parser() -> BuildParser:
    """`build_parser` plus the flags that say what to run rather than what to build."""
    parser = build_parser("gecko build fret", "Build FRet training data with an LLM (docs/fret.md).")
    parser.add_argument("--stage", type=Optional[str], default=None,
                        help="One stage or a comma-separated list, run in pipeline order (default: all; "
                             "docs/fret.md lists them, a wrong name is answered with the list).")
    parser.add_argument("--force", action="store_true",
                        help="Run the stages even when output_dir holds a finished build of this config "
                             "(LLM calls still come from the cache).")
    parser.add_argument("--from", type=Optional[str], default=None, metavar="DIR",
                        help="Re-select the finished build in DIR with 0 LLM calls: its config is the base, "
                             "only select.*, export.* and test_split.* may change; writes to --output_dir.")
    parser.add_argument("--merge", type=str, nargs="+", default=None, metavar="DIR",
                        help="Merge these finished shard builds into --output_dir instead of building.")
    parser.add_argument("--push-to-hub", type=Optional[str], default=None, metavar="REPO",
                        help="Afterwards upload the build (dataset card, manifest, shards, stage files) "
                             "to the Hub dataset repository OWNER/NAME.")
    parser.add_argument("--private", action="store_true", help="With --push-to-hub: create the repository private.")
    return parser


def _flags(argv: list[str], name: str) -> list[str]:
    """Every value of `--name X` or `--name=X` on the command line, in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


def parse(argv: list[str]) -> Namespace:
    """Parse `gecko build fret` flags; with `--from DIR`, DIR's build config is the base they override."""
    parser = fret_parser()
    for path in _flags(argv, "--config"):  # alone first, so an error names its file
        if Path(path).is_file():
            check_yaml(path)  # file, line and column, not the YAML parser's trace
            try:
                config_from(parser.parse_path(path))
            except UserError as e:
                raise UserError(f"--config {path}: {e}") from e
    source = (_flags(argv, "--from") or [None])[-1]
    base = None
    if source is not None:
        from .fret.reselect import source_config

        built = source_config(Path(source))
        try:
            base = parser.parse_object(built)
        except UserError as e:
            raise UserError(f"--from {source}: the config in its manifest.json does not parse ({e}); rebuild it") from e
    args = parser.parse_args(argv, namespace=base)
    if args["from"] != source:
        raise UserError("--from must be given on the command line, not in a --config file")
    _check_combinations(args)
    return args


def _check_combinations(args: Namespace) -> None:
    if args.merge and (args["from"] or args.stage):
        raise UserError("--merge joins finished builds; it takes no --from or --stage")
    if args["from"] and args.stage:
        raise UserError("--from runs the select and export stages itself; drop --stage")
    if args.private and not args.push_to_hub:
        raise UserError("--private applies to --push-to-hub REPO; add it or drop --private")
    if args.push_to_hub:
        from gecko_lightning.hub import _check_repo

        _check_repo(args.push_to_hub)  # fail before the build, not after it


def _merge(dirs: list[str], out: str) -> dict[str, Any]:
    try:
        from .fret.merge import merge_builds
    except ImportError as e:
        raise UserError(f"--merge needs data_builders.fret.merge.merge_builds, which this install lacks ({e})") from e
    manifest = merge_builds([Path(d) for d in dirs], Path(out))
    return {"merge": {"from": list(dirs), "records": manifest.get("records"), "shards": len(manifest.get("shards", []))}}


def execute(args: Namespace) -> dict[str, Any]:
    """Run what the parsed flags ask for; returns {stage: stats} (or the merge summary)."""
    cfg = config_from(args)
    if args.merge:
        stats = _merge(args.merge, cfg.output_dir)
    elif args["from"]:
        from .fret.reselect import reselect

        stats = reselect(args["from"], cfg)
    else:
        from .fret.runner import run

        stats = run(cfg, args.stage.split(",") if args.stage else None, force=args.force)
    if cfg.tracking.wandb:
        from .tracking import log_finished

        log_finished(cfg, Path(cfg.output_dir) if args.merge or args["from"] else None)
    if args.push_to_hub:
        from .hub_card import push_build

        url = push_build(cfg.output_dir, args.push_to_hub, private=args.private)
        print(f"uploaded {cfg.output_dir} to {url}", file=sys.stderr)
    return stats


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] != "fret":
        print(f"gecko build: error: unknown builder {argv[0]!r}; the one builder is fret (gecko build fret --help)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse(argv[1:])
        stats = execute(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # UserError is a ValueError
        if debug():
            raise
        print("gecko build: error: " + str(e).replace("\n", " "), file=sys.stderr)
        return 2
    if all(st.get("skipped") for st in stats.values()):
        print(f"{args.output_dir} already holds a finished build of this config and corpus: nothing to do "
              f"(--force runs the stages again, answering LLM calls from the cache)", file=sys.stderr)
    summary = {s: {k: v for k, v in st.items() if k in SUMMARY_KEYS} for s, st in stats.items()}
    source = {"from": args["from"]} if args["from"] else {}
    print(json.dumps({"output_dir": args.output_dir, **source, "stages": summary}, indent=2))
    return 0
