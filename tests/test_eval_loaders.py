"""Local evaluation file readers: formats, and the messages for bad input."""

import json

import pytest

from gecko_lightning.evaluation.loaders import EvalDataError, find_splits, load_beir, load_sts, read_labelled


def _beir(tmp_path, qrels=True):
    root = tmp_path / "myset"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in [
        {"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "first"}) + "\n" + json.dumps({"_id": "q9", "text": "unjudged"}) + "\n")
    if qrels:
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    return root


def test_load_beir(tmp_path):
    data = load_beir(_beir(tmp_path))
    assert data.name == "myset"
    assert data.corpus == {"d1": ("T1", "one"), "d2": ("", "two")}
    assert data.queries == {"q1": "first"}  # unjudged queries are dropped
    assert data.qrels == {"q1": {"d2": 1}}


def test_missing_qrels_names_the_path(tmp_path):
    root = _beir(tmp_path, qrels=False)
    with pytest.raises(EvalDataError, match=r"qrels file .*myset/qrels/test.tsv not found"):
        load_beir(root)


def test_qrels_query_missing_from_queries(tmp_path):
    root = _beir(tmp_path)
    (root / "qrels" / "test.tsv").write_text("qX\td1\t1\n")
    with pytest.raises(EvalDataError, match="'qX'"):
        load_beir(root)


def test_sts_benchmark_format(tmp_path):
    f = tmp_path / "sts-test.csv"
    f.write_text('main-captions\tMSRvid\t2012test\t0001\t2.500\tA "girl" plays.\tA girl plays.\textra\n'
                 "main-news\theadlines\t2015\t0002\t0.0\tx\ty\n")
    data = load_sts(f)
    assert data.name == "sts-test.csv"
    assert data.s1 == ['A "girl" plays.', "x"] and data.s2 == ["A girl plays.", "y"] and data.scores == [2.5, 0.0]


@pytest.mark.parametrize("suffix,text", [
    (".csv", "s1,s2,score\nhello,hi,4.5\n\"a, b\",c,1\n"),
    (".tsv", "sentence1\tsentence2\tscore\nhello\thi\t4.5\na, b\tc\t1\n"),
    (".jsonl", '{"s1": "hello", "s2": "hi", "score": 4.5}\n{"s1": "a, b", "s2": "c", "score": 1}\n'),
])
def test_sts_simple_formats(tmp_path, suffix, text):
    f = tmp_path / f"pairs{suffix}"
    f.write_text(text)
    data = load_sts(f)
    assert data.s1 == ["hello", "a, b"] and data.s2 == ["hi", "c"] and data.scores == [4.5, 1.0]


def test_sts_non_numeric_score_names_value_and_line(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("s1,s2,score\na,b,1\nc,d,high\n")
    with pytest.raises(EvalDataError, match=r"bad.csv:3: score 'high' is not a number"):
        load_sts(f)


def test_sts_wrong_layout(tmp_path):
    f = tmp_path / "x.tsv"
    f.write_text("a\tb\n")
    with pytest.raises(EvalDataError, match="x.tsv:1 has 2 tab-separated columns"):
        load_sts(f)


def test_classification_folder_and_sibling(tmp_path):
    (tmp_path / "train.csv").write_text("text,category\nhi there,greet\nbye,leave\n")
    (tmp_path / "test.csv").write_text("text,category\nhello,greet\n")
    assert find_splits(tmp_path) == (tmp_path / "train.csv", tmp_path / "test.csv")
    assert find_splits(tmp_path / "test.csv") == (tmp_path / "train.csv", tmp_path / "test.csv")
    data = read_labelled(tmp_path / "train.csv")
    assert data.texts == ["hi there", "bye"] and data.labels == ["greet", "leave"]


def test_classification_semicolon_and_errors(tmp_path):
    f = tmp_path / "test.txt"
    f.write_text("text;label_name\ni feel fine;joy\n")
    assert read_labelled(f).labels == ["joy"]
    with pytest.raises(EvalDataError, match="train split .*train.txt not found"):
        find_splits(f)
    g = tmp_path / "nolabel.csv"
    g.write_text("text,foo\na,b\n")
    with pytest.raises(EvalDataError, match="needs a 'text' and a 'label'"):
        read_labelled(g)
