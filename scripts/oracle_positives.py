"""A copy of a query-log build whose labels come from human qrels: the ceiling of the hard-label recipe.

The query-log measurements (docs/results.md) train on a set's *train* queries labelled by the LLM. This
writes the same records with each positive replaced by a passage the qrels mark relevant, so one fit on
it shows what the recipe gains when every label is right, on the same queries and passages:

    python scripts/oracle_positives.py outputs/querylog/scifact/fret ../shared/data/scifact train \
        outputs/querylog/scifact/oracle

Per record (its `meta.query_id` names the query): the positive is the relevant candidate the embedder
ranked highest, or, when no candidate is relevant, the relevant passage of the qrels with the smallest id,
as the build's corpus stage holds it; the negative stays unless it is relevant, then it becomes the
lowest-ranked candidate that is not (none when every candidate is). A record whose query has no qrels is
dropped. Candidate lists and everything else in the build are copied unchanged; the manifest gains
`oracle` with the counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from data_builders.corpus.files import read_jsonl
from gecko_lightning.evaluation.loaders import read_qrels


def relabel(record: dict, relevant: set[str], corpus: dict[str, dict]) -> tuple[dict, str]:
    """(the record with a relevant positive, how it was found: 'kept', 'list' or 'corpus')."""
    meta = record["meta"]
    ranked = sorted(meta.get("candidates") or [], key=lambda c: c.get("retrieval_rank", 0))
    passage = {c["id"]: corpus[c["id"]] for c in ranked if c["id"] in corpus}
    if meta["positive_id"] in relevant:
        how, pid = "kept", meta["positive_id"]
    else:
        in_list = [c["id"] for c in ranked if c["id"] in relevant and c["id"] in passage]
        how, pid = ("list", in_list[0]) if in_list else ("corpus", min(relevant & corpus.keys()))
    out = {**record, "positive": _passage(corpus[pid]), "meta": {**meta, "positive_id": pid}}
    if meta.get("negative_id") in relevant:
        others = [c["id"] for c in ranked if c["id"] not in relevant and c["id"] in passage]
        if others:
            out["negative"], out["meta"]["negative_id"] = _passage(corpus[others[-1]]), others[-1]
        else:
            out.pop("negative", None)
            out["meta"]["negative_id"] = None
    return out, how


def _passage(row: dict) -> dict:
    return {"text": row["text"], "title": row.get("title") or None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="a finished query-log build (gecko build fret --corpus.queries ...)")
    parser.add_argument("beir", type=Path, help="the BEIR folder whose qrels label the log's queries")
    parser.add_argument("split", help="the qrels split the log was taken from (train)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    graded = read_qrels(args.beir / "qrels" / f"{args.split}.tsv")
    qrels = {q: {d for d, grade in docs.items() if grade > 0} for q, docs in graded.items()}
    corpus = {row["id"]: row for row in read_jsonl(args.build / "stages" / "corpus.jsonl")}
    manifest = json.loads((args.build / "manifest.json").read_text(encoding="utf-8"))
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.build, args.out, ignore=shutil.ignore_patterns("shard-*.jsonl", "llm_cache.sqlite*"))
    counts = {"kept": 0, "list": 0, "corpus": 0, "dropped": 0}
    for shard in manifest["shards"]:
        rows = []
        with (args.build / shard).open(encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                relevant = qrels.get(str(record["meta"].get("query_id")), set()) & corpus.keys()
                if not relevant:
                    counts["dropped"] += 1
                    continue
                record, how = relabel(record, relevant, corpus)
                counts[how] += 1
                rows.append(json.dumps(record, ensure_ascii=False) + "\n")
        (args.out / shard).write_text("".join(rows), encoding="utf-8")
    manifest["oracle"] = {"qrels": str(args.beir / "qrels" / f"{args.split}.tsv"), **counts}
    manifest["records"] = sum(counts[k] for k in ("kept", "list", "corpus"))
    manifest.pop("shard_sha256", None)  # the shards changed
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    print(f"{manifest['records']} records -> {args.out}: positive kept (relevant already) {counts['kept']}, "
          f"moved to a relevant candidate {counts['list']}, taken from the corpus {counts['corpus']}; "
          f"{counts['dropped']} dropped (no qrels)")


if __name__ == "__main__":
    main()
