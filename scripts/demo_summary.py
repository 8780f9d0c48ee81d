"""Mean ± std over seeds for each FRet variant of scripts/demo_seeds.sh, against the base model.

    python scripts/demo_summary.py outputs/demo     # reads base.json and seeds/*/scores.json
Writes seeds/summary.md. The gain counts only if it exceeds the seed-to-seed spread.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

def scores_of(run: Path) -> dict:
    """nDCG@10 (the run's prompts) and, where it was scored, STS without prompts as the base saw it."""
    scores = json.loads((run / "scores.json").read_text())
    out = {"ndcg_at_10": scores["scifact"]["ndcg_at_10"]}
    sts = run / "scores_sts_none.json"
    if sts.is_file():
        out["spearman"] = json.loads(sts.read_text())["sts-test.csv"]["spearman"]
    return out


def cell(xs: list[float], base: float) -> str:
    if not xs:
        return "-"
    sd = f"{statistics.stdev(xs):.2f}" if len(xs) > 1 else "n/a"
    return f"{statistics.mean(xs):.2f} ± {sd} ({statistics.mean(xs) - base:+.2f})"


def main(out: Path) -> None:
    base = json.loads((out / "base.json").read_text())
    b = {"ndcg_at_10": base["scifact"]["ndcg_at_10"], "spearman": base["sts-test.csv"]["spearman"]}
    runs: dict[str, list[dict]] = defaultdict(list)
    for scores in sorted((out / "seeds").glob("*-seed*/scores.json")):
        runs[re.sub(r"-seed\d+$", "", scores.parent.name)].append(scores_of(scores.parent))
    if not runs:
        raise SystemExit(f"no seeds/*/scores.json under {out}; run scripts/demo_seeds.sh first")
    lines = ["| model | seeds | scifact nDCG@10 | STSBenchmark Spearman (no prompts) |", "| --- | --- | --- | --- |",
             f"| base (no prompts) | - | {b['ndcg_at_10']:.2f} | {b['spearman']:.2f} |"]
    for variant, scored in runs.items():
        ndcg = cell([s["ndcg_at_10"] for s in scored], b["ndcg_at_10"])
        sts = cell([s["spearman"] for s in scored if "spearman" in s], b["spearman"])
        lines.append(f"| {variant} | {len(scored)} | {ndcg} | {sts} |")
    table = "\n".join(lines) + "\n"
    (out / "seeds" / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo"))
