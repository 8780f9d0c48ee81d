"""configs/assets/wikiqa: WikiQA's test split as a BEIR folder that `gecko eval --beir` reads, and its rebuild."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gecko_lightning.evaluation.loaders import load_beir

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "assets" / "wikiqa"
FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")


def squeeze(text: str) -> str:
    """A text as the sentence files' PTB tokens compare with it: "earth 's", ``quoted''."""
    return "".join(text.replace("``", '"').replace("''", '"').split())


@pytest.fixture
def shipped() -> Path:
    if not (SHIPPED / "corpus.jsonl").is_file():
        pytest.skip(f"{SHIPPED} is absent")
    return SHIPPED


def test_shipped_folder_loads_with_the_eval_loader(shipped):
    data = load_beir(shipped)
    assert data.name == "wikiqa"  # the name results are keyed by
    lines = {name: (shipped / name).read_text(encoding="utf-8").splitlines() for name in FILES}
    assert len(data.corpus) == len(lines["corpus.jsonl"]) and len(data.queries) == len(lines["queries.jsonl"])
    assert lines["qrels/test.tsv"][0] == "query-id\tcorpus-id\tscore"
    assert sum(len(rel) for rel in data.qrels.values()) == len(lines["qrels/test.tsv"]) - 1
    assert set(data.qrels) == set(data.queries)  # every question kept has an answer sentence
    assert all(g == 1 for rel in data.qrels.values() for g in rel.values())
    assert all(title and text for title, text in data.corpus.values())


def test_the_script_rebuilds_the_shipped_folder(shipped, shared_data, tmp_path):
    out = tmp_path / "wikiqa"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_wikiqa_beir.py"), "--src", str(shared_data / "wikiqa"),
                    "--out", str(out)], check=True, capture_output=True)
    for name in FILES:
        assert (out / name).read_bytes() == (shipped / name).read_bytes(), name


def test_counts_match_the_sentence_files(shared_data, tmp_path):
    """Reference: WikiQASent-test.txt (question, sentence, label), a separate file of the same release."""
    rows = [line.split("\t") for line in (shared_data / "wikiqa" / "WikiQASent-test.txt").read_text(encoding="utf-8").splitlines()]
    answers = [r for r in rows if r[2] == "1"]
    out = tmp_path / "wikiqa"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_wikiqa_beir.py"), "--out", str(out),
                    "--src", str(shared_data / "wikiqa")], check=True, capture_output=True)
    data = load_beir(out)
    assert len(data.queries) == len({r[0] for r in answers})  # questions with an answer (243)
    assert sum(len(rel) for rel in data.qrels.values()) == len(answers)  # answer sentences (293)
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {squeeze(q["text"]) for q in queries} == {squeeze(r[0]) for r in answers}


def test_query_log_mode_adds_dev_sentences_and_writes_dev_questions(shipped, shared_data, tmp_path):
    """Reference: WikiQASent-dev.txt (question, sentence, label), a separate file of the same release."""
    out, log = tmp_path / "wikiqa", tmp_path / "queries.txt"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_wikiqa_beir.py"), "--src", str(shared_data / "wikiqa"),
                    "--out", str(out), "--log", str(log)], check=True, capture_output=True)
    rows = [line.split("\t") for line in (shared_data / "wikiqa" / "WikiQASent-dev.txt").read_text(encoding="utf-8").splitlines()]
    logged = log.read_text(encoding="utf-8").splitlines()
    assert len(logged) == len(set(logged)) and {squeeze(q) for q in logged} == {squeeze(r[0]) for r in rows}
    texts = {squeeze(json.loads(line)["text"]) for line in (out / "corpus.jsonl").read_text(encoding="utf-8").splitlines()}
    shipped_texts = {squeeze(json.loads(line)["text"]) for line in (shipped / "corpus.jsonl").read_text(encoding="utf-8").splitlines()}
    dev = {squeeze(r[1]) for r in rows}
    assert shipped_texts <= texts and len(dev - texts) <= 0.1 * len(dev)  # dev sentences are passages (8 % differ by PTB tokenisation)
    assert len(texts - shipped_texts) >= 0.9 * len(dev - shipped_texts)
    for name in ("queries.jsonl", "qrels/test.tsv"):  # the scored questions stay the test split's
        assert (out / name).read_bytes() == (shipped / name).read_bytes(), name
