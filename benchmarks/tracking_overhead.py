"""Wall-clock time that W&B tracking adds to a tiny build and a tiny fit, side by side (docs/tracking.md).

    python benchmarks/tracking_overhead.py [--repeats 3] [--out /tmp/tracking_overhead]

Each repeat runs, in turn and as fresh processes (what a user waits for, imports included):
    build       gecko build fret --config configs/data/fret_tiny.yaml (a fresh folder: every LLM call made)
    build+wandb the same with --tracking.wandb=true (run, records table, dataset artifact)
    fit/nolog   gecko fit --config configs/tiny.yaml on that build, --trainer.logger=false
    fit         the same with the default W&B logger (offline), as before tracking
    fit+model   the same with --trainer.logger.init_args.export_model=DIR (export + model artifact)
    export      gecko export of the fit's checkpoint, the step `fit+model` replaces
and prints the median of each and the ratios. Runs offline (WANDB_MODE=offline).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GECKO = [sys.executable, "-m", "gecko_lightning"]
FIT = ["fit", "--config", "configs/tiny.yaml", "--trainer.accelerator=cpu", "--trainer.max_steps=4",
       "--data.init_args.batch_size=4"]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_repeat(out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    build = [*GECKO, "build", "fret", "--config", "configs/data/fret_tiny.yaml"]
    t = {"build": timed([*build, "--output_dir", str(out / "plain")]),
         "build+wandb": timed([*build, "--output_dir", str(out / "fret"), "--tracking.wandb=true"])}
    fit = [*GECKO, *FIT, f"--data.init_args.path={out / 'fret'}"]
    t["fit/nolog"] = timed([*fit, f"--trainer.default_root_dir={out / 'nolog'}", "--trainer.logger=false"])
    t["fit"] = timed([*fit, f"--trainer.default_root_dir={out / 'fit'}"])
    t["fit+model"] = timed([*fit, f"--trainer.default_root_dir={out / 'fitm'}",
                            f"--trainer.logger.init_args.export_model={out / 'model'}"])
    (ckpt,) = (out / "fit").rglob("*.ckpt")
    t["export"] = timed([*GECKO, "export", str(ckpt), str(out / "exported")])
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("/tmp/tracking_overhead"))
    args = p.parse_args()
    os.environ.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    runs = [one_repeat(args.out) for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    for k, v in med.items():
        print(f"{k:12s} {v:7.2f} s   ({', '.join(f'{r[k]:.2f}' for r in runs)})")
    print(f"build+wandb / build          {med['build+wandb'] / med['build']:.3f}")
    print(f"fit / fit/nolog              {med['fit'] / med['fit/nolog']:.3f}")
    print(f"fit+model / fit              {med['fit+model'] / med['fit']:.3f}")
    print(f"fit+model / (fit + export)   {med['fit+model'] / (med['fit'] + med['export']):.3f}")


if __name__ == "__main__":
    main()
