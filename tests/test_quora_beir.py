"""scripts/make_quora_beir.py (Quora duplicates as retrieval) and scripts/split_agreement.py (the split's agreement table)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gecko_lightning.evaluation.loaders import load_beir

REPO = Path(__file__).resolve().parents[1]


def make(src: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_quora_beir.py"), "--src", str(src),
                           "--out", str(out), *args], capture_output=True, text=True)


def test_hand_made_pairs_follow_the_rules(tmp_path):
    rows = [
        ("1", "How do I learn French?", "What is the best way to learn French?", "1"),
        ("0", "How do I learn Spanish?", "how do i  learn french?", "2"),  # the second is query 1 again: never a passage
        ("1", "Is coffee bad?", "Is coffee unhealthy?", "3"),
        ("0", "Is tea bad?", "Is coffee unhealthy?", "4"),  # a passage already there: kept once
        ("0", "What is rust?", "What is go?", "5"),
    ]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "test.tsv").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    proc = make(tmp_path / "src", tmp_path / "quora", "--queries", "2", "--corpus-size", "5")
    assert proc.returncode == 0, proc.stderr
    data = load_beir(tmp_path / "quora")
    assert data.name == "quora"
    assert {q: data.queries[q] for q in data.queries} == {"q1": "How do I learn French?", "q3": "Is coffee bad?"}
    assert data.qrels == {"q1": {"d1": 1}, "q3": {"d3": 1}}
    texts = [text for _, text in data.corpus.values()]
    # the two positives, then the non-duplicates' questions in file order, each text once, up to 5
    assert texts == ["What is the best way to learn French?", "Is coffee unhealthy?", "How do I learn Spanish?",
                     "Is tea bad?", "What is rust?"]


def test_too_few_duplicates_and_a_bad_row_are_errors(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "test.tsv").write_text("1\ta?\tb?\t1\n", encoding="utf-8")
    proc = make(tmp_path / "src", tmp_path / "out", "--queries", "2")
    assert proc.returncode != 0 and "only 1 duplicate pairs" in proc.stderr
    (tmp_path / "src" / "test.tsv").write_text("yes\ta?\tb?\t1\n", encoding="utf-8")
    proc = make(tmp_path / "src", tmp_path / "out")
    assert proc.returncode != 0 and "test.tsv:1" in proc.stderr


def test_the_real_file_against_a_naive_read(shared_data, tmp_path):
    src = shared_data / "quora_qp_bimpm_partition"
    assert make(src, tmp_path / "quora").returncode == 0
    data = load_beir(tmp_path / "quora")
    # the reference: the file read line by line, the first 300 duplicate pairs
    pairs = [line.split("\t") for line in (src / "test.tsv").read_text(encoding="utf-8", errors="replace").splitlines()]
    dups = [p for p in pairs if p[0] == "1"][:300]
    assert len(data.queries) == 300 and len(data.corpus) == 5000
    for label, q1, q2, pid in dups:
        assert data.queries[f"q{pid.strip()}"] == q1.strip()
        (doc,) = data.qrels[f"q{pid.strip()}"]
        assert data.corpus[doc][1] == q2.strip()
    queries = {" ".join(q.lower().split()) for q in data.queries.values()}
    assert not queries & {" ".join(t.lower().split()) for _, t in data.corpus.values()}


def write_scores(path: Path, human: float, split: float) -> None:
    path.write_text(json.dumps({"_meta": {}, "set": {"ndcg_at_10": human}, "test": {"ndcg_at_10": split}}))


def test_agreement_table_signs_and_spearman(tmp_path):
    write_scores(tmp_path / "base.json", 50.0, 90.0)
    # Δ human: +1, -2, +3, -4, -1; Δ split: +0.5, -1, -2, -3, 0 -> signs agree 3/5 (a split Δ of 0 agrees with
    # neither sign); ranks (4,2,5,1,3) vs (5,3,2,1,4)
    for name, h, s in (("a", 51, 90.5), ("b", 48, 89), ("c", 53, 88), ("d", 46, 87), ("e", 49, 90)):
        write_scores(tmp_path / f"{name}.json", h, s)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "split_agreement.py"), "--name", "set", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    # Spearman by hand: d = (-1, -1, 3, 0, -1), 1 - 6*12 / (5*24) = 0.40
    assert "sign agreement 3/5, Spearman ρ +0.40 over 5 variants" in out
    assert "| e | 49.00 | -1.00 | 90.00 | +0.00 | **no** |" in out
    assert "| c | 53.00 | +3.00 | 88.00 | -2.00 | **no** |" in out
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "split_agreement.py"), "--name", "set", str(tmp_path),
                          "--also-without", "c", "--also-without", "e"], capture_output=True, text=True, check=True).stdout
    # without c and e: Δ human (1, -2, -4), Δ split (0.5, -1, -3): the same order, ρ = 1
    assert "set without c, e: sign agreement 3/3, Spearman ρ +1.00 over 3 variants" in out
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "split_agreement.py"), "--name", "other", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "no scores for ['other']" in proc.stderr
