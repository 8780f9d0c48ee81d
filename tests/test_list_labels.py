"""scripts/list_labels.py on three hand-labelled lists."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "list_labels.py"


def _load():
    spec = importlib.util.spec_from_file_location("list_labels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "stages").mkdir(parents=True)
    (tmp_path / "stages" / "rerank.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def cand(i, rr, rql, rank):
    return {"id": i, "retrieval_rank": rr, "r_ql": rql, "rank": rank}


def test_hand_counted(tmp_path):
    mod = _load()
    rows = [  # q1: the embedder's top 1 (a) is wrong, QL's (b) right; RC's fusion puts a first;
              # ranks summed: a 1+2, b 2+1, a tie that QL breaks for b
            {"query_id": "q1", "candidates": [cand("a", 1, 2, 1), cand("b", 2, 1, 2), cand("c", 3, 3, 3)]},
            # q2: its one relevant passage (f) is not in the list
            {"query_id": "q2", "candidates": [cand("d", 1, 1, 1), cand("e", 2, 2, 2)]},
            # q3: no qrels (another split)
            {"query_id": "q3", "candidates": [cand("g", 1, 1, 1)]}]
    qrels = {"q1": {"b": 1, "c": 1}, "q2": {"f": 1}}
    got = mod.list_labels(_build(tmp_path, rows), qrels)
    assert (got["queries_with_qrels"], got["lists_holding_a_relevant"]) == (2, 1)
    assert (got["top1_relevant_embedder"], got["top1_relevant_ql"], got["top1_relevant_ql+rc"],
            got["top1_relevant_ql+embedder"]) == (0, 1, 0, 1)
    ideal = 1 + 1 / math.log2(3)  # grades 1, 1, 0
    assert got["list_ndcg_embedder"] == pytest.approx(100 * (1 / math.log2(3) + 1 / math.log2(4)) / ideal)  # a, b, c
    assert got["list_ndcg_ql"] == pytest.approx(100 * (1 + 1 / math.log2(4)) / ideal)  # b, a, c


def test_graded_gains():
    mod = _load()
    assert mod.ndcg([1, 2]) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))  # linear, as gecko eval
    assert mod.ndcg([0, 0]) == 0.0


def test_a_build_without_labelled_queries_is_one_line(tmp_path):
    mod = _load()
    with pytest.raises(SystemExit, match="no query of its re-rank stage has qrels"):
        mod.list_labels(_build(tmp_path, [{"query_id": None, "candidates": [cand("a", 1, 1, 1)]}]), {"q1": {"a": 1}})


def test_cut_ranks_the_shorter_list_again():
    mod = _load()
    from data_builders.fret.rerank import _fuse

    # retrieval order a, b, c; QL prefers c, then b, then a; RC prefers a, then c, then b
    full = _fuse(["a", "b", "c"], [-3.0, -2.0, -1.0], [-0.1, -0.9, -0.5])
    assert mod.cut(full, 3) == full  # the whole list: the re-rank stage's own ranks
    two = {c["id"]: c for c in mod.cut(full, 2)}  # c is gone; in a, b: QL ranks b 1st, RC ranks a 1st
    assert set(two) == {"a", "b"}
    assert (two["b"]["r_ql"], two["a"]["r_ql"], two["a"]["r_rc"], two["b"]["r_rc"]) == (1, 2, 1, 2)
    assert [c["rank"] for c in mod.cut(full, 2)] == [1, 2] and mod.cut(full, 2)[0]["id"] == "a"  # 1.5 each: retrieval order
    assert full[0]["id"] == "c"  # in the whole list c leads (1/1 + 1/2)


def test_usage_on_bad_arguments(capsys):
    mod = _load()
    assert mod.main(["build"]) == 2 and mod.main(["build", "beir", "train", "ten"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_files_and_unlabelled_builds_are_one_line_exit_2(tmp_path, capsys):
    mod = _load()
    build = _build(tmp_path / "b", [{"query_id": "q9", "candidates": [cand("a", 1, 1, 1)]}])
    assert mod.main([str(build), str(tmp_path / "beir"), "train"]) == 2
    assert "qrels/train.tsv does not exist" in capsys.readouterr().err
    (tmp_path / "beir" / "qrels").mkdir(parents=True)
    (tmp_path / "beir" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\n")
    assert mod.main([str(build), str(tmp_path / "beir"), "train"]) == 2
    assert "no query of its re-rank stage has qrels" in capsys.readouterr().err
