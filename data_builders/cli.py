"""`gecko build fret --config configs/data/<x>.yaml [--stage S[,S...]] [--output_dir DIR] [--force] [--a.b=value ...]`

Stages: generate, retrieve, rerank, select, export (all, in that order, by default). Any config key
can be overridden with a dotted flag, e.g. `--select.positive=seed --select.negative=none`;
values are parsed as YAML (`--corpus.num_seeds=50`, `--filter.round_trip_top_k=null`).
A finished build of the same config and corpus is reused as it is; `--force` runs the stages again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import yaml

from .pipeline import STAGES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gecko build",
        description="Build training data with an LLM (docs/fret.md).",
        epilog="Any config key can be overridden: --section.key=value, e.g. --select.positive=seed --corpus.num_seeds=50",
    )
    p.add_argument("builder", choices=["fret"], help="what to build")
    p.add_argument("--config", help="YAML build config (see configs/data/)")
    p.add_argument("--stage", help=f"one stage or a comma-separated list of {', '.join(STAGES)} (default: all)")
    p.add_argument("--output_dir", help="where stage outputs, shards and manifest.json go")
    p.add_argument("--force", action="store_true",
                   help="run all stages even when output_dir holds a finished build of this config (LLM calls still come from the cache)")
    return p


def parse_overrides(extra: list[str]) -> dict[str, Any]:
    """`--a.b=v` / `--a.b v` -> {"a.b": yaml(v)}; anything else is an error naming the flag."""
    out, i = {}, 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or "." not in flag.split("=")[0]:
            raise ValueError(f"unrecognised argument {flag!r}; overrides look like --section.key=value")
        if "=" in flag:
            key, value = flag[2:].split("=", 1)
        elif i + 1 < len(extra):
            key, value, i = flag[2:], extra[i + 1], i + 1
        else:
            raise ValueError(f"override {flag!r} has no value; write {flag}=VALUE")
        out[key] = yaml.safe_load(value)
        i += 1
    return out


def main(argv: list[str]) -> int:
    from .config import load_config
    from .pipeline import run

    args, extra = _parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = parse_overrides(extra)
        if args.output_dir:
            overrides["output_dir"] = args.output_dir
        cfg = load_config(args.config, overrides)
        stats = run(cfg, args.stage.split(",") if args.stage else None, force=args.force)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"gecko build: error: {e}", file=sys.stderr)
        return 2
    if all(st.get("skipped") for st in stats.values()):
        print(f"{cfg.output_dir} already holds a finished build of this config and corpus: nothing to do "
              f"(--force runs the stages again, answering LLM calls from the cache)", file=sys.stderr)
    keys = ("wall_s", "llm_calls", "cache_hits", "records", "queries", "skipped")
    summary = {s: {k: v for k, v in st.items() if k in keys} for s, st in stats.items()}
    print(json.dumps({"output_dir": cfg.output_dir, "stages": summary}, indent=2))
    return 0
