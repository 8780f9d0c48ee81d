"""Write the queries of one qrels split of a BEIR folder as an unlabelled query log (JSONL: _id, text).

The query-log measurements (docs/results.md, "The judge distilled") train on a set's *train* queries as a
log without labels and score on its *test* queries with their human qrels:

    python scripts/make_query_log.py ../shared/data/scifact train outputs/querylog/scifact_train.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def query_log(beir: Path, split: str) -> list[dict[str, str]]:
    """The queries named in `beir/qrels/<split>.tsv`, in queries.jsonl order, without their labels."""
    qrels = (beir / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    wanted = {line.split("\t")[0] for line in qrels[1:] if line.strip()}
    queries = [json.loads(line) for line in (beir / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"_id": q["_id"], "text": q["text"]} for q in queries if q["_id"] in wanted]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("beir", type=Path)
    parser.add_argument("split")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    rows = query_log(args.beir, args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} {args.split} queries -> {args.out}")


if __name__ == "__main__":
    main()
