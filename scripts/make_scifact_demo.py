"""Carve the demo's evaluation set out of SciFact: `python scripts/make_scifact_demo.py`.

Encoding all 5,183 SciFact abstracts takes minutes on a 2-core CPU, twice per demo, so the demo
evaluates on a reduced corpus: a seeded random sample of 1,000 abstracts (drawn without looking at
labels; FRet is built from exactly these) plus every abstract relevant to a test claim. The 300 test
claims and their qrels are unchanged. Scores are therefore higher than on the full corpus and are
only comparable with each other; the full-corpus check lives in tests/test_eval_published.py.
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "configs/assets/scifact"
OUT = ROOT / "configs/assets/demo/scifact"  # named scifact so eval maps it to the "fact checking" task
UNLABELED = ROOT / "configs/assets/demo/scifact_unlabeled.jsonl"
SAMPLE, SEED = 1000, 0


def main() -> None:
    docs = [json.loads(line) for line in (SRC / "corpus.jsonl").open()]
    qrels = (SRC / "qrels/test.tsv").read_text().splitlines()
    relevant = {line.split("\t")[1] for line in qrels[1:]}
    sample = {d["_id"] for d in random.Random(SEED).sample(docs, SAMPLE)}
    (OUT / "qrels").mkdir(parents=True, exist_ok=True)
    with UNLABELED.open("w") as f:  # the FRet seed corpus: the random sample only
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs if d["_id"] in sample)
    with (OUT / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs if d["_id"] in sample | relevant)
    (OUT / "queries.jsonl").write_text((SRC / "queries.jsonl").read_text())
    (OUT / "qrels/test.tsv").write_text("\n".join(qrels) + "\n")
    print(f"{len(sample)} sampled + {len(relevant - sample)} relevant-only = {len(sample | relevant)} docs in {OUT}")


if __name__ == "__main__":
    main()
