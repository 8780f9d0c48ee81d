"""scripts/list_stats.py on two hand-scored rows."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "list_stats.py"


def test_hand_counted(tmp_path):
    spec = importlib.util.spec_from_file_location("list_stats", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cand = lambda i, rr, ql, rql, rank: {"id": i, "retrieval_rank": rr, "ql": ql, "r_ql": rql, "rank": rank}  # noqa: E731
    rows = [  # row 1: QL agrees with the embedder; its lowest (b) is 0.2 nats below the top
            {"candidates": [cand("a", 1, -1.0, 1, 1), cand("c", 3, -1.5, 3, 2), cand("b", 2, -1.2, 2, 3)]},
            # row 2: QL's top 1 is the embedder's third; its lowest (e) is 0.04 nats below it
            {"candidates": [cand("f", 3, -0.5, 1, 1), cand("d", 1, -2.5, 3, 2), cand("e", 2, -0.54, 2, 3)]}]
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "rerank.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = mod.list_stats(tmp_path)
    assert got["ql_top1_not_embedder_top1"] == 0.5
    assert (got["lowest_within_0.05_nats"], got["lowest_within_0.1_nats"], got["lowest_within_0.25_nats"]) == (0.5, 0.5, 1.0)
    assert got["median_ql_gap_1_2"] == pytest.approx((0.2 + 0.04) / 2)
    assert got["mean_ql_spread"] == pytest.approx((0.5 + 2.0) / 2)
    # the teacher's softmax at QL's top 1, by hand: row 1 QL (-1.0, -1.5, -1.2), row 2 (-0.5, -2.5, -0.54)
    for t in (0.25, 1.0):
        w1 = math.exp(-1.0 / t) / sum(math.exp(q / t) for q in (-1.0, -1.5, -1.2))
        w2 = math.exp(-0.5 / t) / sum(math.exp(q / t) for q in (-0.5, -2.5, -0.54))
        assert got[f"teacher_top1_weight_t{t}_mean"] == pytest.approx((w1 + w2) / 2)
        assert got[f"teacher_top1_weight_t{t}_median"] == pytest.approx((w1 + w2) / 2)
