"""The rerank stage: the LLM scores every retrieved candidate (QL and RC), fused by reciprocal rank.

Reads `stages/retrieve.jsonl` and `stages/corpus.jsonl`, writes `stages/rerank.jsonl`: each query's
candidates best first, with their QL and RC scores and ranks, the fused score and rank, and the
embedder's score. `score_pairs` is also what `gecko eval rerank` (judge.py) scores BEIR pairs with, so
its calls share the build's cache keys. Grouped scheduling (`grouped`) sends pairs that share a prompt
prefix to the engine together, so a prefix cache runs the shared part once.
"""

from __future__ import annotations

import math
from typing import Any

from tqdm.auto import tqdm

from ..corpus import read_jsonl, write_jsonl
from ..llm import CallFailed
from ..llm.cache import cache_key
from ..prompts import load_prompt, passage_text
from .context import Context, cached, submission

# In-process transformers scores this many grouped pairs per call (and per cache transaction).
GROUPED_TRANSFORMERS_PAIRS = 256


def _ranks(scores: list[float]) -> list[int]:
    """1-based ranks, best (highest) first; ties keep retrieval order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ranks = [0] * len(scores)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def rerank(ctx: Context) -> dict[str, Any]:
    llm = ctx.llm()
    by_id = {r["id"]: r for r in read_jsonl(ctx.stage_file("corpus"))}
    rows = read_jsonl(ctx.stage_file("retrieve"))
    prompts, per_chunk = rerank_prompts(ctx), rerank_chunk(ctx)
    out, failed = [], 0
    bar = tqdm(total=len(rows), desc="rerank", unit="query")
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        # One string per passage, however many of the chunk's queries it is a candidate of.
        texts = {c: passage_text(by_id[c]["title"], by_id[c]["text"]) for row in chunk for c in row["candidates"]}
        pairs = [(row, texts[c]) for row in chunk for c in row["candidates"]]
        scores = score_pairs(ctx, llm, prompts, pairs)
        at = 0
        for row in chunk:
            mine, at = scores[at : at + len(row["candidates"])], at + len(row["candidates"])
            if any(isinstance(v, CallFailed) for pair in mine for v in pair):
                failed += 1  # dropped from this build, counted; a re-run scores it again
                continue
            fused = _fuse(row["candidates"], [q for q, _ in mine], [r for _, r in mine], row.get("scores"))
            out.append({**{k: v for k, v in row.items() if k != "scores"}, "candidates": fused})
        bar.update(len(chunk))
    bar.close()
    write_jsonl(ctx.stage_file("rerank"), out)
    scored = sum(len(r["candidates"]) for r in out)
    return {"queries": len(out), "scored_pairs": scored, "queries_failed": failed}


def rerank_prompts(ctx: Context) -> dict[str, Any]:
    """The prompts of `rerank.mode` by call kind (`qlrc`, or `ql` and `rc`); their versions go to the manifest."""
    rr = ctx.cfg.rerank
    if rr.mode == "joint":
        prompts = {"qlrc": load_prompt(rr.joint_prompt, ("context", "continuation", "suffix", "labels"))}
    else:
        prompts = {"ql": load_prompt(rr.ql_prompt, ("context", "continuation")), "rc": load_prompt(rr.rc_prompt, ("prompt", "labels"))}
    ctx.prompt_versions.update({kind: p.version for kind, p in prompts.items()})
    return prompts


def grouped(ctx: Context) -> bool:
    """`rerank.group_by_passage`, so vLLM's prefix cache runs a shared prefix once for adjacent pairs.
    In-process transformers has no cache of its own: it is grouped only when it shares prefixes itself
    (`llm.score_from_prefix_cache`); otherwise it keeps its per-query calls, whose padded batches (and
    so the scores' last bits) do not depend on the other queries of the build or shard."""
    if ctx.cfg.llm.backend == "transformers":
        return ctx.cfg.rerank.group_by_passage and ctx.cfg.llm.score_from_prefix_cache
    return ctx.cfg.rerank.group_by_passage


def _pairs_per_submission(ctx: Context) -> int:
    """Pairs scored (and cached) together when grouped: `llm.submit_size`; in-process transformers, on
    a CPU as on a GPU, `GROUPED_TRANSFORMERS_PAIRS`, so that a stopped build loses little."""
    if ctx.cfg.llm.backend == "transformers":
        return GROUPED_TRANSFORMERS_PAIRS
    return max(1, ctx.cfg.llm.submit_size)


def rerank_chunk(ctx: Context) -> int:
    """Queries whose pairs are scored together. Grouped: `rerank.group_window`, since a passage shares its
    prefix only within the chunk. Else the queries whose pairs fill one submission (in-process: 0 // n -> 1)."""
    if grouped(ctx):
        return max(1, ctx.cfg.rerank.group_window)
    return max(1, submission(ctx, 0) // max(1, ctx.cfg.retrieve.top_n))


def score_pairs(ctx: Context, llm, prompts: dict[str, Any], pairs: list[tuple[dict[str, Any], str]]) -> list[tuple]:
    """(QL, RC) per (row with `task` and `query`, passage text) pair, through the cache (stage `rerank`).

    Grouped (`grouped`), prompts that start with the passage (QL, joint) go to the engine passage by
    passage and RC prompts (which start with the query) query by query, `llm.submit_size` at a time;
    every result is put back at its pair's index. A score the backend could not get is `CallFailed`.
    `gecko eval rerank` scores BEIR pairs with this same function, so its calls share the build's cache keys.
    """
    if "qlrc" in prompts:
        return _scheduled(ctx, pairs, _passage, lambda sub: _joint_scores(ctx, llm, prompts["qlrc"], sub))
    ql = _scheduled(ctx, pairs, _passage, lambda sub: _ql_scores(ctx, llm, prompts["ql"], sub))
    rc = _scheduled(ctx, pairs, _query, lambda sub: _rc_scores(ctx, llm, prompts["rc"], sub))
    return list(zip(ql, rc))


def _passage(pair: tuple[dict[str, Any], str]) -> Any:
    return pair[1]


def _query(pair: tuple[dict[str, Any], str]) -> Any:
    return pair[0]["task"], pair[0]["query"]


def prefix_order(pairs: list, key) -> list[int]:
    """Pair indices with equal `key(pair)` adjacent: groups in order of first appearance, each in input order."""
    first: dict[Any, int] = {}
    group = [first.setdefault(key(pair), len(first)) for pair in pairs]
    return sorted(range(len(pairs)), key=lambda i: (group[i], i))


def _scheduled(ctx: Context, pairs: list, key, score) -> list:
    """`score(pairs)`, or when grouped `score` over `prefix_order` submissions, results back in input order."""
    if not grouped(ctx):
        return score(pairs)
    order, size, out = prefix_order(pairs, key), _pairs_per_submission(ctx), [None] * len(pairs)
    # The window can be the whole stage, so the per-query bar moves only at its end: show the pairs too.
    bar = tqdm(total=len(order), desc="rerank pairs", unit="pair", disable=len(order) <= size)
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        for i, value in zip(idx, score([pairs[i] for i in idx]), strict=True):
            out[i] = value
        bar.update(len(idx))
    bar.close()
    return out


def _ql_scores(ctx, llm, prompt, pairs) -> list:
    contexts = [prompt.spec["context"].format(passage=p, task=row["task"]) for row, p in pairs]
    conts = [prompt.spec["continuation"].format(query=row["query"], task=row["task"]) for row, _ in pairs]
    keys = [cache_key(llm.model_id, prompt.version, "ql", [c, q]) for c, q in zip(contexts, conts)]
    return cached(ctx, "rerank", keys, lambda idx: llm.loglik([contexts[i] for i in idx], [conts[i] for i in idx]))


def _rc_scores(ctx, llm, prompt, pairs) -> list:
    labels = list(prompt.spec["labels"])
    prompts = [prompt.spec["prompt"].format(passage=p, task=row["task"], query=row["query"]) for row, p in pairs]
    keys = [cache_key(llm.model_id, prompt.version, "rc", [p, labels]) for p in prompts]
    logps = cached(ctx, "rerank", keys, lambda idx: llm.label_logprobs([prompts[i] for i in idx], labels))
    return [lp if isinstance(lp, CallFailed) else _logsumexp(lp) for lp in logps]


def _joint_scores(ctx, llm, prompt, pairs) -> list:
    spec, labels = prompt.spec, list(prompt.spec["labels"])
    contexts = [spec["context"].format(passage=p, task=row["task"]) for row, p in pairs]
    conts = [spec["continuation"].format(query=row["query"], task=row["task"]) for row, _ in pairs]
    keys = [cache_key(llm.model_id, prompt.version, "qlrc", [c, q, spec["suffix"], labels]) for c, q in zip(contexts, conts)]
    got = cached(ctx, "rerank", keys, lambda idx: llm.ql_rc([contexts[i] for i in idx], [conts[i] for i in idx],
                                                            spec["suffix"], labels))
    return [(g, g) if isinstance(g, CallFailed) else (g[0], _logsumexp(g[1])) for g in got]


def _fuse(ids: list[str], ql: list[float], rc: list[float], scores: list[float | None] | None = None) -> list[dict[str, Any]]:
    """Reciprocal-rank fusion R = 1/r_QL + 1/r_RC; returned best first with `rank` = fused rank.

    `scores`, the embedder's score of each candidate, ride along as `retrieval_score` (`select.negative: margin`)."""
    r_ql, r_rc = _ranks(ql), _ranks(rc)
    fused = [1 / a + 1 / b for a, b in zip(r_ql, r_rc)]
    cands = [{"id": c, "retrieval_rank": i + 1, "ql": ql[i], "rc": rc[i], "r_ql": r_ql[i], "r_rc": r_rc[i], "fused": fused[i]}
             for i, c in enumerate(ids)]
    if scores is not None:
        for cand, score in zip(cands, scores, strict=True):
            cand["retrieval_score"] = score
    order = sorted(range(len(ids)), key=lambda i: (-fused[i], i))
    return [{**cands[i], "rank": rank} for rank, i in enumerate(order, start=1)]
