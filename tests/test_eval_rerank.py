"""`gecko eval rerank`: the build's re-ranker scored against BEIR qrels, checked by hand and end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from data_builders import judge as rerank_eval
from data_builders.config import load_config
from data_builders.llm import LLM
from gecko_lightning import cli as gecko_cli
from gecko_lightning.evaluation import cli as eval_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "data" / "fret_tiny.yaml"
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
TINY_BEIR = ROOT / "configs" / "assets" / "tiny_eval" / "beir"

# Toy set: 4 documents, 3 queries. The stub embedder gives document dk the unit vector e_k, so a
# query vector's entries are its retrieval scores; top_n = 3.
QUERY_VECS = {"q1": [4, 3, 2, 1], "q2": [1, 2, 3, 4], "q3": [3, 4, 1, 2]}
QRELS = {"q1": {"d2": 1}, "q2": {"d4": 2, "d1": 1}, "q3": {"d1": 1, "d3": 1}}
QL = {"q1": {"d1": -3, "d2": -1, "d3": -2}, "q2": {"d4": -1, "d3": -2, "d2": -3}, "q3": {"d2": -2, "d1": -1, "d4": -3}}
RC = {"q1": {"d1": -0.5, "d2": -2, "d3": -1}, "q2": {"d4": -3, "d3": -1, "d2": -2}, "q3": {"d2": -3, "d1": -1, "d4": -2}}
# Worked out by hand. q1: r_QL d2=1 d3=2 d1=3, r_RC d1=1 d3=2 d2=3, fused d1 = d2 = 4/3 > d3 = 1, so the
# tie keeps retrieval order. q2: fused d3 = 3/2 > d4 = 4/3 > d2 = 5/6. q3: fused d1 = 2, d2 = d4 = 5/6.
EXPECTED_ORDERS = {
    "q1": {"embedder": ["d1", "d2", "d3"], "ql": ["d2", "d3", "d1"], "rc": ["d1", "d3", "d2"], "rrf": ["d1", "d2", "d3"]},
    "q2": {"embedder": ["d4", "d3", "d2"], "ql": ["d4", "d3", "d2"], "rc": ["d3", "d2", "d4"], "rrf": ["d3", "d4", "d2"]},
    "q3": {"embedder": ["d2", "d1", "d4"], "ql": ["d1", "d2", "d4"], "rc": ["d1", "d4", "d2"], "rrf": ["d1", "d2", "d4"]},
}


def _toy_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{k}", "title": f"D{k}", "text": f"doc d{k} about thing {k}"} for k in range(1, 5)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in QUERY_VECS))
    rows = [f"{q}\t{d}\t{g}" for q, rel in QRELS.items() for d, g in rel.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


class TableLLM(LLM):
    """QL and RC read from the hand tables above, found by the query and document named in the prompt."""

    model_id = "table-v1"

    @staticmethod
    def _pair(text: str) -> tuple[str, str]:
        return re.search(r"query (q\d)", text).group(1), re.search(r"doc (d\d)", text).group(1)

    def loglik(self, contexts, continuations):
        return [QL[q][d] for q, d in (self._pair(c + q) for c, q in zip(contexts, continuations))]

    def label_logprobs(self, prompts, labels):
        return [[RC[q][d]] + [-99.0] * (len(labels) - 1) for q, d in map(self._pair, prompts)]


def _stub_embed(encoder, texts, cfg) -> np.ndarray:
    def vec(text: str) -> list[float]:
        if m := re.search(r"query (q\d)", text):
            return QUERY_VECS[m.group(1)]
        return list(np.eye(4)[int(re.search(r"doc d(\d)", text).group(1)) - 1])

    return np.array([vec(t) for t in texts], dtype=np.float32)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setattr(rerank_eval, "load_embedder", lambda cfg, seed=0: None)
    monkeypatch.setattr(rerank_eval, "embed", _stub_embed)
    cfg = load_config(None, {"output_dir": str(tmp_path / "build"), "llm.backend": "fake", "rerank.mode": "separate",
                             "retrieve.top_n": 3, "corpus.max_passage_tokens": 50})
    return cfg, _toy_beir(tmp_path / "toy")


def test_orders_follow_the_hand_worked_ranks():
    for q, expected in EXPECTED_ORDERS.items():
        ids = expected["embedder"]
        got = rerank_eval.rerank_orders(ids, [QL[q][d] for d in ids], [RC[q][d] for d in ids])
        assert got == expected, q


def test_metrics_and_positive_precision_match_a_hand_computation(toy):
    cfg, beir = toy
    result = rerank_eval.evaluate_rerank(cfg, beir, task="toy task", llm=TableLLM())
    l3, l4 = 1 / math.log2(3), 1 / math.log2(4)  # rank discounts 2 and 3
    ideal = {"q1": 1, "q2": 2 + l3, "q3": 1 + l3}
    dcg = {"embedder": {"q1": l3, "q2": 2, "q3": l3}, "ql": {"q1": 1, "q2": 2, "q3": 1},
           "rc": {"q1": l4, "q2": 2 * l4, "q3": 1}, "rrf": {"q1": l3, "q2": 2 * l3, "q3": 1}}
    mrr = {"embedder": [1 / 2, 1, 1 / 2], "ql": [1, 1, 1], "rc": [1 / 3, 1 / 3, 1], "rrf": [1 / 2, 1 / 2, 1]}
    for order in rerank_eval.ORDERS:
        assert result[order]["ndcg_at_10"] == pytest.approx(100 * sum(dcg[order][q] / ideal[q] for q in ideal) / 3, abs=1e-3)
        assert result[order]["mrr_at_10"] == pytest.approx(100 * sum(mrr[order]) / 3, abs=1e-3)
        assert result[order]["recall_at_n"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 2) / 3, abs=1e-3)  # same for every order
    # The RRF top 1 differs from the embedder's on q2 (d3 vs d4, relevant) and q3 (d1, relevant, vs d2).
    rrf = {"queries": 2, "llm_top1_relevant": 50.0, "embedder_top1_relevant": 50.0}
    # QL's top 1 differs on q1 (d2, relevant, vs d1) and q3 (d1, relevant, vs d2); RC's on q2 (d3 vs d4,
    # relevant) and q3 (d1, relevant, vs d2).
    assert result["positive_precision"] == {**rrf, "by_order": {
        "ql": {"queries": 2, "llm_top1_relevant": 100.0, "embedder_top1_relevant": 0.0},
        "rc": {"queries": 2, "llm_top1_relevant": 50.0, "embedder_top1_relevant": 50.0}, "rrf": rrf}}
    assert result["queries"] == 3 and result["llm_calls"] == 3 * 3 * 2  # QL + RC per (query, candidate)


def test_a_rerun_makes_no_llm_call_and_a_sample_is_a_seeded_subset(toy):
    cfg, beir = toy
    first = rerank_eval.evaluate_rerank(cfg, beir, task="toy task", llm=TableLLM())
    again = rerank_eval.evaluate_rerank(cfg, beir, task="toy task", llm=TableLLM())
    assert again["llm_calls"] == 0 and again["cache_hits"] == first["llm_calls"] == 18
    assert {k: again[k] for k in rerank_eval.ORDERS} == {k: first[k] for k in rerank_eval.ORDERS}
    two = rerank_eval.evaluate_rerank(cfg, beir, max_queries=2, task="toy task", llm=TableLLM())
    assert two["queries"] == 2 and two["llm_calls"] == 0 and two["cache_hits"] == 2 * 3 * 2


def test_command_on_the_tiny_build_config_writes_every_order_and_reruns_from_the_cache(tmp_path, capsys, one_thread):
    out = tmp_path / "rerank.json"
    argv = ["rerank", "--config", str(TINY), "--beir", str(TINY_BEIR), "--output_dir", str(tmp_path / "build"), "--output", str(out)]
    assert eval_cli.main(argv) == 0
    first = json.loads(out.read_text())
    table = capsys.readouterr().out
    judged = {line.split("\t")[0] for line in (TINY_BEIR / "qrels" / "test.tsv").read_text().splitlines()[1:]
              if line.strip() and int(line.split("\t")[2]) > 0}
    top_n = load_config(TINY).retrieve.top_n
    assert first["queries"] == len(judged) and first["llm_calls"] == len(judged) * top_n  # joint: one call per pair
    for order in ("embedder", "ql", "rc", "rrf"):
        assert set(first[order]) == {"ndcg_at_10", "mrr_at_10", "recall_at_n"} and order in table
        assert first[order]["recall_at_n"] == first["embedder"]["recall_at_n"]
    pp = first["positive_precision"]
    assert 0 <= pp["queries"] <= first["queries"] and set(pp) == {"queries", "llm_top1_relevant", "embedder_top1_relevant", "by_order"}
    assert pp["by_order"]["rrf"] == {k: v for k, v in pp.items() if k != "by_order"} and set(pp["by_order"]) == {"ql", "rc", "rrf"}
    assert first["config"]["mode"] == "joint" and first["config"]["prompt_versions"]["qlrc"].startswith("qlrc-v1@")
    assert first["cache"] == str(tmp_path / "build" / "llm_cache.sqlite")
    assert eval_cli.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["llm_calls"] == 0 and again["cache_hits"] == first["llm_calls"]
    assert {k: again[k] for k in ("embedder", "ql", "rc", "rrf", "positive_precision")} == \
        {k: first[k] for k in ("embedder", "ql", "rc", "rrf", "positive_precision")}


@pytest.mark.parametrize("flags, message", [
    (["--beir", "no/such/beir"], "BEIR folder no/such/beir not found"),
    (["--beir", str(TINY_BEIR), "--split", "dev"], "qrels/dev.tsv not found"),
    (["--beir", str(TINY_BEIR), "--max_queries", "0"], "--max_queries=0"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gecko_cli.main(["eval", "rerank", "--config", str(FAKE), "--output_dir", str(tmp_path / "b"),
                        "--output", str(tmp_path / "r.json"), *flags])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "b").exists()  # failed before any work


def test_the_corpus_is_embedded_once_and_a_changed_setting_embeds_again(toy, monkeypatch):
    cfg, beir = toy
    corpus_sizes = []

    def counting(encoder, texts, rc):
        corpus_sizes.append(len(texts))
        return _stub_embed(encoder, texts, rc)

    monkeypatch.setattr(rerank_eval, "embed", counting)
    first = rerank_eval.evaluate_rerank(cfg, beir, task="toy task", llm=TableLLM())
    again = rerank_eval.evaluate_rerank(cfg, beir, task="toy task", llm=TableLLM())
    assert corpus_sizes == [4, 3, 3]  # corpus + queries, then the queries only
    assert {k: again[k] for k in rerank_eval.ORDERS} == {k: first[k] for k in rerank_eval.ORDERS}
    cfg.retrieve.max_length = 64  # vectors depend on it: not read from the old file
    rerank_eval.evaluate_rerank(cfg, beir, task="toy task", llm=TableLLM())
    assert corpus_sizes == [4, 3, 3, 4, 3]
