"""The five FRet stages. Each reads the files the previous stage wrote under `<output_dir>/stages/`
and writes its own, so any stage can be re-run alone:

    generate  -> corpus.jsonl (truncated), generate.jsonl   (LLM: one few-shot generation per seed;
                                                             corpus.queries: the user's own queries)
    retrieve  -> retrieve.jsonl                              (embedder + faiss: top-N neighbours)
    rerank    -> rerank.jsonl                                (LLM: QL and RC for every candidate, RRF; rerank.py)
    select    -> select.jsonl, test.jsonl                    (no LLM: positive / negative choice; held-out seeds)
    export    -> shard-*.jsonl, test/, manifest.json         (see runner.py; test/ is a BEIR folder, split.py)

`prepared_corpus` is the one place the corpus is read and truncated: `generate` calls it with the
LLM's own `truncate`, the embed step (`--stage embed`, which loads no LLM) with `passage_truncator`,
and the retrieve stage checks that both saw the same passages (index.py).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

from tqdm.auto import tqdm

from gecko_lightning.errors import UserError

from ..config import BuildConfig, LLMConfig
from ..corpus import load_corpus, read_jsonl, sample_seeds, truncate_corpus, write_jsonl
from ..corpus.queries import load_queries
from ..llm import LLM, CallFailed
from ..llm.cache import cache_key
from ..prompts import EXTRACTIVE_TASK, GenerationPrompt, extractive_query, load_prompt, passage_text
from . import split
from .context import Context, cached, submission
from .rerank import rerank  # noqa: F401  (the runner calls every stage by name from this module)
from .sharding import shard_seeds

log = logging.getLogger(__name__)


def seed_batch(ctx: Context) -> int:
    """Seeds per generate batch; shards hold whole batches and retrieve embeds queries batch by batch."""
    return submission(ctx, ctx.cfg.llm.gen_batch_size)


def passage_truncator(cfg: LLMConfig):
    """`LLM.truncate` of `cfg`'s backend without loading its model: its tokenizer, or words for `fake`."""
    if cfg.backend == "fake":
        return LLM().truncate
    from ..llm.tokens import PromptTokens, load_tokenizer

    # The tokenizer each backend loads: llm.tokenizer, else the model's own (its GGUF file included).
    return PromptTokens(load_tokenizer(cfg.tokenizer or cfg.model, None if cfg.tokenizer else cfg.gguf_file)).truncate


def prepared_corpus(cfg: BuildConfig, truncate) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The corpus as every stage sees it: read, empty passages skipped, cut to `corpus.max_passage_tokens`."""
    empty: list[str] = []
    documents: dict[str, Any] = {}  # filled only when corpus.path is a folder or glob of documents
    corpus = load_corpus(cfg.corpus, skipped=empty, tokenizer=cfg.retrieve.embedder, report=documents)
    if empty:
        log.warning("skipped %d corpus passage(s) with empty text, e.g. %s", len(empty), ", ".join(empty[:5]))
    truncated = truncate_corpus(corpus, cfg.corpus.max_passage_tokens, truncate)
    return corpus, {"corpus_passages": len(corpus), "empty_passages_skipped": len(empty),
                    "empty_passages_first": empty[:5], "truncated_passages": truncated,
                    **({"documents": documents} if documents else {})}


def generate(ctx: Context) -> dict[str, Any]:
    cfg, llm = ctx.cfg, ctx.llm()
    corpus, corpus_stats = prepared_corpus(cfg, llm.truncate)
    if cfg.shard.count is not None:  # a shard must not pay for calls it cannot retrieve for
        from ..index import check_index

        check_index(cfg, corpus)
    write_jsonl(ctx.stage_file("corpus"), corpus)
    by_id = {r["id"]: r for r in corpus}
    size = seed_batch(ctx)
    given, given_stats = _given_queries(cfg, llm.truncate)
    num_seeds = 0 if cfg.corpus.queries and cfg.corpus.num_seeds is None else cfg.corpus.num_seeds
    # Sampled over the whole corpus first, so the shards' seeds together are the unsharded build's.
    seeds, shard = shard_seeds(sample_seeds(corpus, num_seeds, cfg.corpus.seed), size, cfg.shard)
    if shard and not seeds:
        log.warning("shard %d of %d has no seeds: %d seeds make only %d batches of %d", shard["index"], shard["count"],
                    shard["total_seeds"], -(-shard["total_seeds"] // size), size)
    prompt = load_prompt(cfg.generate.prompt, ("instruction", "examples", "task_types"))
    gp = GenerationPrompt(prompt, cfg.generate.shots, cfg.generate.task_types)
    if seeds:  # a build of given queries alone generates nothing: no generation prompt in its manifest
        ctx.prompt_versions["generate"] = gp.prompt.version
    rows, reasons = [], Counter()
    bar = tqdm(total=len(seeds), desc="generate", unit="seed")
    for start in range(0, len(seeds), size):
        batch = seeds[start : start + size]
        reqs = [gp.request(s, passage_text(by_id[s]["title"], by_id[s]["text"]), cfg.corpus.seed) for s in batch]
        params = [cfg.llm.max_new_tokens, cfg.llm.temperature, cfg.llm.stop]
        keys = [cache_key(llm.model_id, gp.prompt.version, "generate", [r.prompt, r.prefix, params]) for r, _ in reqs]
        outs = cached(ctx, "generate", keys, lambda idx: llm.generate([reqs[i][0] for i in idx]))
        for seed_id, (req, task_type), out in zip(batch, reqs, outs):
            rows.append(_parsed_row(gp, seed_id, req.prefix, out, task_type, by_id[seed_id], ctx, reasons))
        bar.update(len(batch))
    bar.close()
    rows += given
    write_jsonl(ctx.stage_file("generate"), rows)
    failures = sum(reasons.values())
    return {
        **corpus_stats, **given_stats, "seeds": len(seeds),
        "queries": sum(r["query"] is not None for r in rows), "parse_failures": dict(reasons),
        "parse_failure_rate": failures / max(1, len(seeds)), "fallback_used": sum(r["fallback"] for r in rows),
        "shard": shard,
    }


def _given_queries(cfg: BuildConfig, truncate) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of `corpus.queries` (corpus/queries.py), after the generated ones; none without it."""
    if not cfg.corpus.queries:
        return [], {}
    if cfg.shard.count is not None:
        raise UserError("corpus.queries cannot be sharded yet (shard.count is set): build the queries in one process, "
                        "or split the query file and build each part into its own output_dir")
    rows, stats = load_queries(cfg.corpus, truncate)
    if stats["given_queries_cut"]:
        log.warning("cut %d of %d given queries to corpus.max_query_tokens=%d", stats["given_queries_cut"],
                    len(rows), cfg.corpus.max_query_tokens)
    return rows, stats


def _parsed_row(gp, seed_id, prefix, out, task_type, passage, ctx, reasons) -> dict[str, Any]:
    if isinstance(out, CallFailed):  # not cached: the next run asks again
        reasons["llm_error"] += 1
        return {"seed_id": seed_id, "task_type": task_type, "task": None, "query": None,
                "raw": None, "failure": "llm_error", "fallback": False}
    task, query, failure = gp.parse(prefix, out, task_type, passage["text"])
    fallback = False
    if failure:
        reasons[failure] += 1
        if ctx.cfg.generate.fallback == "extractive":
            task, query, task_type, fallback = EXTRACTIVE_TASK, extractive_query(passage["text"]), "extractive", True
    return {"seed_id": seed_id, "task_type": task_type, "task": task, "query": query,
            "raw": out, "failure": failure, "fallback": fallback}


def retrieve(ctx: Context) -> dict[str, Any]:
    from ..index import candidates_with_seed, embed, embedder_format, load_embedder, open_index, query_texts

    cfg, rc = ctx.cfg, ctx.cfg.retrieve
    corpus = read_jsonl(ctx.stage_file("corpus"))
    gens = read_jsonl(ctx.stage_file("generate"))
    encoder, fmt = load_embedder(rc, seed=cfg.corpus.seed), embedder_format(rc)
    log.info("retrieve: %s reads its inputs as %s", rc.embedder, fmt.describe())
    # A shard only reads the shared index (built by --stage embed); an unsharded build makes its own if needed.
    index, summary = open_index(cfg, corpus, encoder=encoder if cfg.shard.count is None else None)
    k_rt = cfg.filter.round_trip_top_k
    rows, added, dropped, queries_in, size = [], 0, 0, 0, seed_batch(ctx)
    bar = tqdm(total=len(gens), desc="retrieve", unit="seed")
    # One generate batch at a time: its queries are embedded and searched together exactly as in the
    # unsharded build (shards hold whole batches), so no float depends on how the seeds were sharded.
    for start in range(0, len(gens), size):
        block = gens[start : start + size]
        batch = [g for g in block if g["query"] is not None]
        bar.update(len(block))
        if not batch:
            continue
        queries_in += len(batch)
        texts = query_texts(batch, rc, fmt)  # as the embedder reads them (index.embedder_format)
        sims, idx = index.search(embed(encoder, texts, rc, show_progress=False), max(rc.top_n, k_rt or 0))
        for g, hits, hit_scores in zip(batch, idx, sims):
            ranked = [corpus[i]["id"] for i in hits if i >= 0]
            if g["seed_id"] is None:  # a given query: no seed to find or to add, no round trip to make
                cands, seed_rank = ranked[: rc.top_n], None
            else:
                cands, seed_rank = candidates_with_seed(ranked, g["seed_id"], rc.top_n)
                if k_rt is not None and (seed_rank is None or seed_rank > k_rt):
                    dropped += 1
                    continue
                added += seed_rank is None or seed_rank > rc.top_n
            by_hit = {corpus[i]["id"]: float(s) for i, s in zip(hits, hit_scores) if i >= 0}
            rows.append({**{k: g[k] for k in ("seed_id", "query_id", "task_type", "task", "query") if k in g},
                         "candidates": cands, "seed_retrieval_rank": seed_rank,
                         # the embedder's score of each candidate; None for a seed it did not retrieve
                         "scores": [by_hit.get(c) for c in cands]})
    bar.close()
    write_jsonl(ctx.stage_file("retrieve"), rows)
    ctx.models["embedder"] = rc.embedder
    return {"queries_in": queries_in, "queries": len(rows), "seed_added": added,
            "round_trip": {"top_k": k_rt, "kept": len(rows), "dropped": dropped}, "index": summary}


def choose(row: dict[str, Any], positive: str, negative: str, seed: int, margin: float = 0.95,
           teacher_margin: float | None = None) -> tuple[str, str | None]:
    """(positive id, negative id or None) from a re-ranked row; the seed is never a negative.

    `margin` (negative `margin`, positive-aware mining as in NV-Retriever's TopK-PercPos): the negative is
    the candidate the embedder scores highest among those it scores below `margin` times the positive's
    score, so a candidate nearly as close as the positive, a likely false negative, is never chosen;
    None when no candidate is that far below it. `teacher_margin` (nats): a candidate whose QL is within it
    of the positive's is never the negative either, whatever the rule (the teacher's false negatives)."""
    cands = [c["id"] for c in row["candidates"]]  # fused order, best first
    if positive == "llm_top1":
        pos = cands[0]
    elif positive == "ql_top1":  # r_ql == 1 (ties already broken by retrieval order)
        pos = min(row["candidates"], key=lambda c: c["r_ql"])["id"]
    elif row["seed_id"] is None:  # `seed` for a given query, which has none: the embedder's own top 1
        pos = min(row["candidates"], key=lambda c: c["retrieval_rank"])["id"]
    else:
        pos = row["seed_id"]
    if negative == "margin" and "retrieval_score" not in row["candidates"][0]:
        raise UserError("select.negative: margin needs the embedder's candidate scores, which this build's "
                        "stages/rerank.jsonl does not hold (built before they were kept); build it again "
                        "(--cache.path=<that build>/llm_cache.sqlite answers its LLM calls)")
    others = [c for c in cands if c not in (pos, row["seed_id"])]
    if teacher_margin is not None:
        ql = {c["id"]: c["ql"] for c in row["candidates"]}
        others = [c for c in others if ql[c] < ql[pos] - teacher_margin]
    if negative == "none" or not others:
        return pos, None
    if negative == "lowest":
        return pos, others[-1]
    if negative == "margin":
        score = {c["id"]: c.get("retrieval_score") for c in row["candidates"]}
        if score[pos] is None:  # a seed the embedder did not retrieve: no score to hold the others below
            return pos, others[-1]
        below = [c for c in others if score[c] is not None and score[c] < margin * score[pos]]
        return pos, max(below, key=lambda c: score[c]) if below else None
    return pos, random.Random(f"{seed}:neg:{row['seed_id']}").choice(others)


def ql_lead(row: dict[str, Any], pos: str) -> float:
    """How many nats the positive's QL score leads the best other candidate's (negative where another leads;
    infinite for a list of one, or a seed positive that QL did not score)."""
    ql = {c["id"]: c.get("ql") for c in row["candidates"]}
    others = [v for c, v in ql.items() if c != pos and v is not None]
    if ql.get(pos) is None or not others:
        return float("inf")
    return ql[pos] - max(others)


def select(ctx: Context) -> dict[str, Any]:
    """Positive/negative per re-ranked query; held-out seeds go to `stages/test.jsonl` (split.py), not training."""
    cfg = ctx.cfg
    margin, teacher = cfg.select.negative_margin, cfg.select.teacher_margin
    if isinstance(margin, bool) or not 0 < margin <= 1:
        raise UserError(f"select.negative_margin={margin!r} must be in (0, 1]: the fraction of the positive's "
                        f"embedder score a negative must stay below (0.95 is NV-Retriever's)")
    if teacher is not None and (isinstance(teacher, bool) or teacher < 0):
        raise UserError(f"select.teacher_margin={teacher!r} must be >= 0 nats of QL score, or null to turn it off")
    lead = cfg.select.positive_margin
    if lead is not None and (isinstance(lead, bool) or lead < 0):
        raise UserError(f"select.positive_margin={lead!r} must be >= 0 nats of QL score, or null to keep every record")
    rows = read_jsonl(ctx.stage_file("rerank"))
    everything, avoided = [], 0
    for row in tqdm(rows, desc="select", unit="query"):
        pos, neg = choose(row, cfg.select.positive, cfg.select.negative, cfg.corpus.seed, margin, teacher)
        if teacher is not None:  # how often the teacher overruled the rule: a false negative avoided
            avoided += choose(row, cfg.select.positive, cfg.select.negative, cfg.corpus.seed, margin)[1] != neg
        given = {"query_id": row["query_id"]} if row.get("query_id") is not None else {}
        everything.append({"seed_id": row["seed_id"], **given, "positive_id": pos, "negative_id": neg})
    out, test, held_out = split.split(rows, everything, cfg.test_split)
    unsure = 0
    if lead is not None:  # after the split, so that the held-out queries stay those of the unfiltered build
        leads = {id(sel): ql_lead(row, sel["positive_id"]) for row, sel in zip(rows, everything)}
        sure = [o for o in out if leads[id(o)] >= lead]
        out, unsure = sure, len(out) - len(sure)
    write_jsonl(ctx.stage_file("select"), out)
    write_jsonl(ctx.stage_file("test"), test)
    kept = {split.row_key(o) for o in out}
    # the rates describe the generated training records: a given query has no seed to differ from
    rows = [r for r in rows if split.row_key(r) in kept and r["seed_id"] is not None]
    generated = [o for o in out if o["seed_id"] is not None]
    changed = sum(o["positive_id"] != o["seed_id"] for o in generated)
    top1 = sum(r["candidates"][0]["id"] != r["seed_id"] for r in rows)
    return {"records": len(out), "positive": cfg.select.positive, "negative": cfg.select.negative,
            "positive_ne_seed": changed, "llm_top1_ne_seed": top1,
            "positive_ne_seed_rate": changed / max(1, len(generated)), "llm_top1_ne_seed_rate": top1 / max(1, len(rows)),
            "given_records": len(out) - len(generated), "teacher_margin_changed_negative": avoided,
            "positive_margin_dropped": unsure,
            "with_negative": sum(o["negative_id"] is not None for o in out), "test_split": held_out}
