"""How often a build's positives are right, by how far the judge's top 1 leads, against human labels:

    python scripts/positive_precision.py outputs/querylog/scifact10/fret ../shared/data/scifact train [0.05 0.1 0.2]

For a query-log build (`corpus.queries`) whose queries have qrels in a BEIR folder's split. For each
`select.positive_margin` m (nats; 0 keeps every record), the training records it keeps, the share of them
whose positive is relevant, and the share whose list holds any relevant passage: what the confidence
filter buys in label precision and costs in records, before a fit is spent on it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_builders.fret.stages import ql_lead
from gecko_lightning.data.schema import read_records
from gecko_lightning.evaluation.loaders import read_qrels

MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    build, beir, split = Path(argv[0]), Path(argv[1]), argv[2]
    margins = [float(m) for m in argv[3:]] or list(MARGINS)
    qrels = read_qrels(beir / "qrels" / f"{split}.tsv")
    rows = []
    for r in read_records(build)[0]:
        qid = r.meta.get("query_id")
        if qid is None or str(qid) not in qrels:
            continue  # a generated query, or a given one without qrels: nothing to check it against
        rel = {d for d, g in qrels[str(qid)].items() if g > 0}
        rows.append((ql_lead({"candidates": r.meta["candidates"]}, r.meta["positive_id"]),
                     r.meta["positive_id"] in rel, any(c["id"] in rel for c in r.meta["candidates"])))
    if not rows:
        print(f"{build}: no record of a given query (corpus.queries) to check", file=sys.stderr)
        return 2
    print(f"{build}: {len(rows)} records of given queries, qrels from {beir} ({split})")
    print("| positive_margin (nats) | records kept | positive relevant | list holds a relevant passage |")
    print("| ---: | ---: | ---: | ---: |")
    for m in margins:
        kept = [x for x in rows if x[0] >= m]
        n = max(1, len(kept))
        print(f"| {m:g} | {len(kept)} | {100 * sum(x[1] for x in kept) / n:.1f} % | {100 * sum(x[2] for x in kept) / n:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
