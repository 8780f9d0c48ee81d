"""Before/after table and plot for the demo: `python scripts/demo_report.py --base B.json --tuned T.json [T2.json] --out DIR`.

Each JSON maps dataset -> {metric: score} (0-100), as written by `gecko eval --output`; nested
per-dimension dicts are flattened to `metric@dim`. Writes DIR/results.md and DIR/results.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADLINE = ("ndcg_at_10", "spearman")


def flatten(scores: dict) -> dict[str, float]:
    """{metric: x} stays; {dim: {metric: x}} becomes {"metric@dim": x}."""
    out = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update({f"{metric}@{key}": float(x) for metric, x in value.items() if isinstance(x, (int, float))})
        elif isinstance(value, (int, float)):
            out[str(key)] = float(value)
    return out


def merged(paths: list[str]) -> dict:
    """One {dataset: metrics} dict from several result files (e.g. retrieval and STS run apart)."""
    out: dict = {}
    for path in paths:
        out.update(json.loads(Path(path).read_text()))
    return out


def rows(base: dict, tuned: dict) -> list[tuple[str, str, float, float]]:
    table = []
    for dataset in base:
        b, t = flatten(base[dataset]), flatten(tuned.get(dataset, {}))
        for metric in sorted(set(b) & set(t), key=lambda m: (not m.startswith(HEADLINE), m)):
            table.append((dataset, metric, b[metric], t[metric]))
    if not table:
        raise SystemExit(f"no dataset/metric is present in both result files: {sorted(base)} vs {sorted(tuned)}")
    return table


def markdown(table) -> str:
    lines = ["| dataset | metric | base | fine-tuned | Δ |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {d} | {m} | {b:.2f} | {t:.2f} | {t - b:+.2f} |" for d, m, b, t in table]
    return "\n".join(lines) + "\n"


def plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = [r for r in table if r[1].startswith(HEADLINE)] or table
    labels = [f"{d}\n{m}" for d, m, _, _ in head]
    x = range(len(head))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(head), 3.6))
    ax.bar([i - 0.2 for i in x], [r[2] for r in head], width=0.4, label="base")
    ax.bar([i + 0.2 for i in x], [r[3] for r in head], width=0.4, label="fine-tuned on FRet")
    for i, (_, _, b, t) in enumerate(head):
        ax.text(i + 0.2, t, f"{t - b:+.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("score (0-100)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", nargs="+", required=True, help="result JSONs of the base model (merged)")
    p.add_argument("--tuned", nargs="+", required=True, help="result JSONs of the fine-tuned model (merged)")
    p.add_argument("--out", default="outputs/demo")
    args = p.parse_args()
    table = rows(merged(args.base), merged(args.tuned))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(table)
    (out / "results.md").write_text(md)
    plot(table, out / "results.png")
    print(md)
    print(f"wrote {out / 'results.md'} and {out / 'results.png'}")


if __name__ == "__main__":
    main()
