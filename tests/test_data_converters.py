"""Converters: native-format fixtures (the HF `datasets` path, offline) and real files in ../shared/data."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

from gecko_lightning.data.cli import main
from gecko_lightning.data.schema import read_manifest, read_records

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def run(tmp_path: Path, *args: str) -> list:
    out = tmp_path / "out"
    assert main(["convert", *args, "--out", str(out)]) == 0
    return read_records(out)[0]


def test_snli_premise_entailment_positive_contradiction_negative(tmp_path):
    recs = run(tmp_path, "snli", "--source", str(FIXTURES / "snli"))
    got = [(r.query, r.positive.text, r.negative.text if r.negative else None, r.symmetric) for r in recs]
    assert got == [
        ("A dog runs on the beach.", "An animal is outside.", "The dog is sleeping indoors.", True),
        ("Two men play chess.", "People play a game.", None, True),  # label -1 and neutral make nothing
    ]
    assert recs[0].task == "semantic similarity"
    assert read_manifest(tmp_path / "out")["dropped"] == {"no positive for the query": 1}


def test_nq_preset_columns_and_dropped_rows(tmp_path):
    recs = run(tmp_path, "nq", "--source", str(FIXTURES / "nq"), "--task", "find the answer")
    assert [(r.query, r.positive.text[:9], r.task) for r in recs] == [
        ("who wrote the iliad", "The Iliad", "find the answer"),
        ("what is the capital of peru", "Lima is t", "find the answer"),
    ]
    assert read_manifest(tmp_path / "out")["dropped"] == {"missing query or passage": 1}


def test_hotpotqa_one_record_per_supporting_paragraph_with_a_distractor_negative(tmp_path):
    recs = run(tmp_path, "hotpotqa", "--source", str(FIXTURES / "hotpotqa"))
    assert [(r.positive.title, r.positive.text) for r in recs] == [
        ("Dune", "Dune is a novel. Frank Herbert wrote it."),
        ("Museum X", "Museum X was founded by Herbert. It is in Tacoma."),
    ]
    assert {r.negative.text for r in recs} == {"A distractor paragraph. Nothing here."}


def test_medmcqa_answer_with_explanation_and_a_wrong_option(tmp_path):
    (rec,) = run(tmp_path, "medmcqa", "--source", str(FIXTURES / "medmcqa"))
    assert rec.positive.text == "Vitamin C. Scurvy results from a lack of ascorbic acid"
    assert rec.negative.text in {"Vitamin A", "Vitamin D", "Vitamin K"}


def test_miracl_keeps_language_and_passages(tmp_path):
    (rec,) = run(tmp_path, "miracl", "--source", str(FIXTURES / "miracl"), "--config", "es")
    assert (rec.positive.title, rec.negative.title, rec.meta) == ("Santiago", "Lima", {"language": "es"})


def test_beir_qrels_with_positive_score_and_known_ids(tmp_path):
    recs = run(tmp_path, "beir", "--source", str(FIXTURES / "beir"))
    assert [(r.query, r.positive.title, r.positive.text[:7]) for r in recs] == [
        ("Aspirin prevents heart attacks.", "Aspirin", "Aspirin"),
        ("Sunlight makes vitamin D.", None, "Vitamin"),  # empty title -> none; score 0 and unknown doc dropped
    ]
    assert read_manifest(tmp_path / "out")["dropped"] == {"qrel names an unknown query or document": 1}


def test_classification_from_a_save_to_disk_dataset(tmp_path):
    from datasets import Dataset, DatasetDict

    texts = ["a1", "a2", "a3", "b1", "b2", "c1"]
    labels = [0, 0, 0, 1, 1, 2]
    DatasetDict({"train": Dataset.from_dict({"text": texts, "label": labels})}).save_to_disk(tmp_path / "hf")
    recs = run(tmp_path, "classification", "--source", str(tmp_path / "hf"))
    label_of = dict(zip(texts, map(str, labels)))
    assert [r.query for r in recs] == texts[:5]  # c1 is alone in its class
    for r in recs:
        assert r.positive.text != r.query and label_of[r.positive.text] == label_of[r.query] == r.meta["label"]
        assert label_of[r.negative.text] != r.meta["label"] and r.symmetric


def test_missing_local_source_and_missing_split_are_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="local source './nope.csv' does not exist"):
        main(["convert", "classification", "--source", "./nope.csv", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"has no qrels/dev.tsv: pass --split"):
        main(["convert", "beir", "--source", str(FIXTURES / "beir"), "--split", "dev", "--out", str(tmp_path)])
    assert main(["convert", "pairs", "--out", str(tmp_path)]) == 2
    assert "pass --source" in capsys.readouterr().err


# ---- real files (skip when ../shared/data is absent) -----------------------------------------------
def test_real_snli_senteval_counts_match_a_plain_reading(tmp_path, shared_data):
    root = shared_data / "snli_senteval"
    cols = [(root / f"{c}.dev").read_text().splitlines() for c in ("s1", "s2", "labels")]
    pos = defaultdict(int)
    for s1, _, label in zip(*cols):
        pos[s1.strip()] += label == "entailment"
    recs = run(tmp_path, "snli", "--source", str(root), "--split", "dev")
    assert len(recs) == sum(pos.values())
    assert all(r.negative is None or r.negative.text != r.positive.text for r in recs)


def test_real_banking77_and_emotion_positives_share_the_label(tmp_path, shared_data):
    with open(shared_data / "banking77" / "train.csv", newline="") as f:
        label_of = {row["text"].strip(): row["category"] for row in csv.DictReader(f)}
    recs = run(tmp_path, "classification", "--source", str(shared_data / "banking77" / "train.csv"))
    assert len(recs) == 10003
    assert all(label_of[r.positive.text] == label_of[r.query] != label_of[r.negative.text] for r in recs[:2000])
    emotion = str(shared_data / "emotion" / "val.txt")
    recs = run(tmp_path / "e", "classification", "--source", emotion, "--delimiter", ";")
    assert len(recs) == 2000
    assert {r.meta["label"] for r in recs} == {"sadness", "joy", "love", "anger", "fear", "surprise"}


def test_real_wikiqa_quora_and_scifact(tmp_path, shared_data):
    rows = [line.split("\t") for line in (shared_data / "wikiqa" / "WikiQASent-dev.txt").read_text().splitlines()]
    recs = run(tmp_path / "w", "qa", "--source", str(shared_data / "wikiqa" / "WikiQASent-dev.txt"),
               "--column-names", "question,sentence,label", "--text-column", "sentence", "--label-column", "label")
    assert len(recs) == sum(r[2].strip() == "1" for r in rows)
    quora = run(tmp_path / "q", "pairs", "--source", str(shared_data / "quora_qp_bimpm_partition" / "dev.tsv"),
                "--column-names", "label,q1,q2,id", "--query-column", "q1", "--text-column", "q2",
                "--label-column", "label", "--encoding-errors", "replace")
    assert len(quora) == 5000 and all(r.symmetric for r in quora)
    sci = run(tmp_path / "s", "beir", "--source", str(shared_data / "scifact"))
    corpus = {d["_id"]: d["text"] for d in map(json.loads, (shared_data / "scifact" / "corpus.jsonl").open())}
    assert len(sci) == 919 and all(corpus[r.meta["doc_id"]] == r.positive.text for r in sci)
