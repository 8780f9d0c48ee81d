"""What the LLM's scores over a build's candidate lists say beyond their top 1, per build folder:

    python scripts/list_stats.py outputs/querylog/scifact/fret [more builds]

- how often QL's top 1 is not the embedder's top 1 (the positive the hard label would move);
- how often the fused-lowest candidate (`select.negative: lowest`) sits within m nats of QL's top 1,
  a likely false negative that `select.teacher_margin: m` would refuse;
- the QL gap between the first two candidates and between the first and the last (how soft the teacher is);
- the weight the teacher's softmax over the list (`model.distill: kl`) puts on QL's top 1 at teacher
  temperatures 0.25 and 1.0, mean and median: near 1, `kl` teaches what the hard label does.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from data_builders.corpus import read_jsonl

MARGINS = (0.05, 0.1, 0.25)
TEMPERATURES = (0.25, 1.0)


def list_stats(build: Path) -> dict[str, float]:
    rows = read_jsonl(build / "stages" / "rerank.jsonl")
    out: dict[str, float] = {"queries": len(rows)}
    ql_top = [min(r["candidates"], key=lambda c: c["r_ql"]) for r in rows]
    out["ql_top1_not_embedder_top1"] = sum(t["retrieval_rank"] != 1 for t in ql_top) / len(rows)
    for m in MARGINS:
        near = 0
        for r, top in zip(rows, ql_top):
            others = [c for c in r["candidates"] if c["id"] != top["id"]]
            near += max(others, key=lambda c: c["rank"])["ql"] >= top["ql"] - m
        out[f"lowest_within_{m}_nats"] = near / len(rows)
    scores = [sorted((c["ql"] for c in r["candidates"]), reverse=True) for r in rows]
    out["median_ql_gap_1_2"] = statistics.median(s[0] - s[1] for s in scores)
    out["mean_ql_spread"] = statistics.mean(s[0] - s[-1] for s in scores)
    for t in TEMPERATURES:  # softmax(ql / t) at QL's top 1: 1 / sum(exp((ql_i - ql_top) / t))
        top = [1 / sum(math.exp((v - s[0]) / t) for v in s) for s in scores]
        out[f"teacher_top1_weight_t{t}_mean"] = statistics.mean(top)
        out[f"teacher_top1_weight_t{t}_median"] = statistics.median(top)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg, {k: round(v, 3) for k, v in list_stats(Path(arg)).items()})
