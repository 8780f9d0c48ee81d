"""Quora duplicate questions as a BEIR retrieval folder: `python scripts/make_quora_beir.py [--src DIR] [--out DIR]`.

A third domain with human labels for checking the build's test split (docs/results.md): short user
questions, nothing like SciFact's abstracts or WikiQA's answer sentences. From the BiMPM partition's
test.tsv (label, q1, q2, pair id; ../shared/data/quora_qp_bimpm_partition):
- queries: q1 of the first `--queries` duplicate pairs (label 1), in file order;
- relevant: that pair's q2 (grade 1);
- corpus: those q2s plus every question of the first non-duplicate pairs (label 0), distinct texts,
  until the corpus holds `--corpus-size` questions. Non-duplicate pairs were chosen by Quora for
  looking alike, so they make close distractors. A text equal to a query (case and spaces aside) is
  never a passage, so no query finds itself.
As in BEIR's Quora, a distractor may be an unlabelled duplicate of a query; nothing here can tell.

The files hold ~100 invalid UTF-8 bytes each upstream; they are read with errors='replace'. Writes
corpus.jsonl, queries.jsonl and qrels/test.tsv in file order: the same output on every run. The Quora
terms are non-commercial, so the folder is written under outputs/ and not shipped.
"""

import argparse
from pathlib import Path

from make_wikiqa_beir import write  # the same BEIR file layout; scripts/ is on the path when run as a script

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data" / "quora_qp_bimpm_partition"
OUT = ROOT / "outputs" / "beir" / "quora"


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def read_pairs(path: Path) -> list[tuple[str, str, str, str]]:
    """(label, q1, q2, pair id) rows; a row that is not 4 tab-separated fields with a 0/1 label is an error."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] not in ("0", "1"):
            raise SystemExit(f"{path}:{n}: expected label<TAB>q1<TAB>q2<TAB>id with a 0/1 label")
        rows.append((fields[0], fields[1].strip(), fields[2].strip(), fields[3].strip()))
    return rows


def convert(rows, n_queries: int, corpus_size: int):
    """(corpus, queries, qrels) as described in the module docstring."""
    dups = [r for r in rows if r[0] == "1" and r[1] and r[2] and norm(r[1]) != norm(r[2])]
    picked = dups[:n_queries]
    if len(picked) < n_queries:
        raise SystemExit(f"only {len(picked)} duplicate pairs, asked for {n_queries} queries")
    query_texts = {norm(r[1]) for r in picked}
    corpus: dict[str, dict] = {}  # normalised text -> passage
    queries, qrels = [], []
    for _, q1, q2, pid in picked:
        key = norm(q2)
        if key not in corpus:
            corpus[key] = {"_id": f"d{pid}", "title": "", "text": q2}
        queries.append({"_id": f"q{pid}", "text": q1})
        qrels.append((f"q{pid}", corpus[key]["_id"]))
    for label, q1, q2, pid in rows:
        if len(corpus) >= corpus_size:
            break
        if label != "0":
            continue
        for side, text in (("a", q1), ("b", q2)):
            key = norm(text)
            if text and key not in corpus and key not in query_texts and len(corpus) < corpus_size:
                corpus[key] = {"_id": f"n{pid}{side}", "title": "", "text": text}
    return list(corpus.values()), queries, qrels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=SRC, help="folder holding test.tsv (default ../shared/data/quora_qp_bimpm_partition)")
    p.add_argument("--out", type=Path, default=OUT, help="BEIR folder to write (default outputs/beir/quora)")
    p.add_argument("--queries", type=int, default=300, help="duplicate pairs whose q1 becomes a query (default 300)")
    p.add_argument("--corpus-size", type=int, default=5000, help="questions in the corpus (default 5000)")
    args = p.parse_args()
    corpus, queries, qrels = convert(read_pairs(args.src / "test.tsv"), args.queries, args.corpus_size)
    write(args.out, corpus, queries, qrels)
    print(f"{len(corpus)} questions, {len(queries)} queries, {len(qrels)} relevant pairs -> {args.out}")


if __name__ == "__main__":
    main()
