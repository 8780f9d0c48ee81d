"""The transformers backend on a tiny random Llama (configs/data/tiny-llm): batched, left-padded scoring and
generation must equal one sequence at a time, checked against a plain unpadded forward pass."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from data_builders.config import LLMConfig, load_config
from data_builders.llm.hf import TransformersLLM
from data_builders.llm import GenRequest
from data_builders.fret.runner import run
from gecko_lightning.data.schema import read_manifest, read_records

ROOT = Path(__file__).resolve().parents[1]
CONTEXTS = ["Passage: Paris is in France.\nQuery:", "Passage: a much longer passage about the history of "
            "the Drexel Dragons football team and its coaches.\nQuery:", "Query:"]
QUERIES = [" where is paris", " drexel football", " a"]


@pytest.fixture(scope="module")
def llm() -> TransformersLLM:
    cfg = LLMConfig(model=str(ROOT / "configs/data/tiny-llm"), random_init=True, chat_template=False,
                    score_batch_size=2, max_new_tokens=6, stop=[])
    return TransformersLLM(cfg, seed=0)


def _reference_logprobs(llm: TransformersLLM, ids: list[int]) -> torch.Tensor:
    """Log-softmax of one unpadded sequence, (T, V): the plain reference the batched path must match."""
    with torch.inference_mode():
        return torch.log_softmax(llm.model(torch.tensor([ids])).logits[0].float(), -1)


def _reference_ql(llm, context: str, query: str) -> float:
    ctx = llm.tokenizer(context)["input_ids"]
    q = llm.tokenizer(query, add_special_tokens=False)["input_ids"]
    logp = _reference_logprobs(llm, ctx + q)
    return sum(logp[len(ctx) + j - 1, t].item() for j, t in enumerate(q)) / len(q)


def test_batched_ql_equals_one_at_a_time(llm):
    batched = llm.loglik(CONTEXTS, QUERIES)  # 3 rows in chunks of 2, left-padded to different widths
    single = [llm.loglik([c], [q])[0] for c, q in zip(CONTEXTS, QUERIES)]
    reference = [_reference_ql(llm, c, q) for c, q in zip(CONTEXTS, QUERIES)]
    assert batched == pytest.approx(reference, abs=1e-4)
    assert single == pytest.approx(reference, abs=1e-4)


def test_batched_rc_equals_one_at_a_time(llm):
    labels = [" yes", " no"]
    ids = [llm.tokenizer(lab, add_special_tokens=False)["input_ids"][0] for lab in labels]
    batched = llm.label_logprobs(CONTEXTS, labels)
    for ctx, row in zip(CONTEXTS, batched):
        logp = _reference_logprobs(llm, llm.tokenizer(ctx)["input_ids"])[-1]
        assert row == pytest.approx([logp[i].item() for i in ids], abs=1e-4)


def test_joint_ql_rc_equals_separate_scoring(llm):
    suffix, labels = "\nRelevant? Answer:", [" yes"]
    joint = llm.ql_rc(CONTEXTS, QUERIES, suffix, labels)
    ql = [_reference_ql(llm, c, q) for c, q in zip(CONTEXTS, QUERIES)]
    rc = llm.label_logprobs([c + q + suffix for c, q in zip(CONTEXTS, QUERIES)], labels)
    assert [j[0] for j in joint] == pytest.approx(ql, abs=1e-4)
    assert [j[1][0] for j in joint] == pytest.approx([r[0] for r in rc], abs=1e-4)


def test_batched_greedy_generation_equals_one_at_a_time(llm):
    reqs = [GenRequest("Passage: Paris.", " task:"), GenRequest("Passage: a long passage about rivers and dams.", "")]
    assert llm.generate(reqs) == [llm.generate([r])[0] for r in reqs]


def test_truncate_counts_tokens(llm):
    text = "Róisín Owens is a Professor in the Department of Chemical Engineering"
    cut, was_cut = llm.truncate(text, 5)
    assert was_cut and len(llm.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 5
    assert llm.truncate(text, 1000) == (text, False)


@pytest.mark.slow
def test_fret_tiny_builds_a_dataset_with_the_real_backend(tmp_path):
    cfg = load_config(ROOT / "configs/data/fret_tiny.yaml", {"output_dir": str(tmp_path)})
    run(cfg)
    records, _ = read_records(tmp_path)
    manifest = read_manifest(tmp_path)
    assert len(records) == manifest["records"] == 12
    assert manifest["llm_calls"] == {"generate": 12, "rerank": 12 * 6}  # one joint QL+RC call per pair
    gen = manifest["stages"]["generate"]
    assert gen["fallback_used"] == round(gen["parse_failure_rate"] * 12)  # every failure fell back, counted


PASSAGES = ["Passage: The Drexel Dragons football team represented Drexel University in Philadelphia from 1892 "
            "until the program ended in 1973.\nTask: find the answer\nQuery:",
            "Passage: Paris is the capital and largest city of France, on the Seine river, with about two million "
            "residents.\nTask: find the answer\nQuery:"]


@pytest.fixture(scope="module")
def sharing_llm(llm) -> TransformersLLM:
    """The same model and weights, with `llm.score_from_prefix_cache` on."""
    shared = TransformersLLM.__new__(TransformersLLM)
    shared.__dict__.update(llm.__dict__, cfg=dataclasses.replace(llm.cfg, score_from_prefix_cache=True))
    return shared


def test_rows_sharing_a_prefix_run_it_once_only_when_asked(llm, sharing_llm, monkeypatch):
    """Pairs of one passage, adjacent as the grouped re-rank sends them, run the passage once; every
    (QL, RC) equals the unpadded full prompt's, and goes back to its own pair (queries of different
    lengths, a chunk boundary inside a group, a lone row between groups)."""
    contexts = [PASSAGES[0]] * 3 + ["Query:"] + [PASSAGES[1]] * 2
    queries = [" drexel football years", " who", " when did the drexel program end", " a", " paris", " capital of france"]
    suffix, labels = "\nRelevant? Answer:", [" yes", " no"]
    shared, calls = [], TransformersLLM._shared_prefix_scores

    def spy(self, rows, prefix, label_ids):
        shared.append((len(rows), prefix))
        return calls(self, rows, prefix, label_ids)

    monkeypatch.setattr(TransformersLLM, "_shared_prefix_scores", spy)
    plain = llm.ql_rc(contexts, queries, suffix, labels)
    assert not shared  # off by default: full prompts only
    got = sharing_llm.ql_rc(contexts, queries, suffix, labels)
    ctx_len = [len(llm.tokenizer(c)["input_ids"]) for c in PASSAGES]
    assert [n for n, _ in shared] == [3, 2] and [p for _, p in shared] == [n - 1 for n in ctx_len]
    want_ql = [_reference_ql(llm, c, q) for c, q in zip(contexts, queries)]
    label_ids = [llm.tokenizer(lab, add_special_tokens=False)["input_ids"][0] for lab in labels]
    for (ql, rc), (ql_plain, _), c, q, ref in zip(got, plain, contexts, queries, want_ql):
        assert abs(ql_plain - ref) <= 1e-5
        ids = llm.tokenizer(c)["input_ids"] + [t for text in (q, suffix) for t in llm.tokenizer(text, add_special_tokens=False)["input_ids"]]
        full = _reference_logprobs(llm, ids)[-1]
        assert abs(ql - ref) <= 1e-5
        assert rc == pytest.approx([full[i].item() for i in label_ids], abs=1e-5)


def test_a_transformers_build_gives_the_same_records_sharing_prefixes_or_not(tmp_path, monkeypatch):
    """fret_tiny on the tiny Llama: passage-grouped re-ranking on shared prefixes
    (`llm.score_from_prefix_cache`) and today's per-query scoring give the same records (positives,
    negatives, ranks), with scores within 1e-5 nats."""

    shared, calls = [], TransformersLLM._shared_prefix_scores
    monkeypatch.setattr(TransformersLLM, "_shared_prefix_scores",
                        lambda self, rows, *a: shared.append(len(rows)) or calls(self, rows, *a))
    outs = {}
    for flag in (True, False):
        out = tmp_path / str(flag)
        run(load_config(ROOT / "configs/data/fret_tiny.yaml", {"output_dir": str(out), "llm.score_from_prefix_cache": flag,
                                                             "corpus.num_seeds": 8}))
        outs[flag] = out
        assert (sum(shared) > 0) == flag  # passages recur among 8 queries' top 6 of 64: grouped shares them
        shared.clear()
    records = {flag: [json.loads(line) for p in sorted(out.glob("shard-*.jsonl")) for line in p.read_text().splitlines()]
               for flag, out in outs.items()}
    scores = {flag: [(c.pop("ql"), c.pop("rc")) for r in rows for c in r["meta"]["candidates"]] for flag, rows in records.items()}
    assert records[True] == records[False] and records[True]  # every choice and rank, and all but the scores' last digits
    assert max(abs(a - b) for x, y in zip(scores[True], scores[False]) for a, b in zip(x, y)) <= 1e-5
