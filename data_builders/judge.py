"""`gecko eval rerank`: the build's LLM re-ranker scored against human relevance labels (BEIR qrels).

Gecko's claim is that the LLM picks a better positive than retrieval alone. The paper checks the
re-ranker directly: RRF(QL, RC) over the top 100 lifts BEIR nDCG@10 from 51.3 to 56.8. This runs the
same check for one build config: the build's embedder retrieves each BEIR query's top `retrieve.top_n`,
the build's LLM and prompts score every (query, candidate) pair through `fret.rerank.score_pairs` (so the
calls share the build's cache keys and cache file), and four orders of the same N candidates are
scored against the qrels:

    embedder   retrieval order
    ql, rc     one LLM score alone (ties keep retrieval order)
    rrf        1/r_QL + 1/r_RC, the order the build takes its positive from (`fret.rerank._fuse`)

Re-ranking only permutes the top N, so recall@N is the same for all four orders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from gecko_lightning.data.schema import atomic_write
from gecko_lightning.errors import UserError, debug
from gecko_lightning.evaluation.loaders import BeirSet, load_beir
from gecko_lightning.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from gecko_lightning.evaluation.prompts import PromptMap

from .config import BuildConfig
from .corpus import truncate_corpus
from .llm import LLM, BackendError, CallFailed
from .fret.context import Context
from .prompts import load_prompt, passage_text
from .index import doc_texts, embed, embedder_format, load_embedder, query_texts, search
from .fret.rerank import _fuse, _ranks, rerank_chunk, rerank_prompts, score_pairs

log = logging.getLogger(__name__)
ORDERS = ("embedder", "ql", "rc", "rrf")
GENERIC_TASK = "Given a query, retrieve relevant documents"


def default_task(cfg: BuildConfig, dataset: str) -> str:
    """The task string BEIR queries get (they have no generated one), in the words the build's LLM saw.

    The dataset's task type comes from configs/eval/gecko_prompts.yaml (SciFact -> fact checking,
    unknown names -> its `retrieval_default`), and its description from the `task_types` of the
    build's generate prompt ("Given a claim, retrieve a passage that supports or refutes the claim");
    GENERIC_TASK when that prompt has no such type.
    """
    task_type = PromptMap.load().retrieval_task(dataset)
    try:
        described = load_prompt(cfg.generate.prompt).spec.get("task_types") or {}
    except FileNotFoundError:
        described = {}
    return described.get(task_type, GENERIC_TASK) if isinstance(described, dict) else GENERIC_TASK


def sample_queries(data: BeirSet, max_queries: int | None, seed: int) -> list[str]:
    """Ids of the queries with a relevant document (grade > 0), in file order; `max_queries` of them drawn with `seed`."""
    judged = [q for q in data.queries if any(g > 0 for g in data.qrels[q].values())]
    if max_queries is None or max_queries >= len(judged):
        return judged
    keep = set(random.Random(seed).sample(judged, max_queries))
    return [q for q in judged if q in keep]


def rerank_orders(ids: Sequence[str], ql: Sequence[float], rc: Sequence[float]) -> dict[str, list[str]]:
    """The N candidates (given in retrieval order) in each of ORDERS, best first."""
    def by(ranks: list[int]) -> list[str]:
        return [ids[i] for i in sorted(range(len(ids)), key=ranks.__getitem__)]

    return {"embedder": list(ids), "ql": by(_ranks(list(ql))), "rc": by(_ranks(list(rc))),
            "rrf": [c["id"] for c in _fuse(list(ids), list(ql), list(rc))]}


def order_metrics(runs: Sequence[Mapping[str, Sequence[str]]], qrels: Sequence[Mapping[str, int]], n: int) -> dict[str, dict[str, float]]:
    """Mean nDCG@10, MRR@10 and recall@N of each order over the queries, 0-100 like `gecko eval`."""
    metrics = {"ndcg_at_10": (ndcg_at_k, 10), "mrr_at_10": (mrr_at_k, 10), "recall_at_n": (recall_at_k, n)}
    return {order: {name: round(100 * float(np.mean([fn(run[order], rel, k) for run, rel in zip(runs, qrels)])), 4)
                    for name, (fn, k) in metrics.items()} for order in ORDERS}


def positive_precision(runs: Sequence[Mapping[str, Sequence[str]]], qrels: Sequence[Mapping[str, int]]) -> dict[str, Any]:
    """Where the LLM's top 1 (RRF) is not the embedder's top 1: how often each is relevant (0-100; None when never).

    `by_order` gives the same for each LLM order (QL alone, RC alone, RRF): which score, used alone
    as the positive's judge, overrules the embedder well.
    """

    def one(order: str) -> dict[str, Any]:
        differ = [(run, rel) for run, rel in zip(runs, qrels) if run[order][:1] != run["embedder"][:1]]

        def relevant(o: str) -> float | None:
            hits = sum(rel.get(run[o][0], 0) > 0 for run, rel in differ)
            return round(100 * hits / len(differ), 4) if differ else None

        return {"queries": len(differ), "llm_top1_relevant": relevant(order), "embedder_top1_relevant": relevant("embedder")}

    return {**one("rrf"), "by_order": {order: one(order) for order in ORDERS[1:]}}


def _retrieve(cfg: BuildConfig, data: BeirSet, qids: list[str], task: str, llm: LLM) -> tuple[dict[str, dict], list[list[str]], int]:
    """(truncated passages by id, top-N ids per query, passages cut), as the build's generate + retrieve stages do it."""
    rc = cfg.retrieve
    docs = [{"id": i, "title": title, "text": text} for i, (title, text) in data.corpus.items()]
    cut = truncate_corpus(tqdm(docs, desc="truncate", unit="passage"), cfg.corpus.max_passage_tokens, llm.truncate)
    encoder, fmt = load_embedder(rc, seed=cfg.corpus.seed), embedder_format(rc)  # as the build's retrieval reads
    log.info("%s reads its inputs as %s", rc.embedder, fmt.describe())
    doc_emb = _corpus_embeddings(encoder, doc_texts(docs, rc, fmt), cfg, Path(cfg.output_dir) / "embeddings")
    query_emb = embed(encoder, query_texts([{"task": task, "query": data.queries[q]} for q in qids], rc, fmt), rc)
    _, idx = search(query_emb, doc_emb, rc.top_n, rc)
    return {d["id"]: d for d in docs}, [[docs[i]["id"] for i in hits if i >= 0] for hits in idx], cut


def _corpus_embeddings(encoder, texts: list[str], cfg: BuildConfig, folder: Path) -> np.ndarray:
    """The corpus matrix, embedded once per (embedder, settings, texts): re-runs and other judges reuse it.

    The file name is a sha256 of everything the vectors depend on, so a changed corpus, format,
    truncation or embedder never reads a stale matrix.
    """
    rc = cfg.retrieve
    key = hashlib.sha256(json.dumps([rc.embedder, rc.random_init, cfg.corpus.seed if rc.random_init else None,
                                     rc.max_length, texts], ensure_ascii=False).encode("utf-8")).hexdigest()[:24]
    path = folder / f"corpus-{key}.npy"
    if path.is_file():
        return np.load(path)
    emb = embed(encoder, texts, rc)
    folder.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, emb)

    atomic_write(path, write)
    return emb


def _score(ctx: Context, llm: LLM, rows: list[dict[str, Any]], by_id: dict[str, dict]) -> list[tuple[list, list] | None]:
    """(QL scores, RC scores) per row's candidates, None for a row with a failed call; chunked like the rerank stage."""
    prompts, per_chunk, out = rerank_prompts(ctx), rerank_chunk(ctx), []
    bar = tqdm(total=len(rows), desc="rerank", unit="query")
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        pairs = [(row, passage_text(by_id[c]["title"], by_id[c]["text"])) for row in chunk for c in row["candidates"]]
        scores = iter(score_pairs(ctx, llm, prompts, pairs))
        for row in chunk:
            mine = [next(scores) for _ in row["candidates"]]
            failed = any(isinstance(v, CallFailed) for pair in mine for v in pair)
            out.append(None if failed else ([q for q, _ in mine], [r for _, r in mine]))
        bar.update(len(chunk))
    bar.close()
    return out


def evaluate_rerank(
    cfg: BuildConfig,
    beir_dir: str | Path,
    split: str = "test",
    max_queries: int | None = None,
    task: str | None = None,
    llm: LLM | None = None,
) -> dict[str, Any]:
    """Score the build's re-ranker on a BEIR folder; the result is what `--output` writes.

    `task`: the task string of every query (default: `default_task`). `llm`: an already loaded
    backend instead of `cfg.llm`. LLM calls go through the build's cache (`cache.path`, default
    `<output_dir>/llm_cache.sqlite`), so a re-run makes none.
    """
    if max_queries is not None and max_queries < 1:
        raise UserError(f"--max_queries={max_queries}: give a positive number of queries, or leave it out to evaluate all")
    if cfg.retrieve.top_n < 1:
        raise UserError(f"--retrieve.top_n={cfg.retrieve.top_n}: the re-ranker needs at least 1 candidate per query (the paper used 100)")
    start = time.perf_counter()
    data = load_beir(beir_dir, split)  # bad folders fail here, before any model loads
    qids = sample_queries(data, max_queries, cfg.corpus.seed)
    task = task or default_task(cfg, Path(beir_dir).resolve().name)
    ctx = Context(cfg, llm)
    try:
        llm = ctx.llm()
        by_id, candidates, cut = _retrieve(cfg, data, qids, task, llm)
        rows = [{"qid": q, "task": task, "query": data.queries[q], "candidates": c} for q, c in zip(qids, candidates)]
        scored = _score(ctx, llm, rows, by_id)
    finally:
        ctx.cache.close()
    kept = [(row, s) for row, s in zip(rows, scored) if s is not None]
    if not kept:
        raise BackendError(f"no query of {beir_dir} could be scored: every one had a failed LLM call; run again to retry them")
    runs = [rerank_orders(row["candidates"], ql, rc) for row, (ql, rc) in kept]
    rels = [data.qrels[row["qid"]] for row, _ in kept]
    return {
        **order_metrics(runs, rels, cfg.retrieve.top_n),
        "positive_precision": positive_precision(runs, rels),
        "config": {"llm_backend": cfg.llm.backend, "llm_model": cfg.llm.model, "llm_model_id": llm.model_id,
                   "prompt_versions": dict(ctx.prompt_versions), "mode": cfg.rerank.mode, "top_n": cfg.retrieve.top_n,
                   "embedder": cfg.retrieve.embedder, "prompts": cfg.retrieve.prompts,
                   "embedder_format": embedder_format(cfg.retrieve).describe(), "query_format": cfg.retrieve.query_format,
                   "doc_format": cfg.retrieve.doc_format, "max_passage_tokens": cfg.corpus.max_passage_tokens,
                   "seed": cfg.corpus.seed},
        "beir": str(beir_dir), "split": split, "task": task, "queries": len(kept), "queries_failed": len(rows) - len(kept),
        "truncated_passages": cut, "cache": str(ctx.cache.path),
        "llm_calls": ctx.counter.llm_calls["rerank"], "cache_hits": ctx.counter.cache_hits["rerank"],
        "llm_failures": ctx.counter.llm_failures["rerank"], "wall_s": round(time.perf_counter() - start, 3),
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The four orders as rows of nDCG@10, MRR@10 and recall@N; for each LLM order, where its top 1
    overrules the embedder's: on how many queries, and how often each of the two top 1s is relevant."""
    n, pp = result["config"]["top_n"], result["positive_precision"]
    lines = [f"{'order':<9} {'nDCG@10':>8} {'MRR@10':>8} {f'recall@{n}':>10} {'overrules':>10} {'LLM rel %':>10} {'emb rel %':>10}"]
    for order in ORDERS:
        m, row = result[order], ""
        if order in pp.get("by_order", {}):
            o = pp["by_order"][order]
            fmt = lambda v: f"{v:>10.2f}" if v is not None else f"{'-':>10}"  # noqa: E731
            row = f" {o['queries']:>10} {fmt(o['llm_top1_relevant'])} {fmt(o['embedder_top1_relevant'])}"
        lines.append(f"{order:<9} {m['ndcg_at_10']:>8.2f} {m['mrr_at_10']:>8.2f} {m['recall_at_n']:>10.2f}{row}")
    lines.append(f"({result['queries']} queries; 'overrules': queries where that order's top 1 is not the embedder's)")
    return "\n".join(lines)


def _parser():
    """The build config's typed parser (every `--section.key`, `--config`, `--print_config`) plus this command's flags."""
    from .config import build_parser

    p = build_parser("gecko eval rerank", "Score a build config's LLM re-ranker against BEIR qrels (docs/eval.md, 'Judging the judge').")
    p.add_argument("--beir", required=True, metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
    p.add_argument("--split", default="test", help="qrels split to score (qrels/<split>.tsv).")
    p.add_argument("--max_queries", type=Optional[int], default=None,
                   help="Score this many judged queries, drawn with corpus.seed (default: all).")
    p.add_argument("--task", type=Optional[str], default=None,
                   help="Task string of every query (default: the dataset's task type, described as the generate prompt does).")
    p.add_argument("--output", required=True, help="JSON file for the scores and metadata (written atomically).")
    return p


def main(argv: list[str]) -> int:
    from .config import config_from

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = _parser().parse_args(argv)
        result = evaluate_rerank(config_from(args), args.beir, args.split, args.max_queries, args.task)
    except (ValueError, FileNotFoundError, BackendError) as e:
        if debug():
            raise
        print(f"gecko eval rerank: error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    atomic_write(Path(args.output), lambda tmp: tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n"))
    print(f"[gecko eval rerank] wrote {args.output}", file=sys.stderr)
    return 0
