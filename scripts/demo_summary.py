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

METRICS = (("scifact", "ndcg_at_10"), ("sts-test.csv", "spearman"))


def main(out: Path) -> None:
    base = json.loads((out / "base.json").read_text())
    runs: dict[str, list[dict]] = defaultdict(list)
    for scores in sorted((out / "seeds").glob("*-seed*/scores.json")):
        variant = re.sub(r"-seed\d+$", "", scores.parent.name)
        runs[variant].append(json.loads(scores.read_text()))
    if not runs:
        raise SystemExit(f"no seeds/*/scores.json under {out}; run scripts/demo_seeds.sh first")
    head = "| model | seeds | " + " | ".join(f"{d} {m}" for d, m in METRICS) + " |"
    lines = [head, "|" + " --- |" * (2 + len(METRICS))]
    lines.append("| base | - | " + " | ".join(f"{base[d][m]:.2f}" for d, m in METRICS) + " |")
    for variant, scored in runs.items():
        cells = []
        for d, m in METRICS:
            xs = [s[d][m] for s in scored]
            sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
            cells.append(f"{statistics.mean(xs):.2f} ± {sd:.2f} ({statistics.mean(xs) - base[d][m]:+.2f})")
        lines.append(f"| fine-tuned, positive={variant} | {len(scored)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "seeds" / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo"))
