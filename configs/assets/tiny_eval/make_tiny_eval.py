"""Rebuild the tiny in-training eval sets from files already in the repo / ../shared/data.

    python configs/assets/tiny_eval/make_tiny_eval.py [--stsb ../shared/data/stsbenchmark/sts-dev.csv]

beir/: the 64 Wikipedia passages of configs/assets/tiny_corpus; 32 queries, each a 10-word span cut
from the middle of one passage (that passage is its only relevant document). sts.tsv: 64 pairs taken
at even intervals from the STS Benchmark dev split (STS Benchmark layout).
"""

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "tiny_corpus" / "corpus.jsonl"


def make_beir(out: Path, n_queries: int = 32, span: int = 10) -> None:
    docs = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for i, d in enumerate(docs[:n_queries]):
        words = d["text"].split()
        start = max(0, len(words) // 2 - span // 2)
        queries.append({"_id": f"q{i}", "text": " ".join(words[start : start + span])})
        qrels.append(f"q{i}\t{d['_id']}\t1")
    (out / "queries.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries))
    (out / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")


def make_sts(stsb: Path, out: Path, n: int = 64) -> None:
    lines = [l for l in stsb.read_text(encoding="utf-8").splitlines() if l.strip()]
    step = len(lines) // n
    out.write_text("\n".join(lines[i * step] for i in range(n)) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--stsb", default=str(HERE.parents[3] / "shared" / "data" / "stsbenchmark" / "sts-dev.csv"))
    args = p.parse_args()
    make_beir(HERE / "beir")
    make_sts(Path(args.stsb), HERE / "sts.tsv")
