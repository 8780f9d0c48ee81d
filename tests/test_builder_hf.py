"""The transformers backend on a tiny random Llama (configs/data/tiny-llm): batched, left-padded scoring and
generation must equal one sequence at a time, checked against a plain unpadded forward pass."""

from __future__ import annotations

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
