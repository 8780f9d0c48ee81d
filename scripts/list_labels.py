"""How right the judge's candidate lists are, against human labels, for a query-log build (`corpus.queries`)
whose queries have qrels in a BEIR folder's split:

    python scripts/list_labels.py outputs/querylog/scifact20/fret ../shared/data/scifact train [5 10 20]

Over every given query of the build (training and held-out: the re-rank stage's lists), the ones with
qrels: how many lists hold a relevant passage; of those, how often the top 1 is relevant when the list
is ordered by the embedder (retrieval rank: `select.positive: seed` for a given query), by QL
(`ql_top1`), by the reciprocal-rank fusion of QL and RC (`rank`: `llm_top1`) and by QL and the embedder
together (the sum of their two ranks, ties to QL; no `select.positive` rule reads it);
and the list's nDCG in the embedder's and in QL's order (gains from the qrels' grades, the ideal from
the relevant passages inside the list). What a wider `retrieve.top_n` gives the labels, before a fit.
Each number K after the split cuts every list to the embedder's top K first and ranks the cut list again
(QL, RC and their fusion, as the re-rank stage does): a top-20 build answers for 5, 10 and 20 on the
same queries and the same LLM scores.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_builders.corpus import read_jsonl
from data_builders.fret.rerank import _fuse
from gecko_lightning.evaluation.loaders import read_qrels
from gecko_lightning.evaluation.metrics import ndcg_at_k

ORDERS = {  # name -> sort key over a candidate (lower first)
    "embedder": lambda c: c["retrieval_rank"],
    "ql": lambda c: c["r_ql"],
    "ql+rc": lambda c: c["rank"],
    "ql+embedder": lambda c: (c["r_ql"] + c["retrieval_rank"], c["r_ql"]),
}


def ndcg(grades: list[int]) -> float:
    """nDCG of a list of grades in its given order, the ideal being the same grades sorted: `gecko eval`'s
    nDCG (linear gains) over the whole list, with the list's own grades as the relevance."""
    return ndcg_at_k(range(len(grades)), dict(enumerate(grades)), len(grades))


def cut(cands: list[dict], top: int) -> list[dict]:
    """The list the re-rank stage would have made from the embedder's top `top`: same scores, ranks again."""
    kept = sorted((c for c in cands if c["retrieval_rank"] <= top), key=lambda c: c["retrieval_rank"])
    return _fuse([c["id"] for c in kept], [c["ql"] for c in kept], [c["rc"] for c in kept])


def labelled_rows(build: Path, qrels: dict[str, dict[str, int]]) -> list[dict]:
    """The re-rank stage's rows whose query has qrels; SystemExit with one line when none has."""
    rows = [r for r in read_jsonl(build / "stages" / "rerank.jsonl") if str(r.get("query_id")) in qrels]
    if not rows:
        raise SystemExit(f"{build}: no query of its re-rank stage has qrels here (a generated build, or another split?)")
    return rows


def list_labels(build: Path, qrels: dict[str, dict[str, int]], top: int | None = None,
                rows: list[dict] | None = None) -> dict[str, float]:
    rows = labelled_rows(build, qrels) if rows is None else rows
    out: dict[str, float] = {"queries_with_qrels": len(rows)}
    held = []
    for r in rows:
        grade, cands = qrels[str(r["query_id"])], r["candidates"] if top is None else cut(r["candidates"], top)
        if any(grade.get(c["id"], 0) > 0 for c in cands):
            held.append((cands, grade))
    out["lists_holding_a_relevant"] = len(held)
    for name, key in ORDERS.items():
        tops = [min(cands, key=key) for cands, _ in held]
        out[f"top1_relevant_{name}"] = sum(g.get(t["id"], 0) > 0 for t, (_, g) in zip(tops, held))
    for name in ("embedder", "ql"):
        out[f"list_ndcg_{name}"] = 100 * sum(ndcg([g.get(c["id"], 0) for c in sorted(cands, key=ORDERS[name])])
                                             for cands, g in held) / max(len(held), 1)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not all(a.isdigit() and int(a) > 0 for a in argv[3:]):
        print("usage: " + __doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    build, beir, split = Path(argv[0]), Path(argv[1]), argv[2]
    for path in (build / "stages" / "rerank.jsonl", beir / "qrels" / f"{split}.tsv"):
        if not path.is_file():
            print(f"{path} does not exist: give a build folder, a BEIR folder and one of its qrels splits", file=sys.stderr)
            return 2
    qrels = read_qrels(beir / "qrels" / f"{split}.tsv")
    try:
        rows = labelled_rows(build, qrels)  # read once for every K
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    for top in [int(a) for a in argv[3:]] or [None]:
        got = list_labels(build, qrels, top, rows)
        print(build, f"top {top}" if top else "as built", {k: round(v, 2) for k, v in got.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
