"""The passage-grouped rerank schedule (`rerank.group_by_passage`): every score returns to its own pair.

The reference is each pair scored alone, one call per pair, so no order can leak into it; the fake
scores depend on both the query and the passage, so a score put back at the wrong pair fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data_builders import cli
from data_builders.config import load_config
from data_builders.fret.context import Context
from data_builders.fret.rerank import rerank_prompts, score_pairs
from data_builders.llm.fake import FakeLLM

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"


class RecordingLLM(FakeLLM):
    """FakeLLM that remembers the contexts of every QL call, in the order the engine would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.ql_contexts: list[str] = []

    def loglik(self, contexts, continuations):
        self.ql_contexts.extend(contexts)
        return super().loglik(contexts, continuations)


def _pairs() -> list[tuple[dict, str]]:
    """5 queries x 4 candidates over 6 passages: each passage is a candidate of several queries."""
    passages = [f"passage {i} about topic {i % 3} with words w{i} and x{i * 7}" for i in range(6)]
    rows = [{"task": f"task {q % 2}", "query": f"topic {q % 3} words w{q} x{q * 7}"} for q in range(5)]
    return [(row, passages[(q + k) % 6]) for q, row in enumerate(rows) for k in range(4)]


def _reference(prompts: dict, pairs: list[tuple[dict, str]], tmp: Path, mode: str) -> list[tuple]:
    """Each pair scored alone: its own context, its own call, nothing shared with another pair."""
    cfg = load_config(FAKE, {"output_dir": str(tmp / "ref"), "rerank.mode": mode, "rerank.group_by_passage": False})
    ctx = Context(cfg, llm=FakeLLM())
    return [score_pairs(ctx, ctx.llm(), prompts, [pair])[0] for pair in pairs]


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_grouped_scores_return_to_their_own_pairs(tmp_path, mode):
    pairs = _pairs()
    llm = RecordingLLM()
    cfg = load_config(FAKE, {"output_dir": str(tmp_path / "grouped"), "rerank.mode": mode,
                             "rerank.group_by_passage": True, "llm.submit_size": 7})
    ctx = Context(cfg, llm=llm)
    prompts = rerank_prompts(ctx)
    got = score_pairs(ctx, llm, prompts, pairs)
    assert got == _reference(prompts, pairs, tmp_path, mode)
    assert len({q for q, _ in got}) == len(pairs)  # distinct scores: a swap could not go unnoticed
    if mode == "separate":  # the engine saw each passage's contexts together, not query by query
        sent = [next(p for p in {b for _, b in pairs} if p in c) for c in llm.ql_contexts]
        assert len(sent) == len(pairs)
        assert [p for i, p in enumerate(sent) if i == 0 or p != sent[i - 1]] == list(dict.fromkeys(sent))
        assert sent != [p for _, p in pairs]


def test_a_build_gives_the_same_records_grouped_or_not(tmp_path):
    outs = {}
    for flag in ("true", "false"):
        out = tmp_path / flag
        assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(out), "--rerank.group_by_passage", flag]) == 0
        outs[flag] = out
    for name in ("stages/rerank.jsonl", "stages/select.jsonl", "shard-00000.jsonl"):
        assert (outs["true"] / name).read_bytes() == (outs["false"] / name).read_bytes(), name
