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
    with pytest.raises(EvalDataError, match="x.tsv:1: has 2 tab-separated columns"):
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


def test_qrels_naming_a_document_missing_from_the_corpus_is_an_error(tmp_path):
    """A missing document would count as relevant and never retrieved: nDCG drops with no word."""
    root = _beir(tmp_path)
    rows = ["query-id\tcorpus-id\tscore", "q1\td2\t1", "q1\td7\t1"]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    bad_line = rows.index("q1\td7\t1") + 1
    with pytest.raises(EvalDataError) as e:
        load_beir(root)
    assert str(e.value).startswith(f"{root / 'qrels' / 'test.tsv'}:{bad_line}: corpus-id 'd7' is not in {root / 'corpus.jsonl'}")


@pytest.mark.parametrize("score, message", [
    ("nan", "score 'nan' is not an integer grade"),
    ("1.5", "score '1.5' is not an integer grade"),
    ("inf", "score 'inf' is not an integer grade"),
])
def test_qrels_score_must_be_an_integer(tmp_path, score, message):
    root = _beir(tmp_path)
    (root / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t{score}\n")
    with pytest.raises(EvalDataError) as e:
        load_beir(root)
    assert str(e.value).startswith(f"{root / 'qrels' / 'test.tsv'}:3: {message}")


@pytest.mark.parametrize("rows, line, message", [
    (["q1\t0\td2\t1"], 1, "has 4 columns, expected query-id<TAB>corpus-id<TAB>score"),
    (["q1\td2\t1", "q1\td2\t0"], 2, "'q1' -> 'd2' is graded again (first on line 1)"),
    (["q1\td1\t0"], None, "no row has a score > 0"),
])
def test_qrels_layout_problems_name_the_line(tmp_path, rows, line, message):
    root = _beir(tmp_path)
    qrels = root / "qrels" / "test.tsv"
    qrels.write_text("\n".join(rows) + "\n")
    with pytest.raises(EvalDataError) as e:
        load_beir(root)
    assert str(e.value).startswith(f"{qrels}:{line}: " if line else f"{qrels}: ") and message in str(e.value)


@pytest.mark.parametrize("row, message", [
    ({"title": "T", "text": "no id"}, "no '_id' field"),
    ({"_id": 5, "text": "number id"}, "'_id' must be a non-empty string, got 5"),
    ({"_id": "d1", "text": "again"}, "_id 'd1' is already on line 1"),
    ({"_id": "d9", "text": None}, "'text' must be a string, got null"),
])
def test_corpus_rows_are_checked(tmp_path, row, message):
    root = _beir(tmp_path)
    corpus = root / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + json.dumps(row) + "\n")
    with pytest.raises(EvalDataError) as e:
        load_beir(root)
    assert str(e.value).startswith(f"{corpus}:3: {message}")


@pytest.mark.parametrize("suffix, text, line", [
    (".csv", "s1,s2,score\na,b,1\nc,d,nan\n", 3),
    (".tsv", "s1\ts2\tscore\na\tb\t1\nc\td\tinf\n", 3),
    (".csv", "main\tx\t2012\t1\t1.0\ta\tb\nmain\tx\t2012\t2\tNaN\tc\td\n", 2),
    (".jsonl", '{"s1": "a", "s2": "b", "score": 1}\n{"s1": "c", "s2": "d", "score": NaN}\n', 2),
])
def test_sts_non_finite_score_is_an_error(tmp_path, suffix, text, line):
    f = tmp_path / f"pairs{suffix}"
    f.write_text(text)
    with pytest.raises(EvalDataError) as e:
        load_sts(f)
    assert str(e.value).startswith(f"{f}:{line}: ") and ("finite" in str(e.value) or "NaN" in str(e.value))


def test_sts_with_one_gold_score_has_no_spearman(tmp_path):
    f = tmp_path / "flat.csv"
    f.write_text("s1,s2,score\na,b,3\nc,d,3\n")
    with pytest.raises(EvalDataError, match=r"flat.csv: every score is 3.0; Spearman needs two different scores"):
        load_sts(f)


def test_sts_row_missing_a_column_names_its_line(tmp_path):
    f = tmp_path / "short.csv"
    f.write_text("s1,s2,score\na,b,1\nc,2\n")
    with pytest.raises(EvalDataError, match=r"short.csv:3: has 2 columns, the header has 3"):
        load_sts(f)


def test_non_utf8_eval_file_names_line_and_byte(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_bytes(b"s1\ts2\tscore\na\tb\t1\ncaf\xe9\td\t2\n")
    offset = f.read_bytes().index(b"\xe9")
    with pytest.raises(EvalDataError) as e:
        load_sts(f)
    assert str(e.value) == f"{f}:3: byte 0xe9 at column 4 is not UTF-8 (file offset {offset}); save the file as UTF-8"


def test_sts_csv_row_with_a_carriage_return_inside_is_an_error(tmp_path):
    """Found by tests/test_fuzz_inputs.py: csv.Error escaped as a traceback."""
    f = tmp_path / "pairs.csv"
    f.write_bytes(b"sentence1,sentence2,score\n\r,0,0.0\n0,0,5.0\n")
    with pytest.raises(EvalDataError) as e:
        load_sts(f)
    assert str(e.value) == f"{f}:2: a carriage return inside an unquoted field; remove it or quote the field"


@pytest.mark.parametrize("score", ["\x1c.0", "1_0", "\u0661"])
def test_sts_score_in_an_unusual_notation_is_not_read_as_a_number(tmp_path, score):
    """Found by tests/test_fuzz_inputs.py: float() reads '\\x1c.0' as 0.0, '1_0' as 10 and '١' as 1."""
    f = tmp_path / "pairs.csv"
    f.write_text(f"sentence1,sentence2,score\na,b,{score}\nc,d,5.0\n")
    with pytest.raises(EvalDataError) as e:
        load_sts(f)
    assert str(e.value) == f"{f}:2: score {score!r} is not a number; STS/qrels scores must be numeric"
