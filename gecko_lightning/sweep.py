"""`gecko sweep sweep.yaml --offline`: run a W&B sweep's parameter space without a W&B server.

    gecko sweep sweep.yaml --offline --count 8 [--method grid|random] [--only KEY,KEY]
                [--base-config configs/tiny.yaml] [--out outputs/sweeps/NAME] [--slurm] [-- EXTRA FIT ARGS]

The same `sweep.yaml` feeds `wandb sweep` / `wandb agent` (online, Bayesian with hyperband) and
this command (air-gapped clusters): it expands the parameters into a grid or random draws, turns
each draw into the `--key=value` arguments a W&B agent would pass (`str(value)`, as W&B does),
and runs `gecko fit` once per draw, in sequence, each run logging to offline W&B under
`<out>/run-NNN/`. `--slurm` writes a job-array script instead, whose task i runs draw i
(`--index i`); the draws are seeded, so every array task sees the same list.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

RANDOM_DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
SBATCH = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --array=0-{last}
#SBATCH --output={out}/slurm-%A_%a.out
# One array task per sweep draw; edit the resources for your cluster.
#SBATCH --gpus-per-task=1
set -euo pipefail
cd {cwd}
export WANDB_MODE=offline
{command}
"""


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a W&B sweep file and check the parts this runner uses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {str(path)!r} does not exist; the repository's is sweep.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{path}: `parameters` must be a non-empty mapping of key -> {{values: [...]}}")
    if "${args}" not in spec.get("command", ["${args}"]):
        raise ValueError(f"{path}: `command` must contain ${{args}} so the sweep values reach `gecko fit`")
    for key, p in params.items():
        if not isinstance(p, dict) or not ({"value", "values", "distribution"} & set(p)):
            raise ValueError(f"{path}: parameter {key!r} needs `value`, `values` or `distribution` (got {p!r})")
    return spec


def select(params: dict[str, Any], only: list[str] | None) -> dict[str, Any]:
    """The parameters to vary: all, or the `only` subset (the rest is left to the base config)."""
    if not only:
        return params
    unknown = [k for k in only if k not in params]
    if unknown:
        raise ValueError(f"--only {unknown} not in the sweep's parameters; choose from {sorted(params)}")
    return {k: params[k] for k in only}


def grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination, in the order the file lists keys and values (W&B's grid order)."""
    choices = {}
    for key, p in params.items():
        if "distribution" in p and "values" not in p:
            raise ValueError(f"parameter {key!r} has a {p['distribution']} distribution; a grid needs `values` (or use --method random)")
        choices[key] = p["values"] if "values" in p else [p["value"]]
    return [dict(zip(choices, combo)) for combo in itertools.product(*choices.values())]


def draw(p: dict[str, Any], rng: random.Random) -> Any:
    """One random value of a W&B parameter spec."""
    if "value" in p:
        return p["value"]
    if "values" in p:
        return rng.choice(p["values"])
    kind, lo, hi = p["distribution"], p.get("min"), p.get("max")
    if kind not in RANDOM_DISTRIBUTIONS:
        raise ValueError(f"distribution {kind!r} is not supported offline; use one of {RANDOM_DISTRIBUTIONS} or `values`")
    if kind == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    value = rng.uniform(lo, hi)
    return round(value / p.get("q", 1)) * p.get("q", 1) if kind == "q_uniform" else value


def expand(params: dict[str, Any], method: str, count: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """The runs of an offline sweep: the first `count` grid points, or `count` seeded random draws."""
    if method == "grid":
        runs = grid(params)
        return runs[:count] if count else runs
    if method != "random":
        raise ValueError(f"offline method {method!r} is not grid or random (bayes needs the W&B server)")
    if not count:
        raise ValueError("--method random needs --count N (how many draws)")
    rng = random.Random(seed)
    return [{k: draw(p, rng) for k, p in params.items()} for _ in range(count)]


def to_args(values: dict[str, Any]) -> list[str]:
    """A draw -> the `--key=value` list a W&B agent passes for `${args}` (`str(value)`, like W&B)."""
    return [f"--{key}={value}" for key, value in values.items()]


def fit_command(spec: dict[str, Any], values: dict[str, Any], base_config: str | None, extra: list[str]) -> list[str]:
    """The sweep's `command` with W&B's macros filled in; `gecko` runs as `python -m gecko_lightning`."""
    command = []
    for token in spec.get("command", ["${env}", "${interpreter}", "${program}", "${args}"]):
        if token == "${args}":
            command += to_args(values) + extra
        elif token == "${interpreter}":
            command.append(sys.executable)
        elif token == "${program}":
            command.append(spec["program"])
        elif token != "${env}":
            command.append(token)
    if command and command[0] == "gecko":
        command[:1] = [sys.executable, "-m", "gecko_lightning"]
    if base_config is not None:
        if "--config" not in command:
            raise ValueError("--base-config needs a `--config FILE` pair in the sweep's command to replace")
        command[command.index("--config") + 1] = base_config
    return command


def run_dir_args(out: Path, index: int) -> list[str]:
    """Each run writes checkpoints, config.yaml and its offline W&B folder under <out>/run-NNN."""
    return [f"--trainer.default_root_dir={out / f'run-{index:03d}'}"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gecko sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", help="a W&B sweep file, e.g. sweep.yaml")
    p.add_argument("--offline", action="store_true", help="run here without a W&B server (required)")
    p.add_argument("--count", type=int, help="number of runs (grid: the first N points)")
    p.add_argument("--method", choices=["grid", "random"], help="default: grid if the file says grid, else random")
    p.add_argument("--only", help="comma-separated parameters to vary; the others keep the base config's values")
    p.add_argument("--base-config", help="replace the `--config FILE` of the sweep's command")
    p.add_argument("--out", help="output folder (default outputs/sweeps/<sweep name>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--slurm", action="store_true", help="write a SLURM array script instead of running")
    p.add_argument("--index", type=int, help="run only draw INDEX (what each SLURM array task does)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    return p


def plan(args: argparse.Namespace, extra: list[str]) -> tuple[Path, list[list[str]], list[dict[str, Any]]]:
    """(out folder, one command per run, one draw per run) from the parsed arguments."""
    spec = load_sweep(args.sweep)
    params = select(spec["parameters"], args.only.split(",") if args.only else None)
    method = args.method or ("grid" if spec.get("method") == "grid" else "random")
    draws = expand(params, method, args.count, args.seed)
    out = Path(args.out or Path("outputs/sweeps") / spec.get("name", Path(args.sweep).stem))
    commands = [fit_command(spec, d, args.base_config, extra + run_dir_args(out, i)) for i, d in enumerate(draws)]
    return out, commands, draws


def write_slurm(out: Path, own: list[str], extra: list[str], n_runs: int) -> Path:
    """The array script: task i re-expands the same seeded sweep and runs draw i."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [a for a in own if a != "--slurm"] + ["--index", "__SLURM_TASK__"] + (["--", *extra] if extra else [])
    command = shlex.join([sys.executable, "-m", "gecko_lightning", "sweep", *argv])
    command = command.replace("__SLURM_TASK__", '"$SLURM_ARRAY_TASK_ID"', 1)
    script = out / "sweep.sbatch"
    script.write_text(SBATCH.format(name=out.name, last=n_runs - 1, out=out.resolve(), cwd=Path.cwd(), command=command))
    return script


def run_all(out: Path, commands: list[list[str]], draws: list[dict[str, Any]], indices: list[int]) -> int:
    """Run the chosen draws one after another; each run's outcome is appended to <out>/runs.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_RUN_GROUP": out.name}
    failed = 0
    for i in tqdm(indices, desc="sweep", unit="run"):
        print(f"[sweep] run {i}: {shlex.join(commands[i])}", flush=True)
        code = subprocess.run(commands[i], env=env).returncode
        failed += code != 0
        with open(out / "runs.jsonl", "a") as f:
            f.write(json.dumps({"index": i, "params": draws[i], "returncode": code, "command": commands[i]}) + "\n")
    print(f"[sweep] {len(indices) - failed}/{len(indices)} runs finished; report: gecko report {out}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = _parser().parse_args(own)
    if not args.offline:
        print("gecko sweep runs sweeps offline; pass --offline, or use W&B: `wandb sweep sweep.yaml` then "
              "`wandb agent <sweep id>`", file=sys.stderr)
        return 2
    try:
        out, commands, draws = plan(args, extra)
    except (ValueError, FileNotFoundError) as e:
        print(f"gecko sweep: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(shlex.join(c) for c in commands))
        return 0
    if args.slurm:
        script = write_slurm(out, own, extra, len(commands))
        print(f"[sweep] wrote {script} ({len(commands)} array tasks); submit with: sbatch {script}")
        return 0
    if args.index is not None and not 0 <= args.index < len(commands):
        print(f"gecko sweep: --index {args.index} is outside the {len(commands)} runs of this sweep", file=sys.stderr)
        return 2
    return run_all(out, commands, draws, [args.index] if args.index is not None else list(range(len(commands))))
