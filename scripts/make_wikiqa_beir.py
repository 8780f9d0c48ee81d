"""WikiQA's test split as a BEIR folder: `python scripts/make_wikiqa_beir.py [--src DIR] [--out DIR]`.

WikiQA (Microsoft) pairs Bing questions with the sentences of one Wikipedia summary each, every
sentence labelled 1 if it answers the question. As retrieval: each distinct candidate sentence of the
test split is a passage (`_id` its SentenceID, titled by its Wikipedia page), each question with at
least one answer sentence is a query, and every sentence labelled 1 is relevant (grade 1). Questions
with no answer (390 of 633) are dropped, their sentences stay as distractors. So a question searches
all 5,961 test sentences rather than only its own page's, unlike WikiQA's usual answer-selection
scores (MAP/MRR per question), and the two are not comparable.

Reads WikiQA-test.tsv (QuestionID, Question, DocumentID, DocumentTitle, SentenceID, Sentence, Label)
from ../shared/data/wikiqa; writes corpus.jsonl, queries.jsonl and qrels/test.tsv in file order, so
the output is byte-identical on every run. The folder is named wikiqa because `gecko eval` keys its
results (and the prompt map) by folder name.

As a query log without labels (docs/results.md, "The judge distilled"): `--log FILE` also writes the dev
split's 296 questions, answered or not, one per line (as a search log holds them), and adds the dev
split's sentences to the corpus, so the log's questions have their answers to find and the test
questions search test and dev sentences together:

    python scripts/make_wikiqa_beir.py --out outputs/querylog/wikiqa/wikiqa --log outputs/querylog/wikiqa/queries.txt
"""

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data" / "wikiqa"
OUT = ROOT / "configs" / "assets" / "wikiqa"
COLUMNS = ["QuestionID", "Question", "DocumentID", "DocumentTitle", "SentenceID", "Sentence", "Label"]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The tab-separated rows; fields are never quoted, so a plain split is exact."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines[0].split("\t") != COLUMNS:
        raise SystemExit(f"{path}: header {lines[0]!r} is not the WikiQA layout {COLUMNS}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(COLUMNS) or fields[-1] not in ("0", "1"):
            raise SystemExit(f"{path}:{n}: expected {len(COLUMNS)} tab-separated columns ending in a 0/1 label")
        rows.append(dict(zip(COLUMNS, fields)))
    return rows


def convert(rows: list[dict[str, str]]) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """(corpus, queries, qrels): distinct sentences, answered questions, (question, sentence) answer pairs."""
    corpus: dict[str, dict] = {}
    for r in rows:  # a page shown for two questions repeats its sentences: keep the first
        corpus.setdefault(r["SentenceID"], {"_id": r["SentenceID"], "title": r["DocumentTitle"], "text": r["Sentence"]})
    qrels = [(r["QuestionID"], r["SentenceID"]) for r in rows if r["Label"] == "1"]
    answered = {q for q, _ in qrels}
    queries = {r["QuestionID"]: {"_id": r["QuestionID"], "text": r["Question"]} for r in rows if r["QuestionID"] in answered}
    return list(corpus.values()), list(queries.values()), list(dict.fromkeys(qrels))


def write(out: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str]]) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    body = "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + body, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=SRC, help="folder holding WikiQA-test.tsv (default ../shared/data/wikiqa)")
    p.add_argument("--out", type=Path, default=OUT, help="BEIR folder to write (default configs/assets/wikiqa)")
    p.add_argument("--log", type=Path, default=None,
                   help="also write the dev questions here, one per line, and add the dev sentences to the corpus")
    args = p.parse_args()
    corpus, queries, qrels = convert(read_rows(args.src / "WikiQA-test.tsv"))
    if args.log:
        dev = read_rows(args.src / "WikiQA-dev.tsv")
        seen = {c["_id"] for c in corpus}
        corpus += [c for c in convert(dev)[0] if c["_id"] not in seen]
        log = list(dict.fromkeys(r["Question"] for r in dev))
        args.log.parent.mkdir(parents=True, exist_ok=True)
        args.log.write_text("".join(q + "\n" for q in log), encoding="utf-8")
        print(f"{len(log)} dev questions -> {args.log}")
    write(args.out, corpus, queries, qrels)
    print(f"{len(corpus)} sentences, {len(queries)} questions, {len(qrels)} relevant pairs -> {args.out}")


if __name__ == "__main__":
    main()
