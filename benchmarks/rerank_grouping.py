"""Re-rank pairs/s and prefix-cache hit rate, passage-grouped (`rerank.group_by_passage: true`) against
query order (`false`), side by side in one run: vLLM in-process, the openai backend against a local
vLLM server (127.0.0.1) on the same weights, and the transformers backend (`--engines transformers`),
whose grouped path runs each shared prefix once (hit rate: prompt tokens it did not run again).

The build is one where passages recur: the first `--limit` passages of the config's corpus, `--seeds`
of them as seeds, `retrieve.top_n` 20, so each passage is a candidate of about 20 x seeds / limit
queries. Queries come from the fake LLM (passage fragments; generation is not what is measured) and
retrieval from the config's embedder; both are done once, then every (engine, order) re-ranks the
same `retrieve.jsonl` from an empty LLM cache and an empty prefix cache, and selects. Printed: pairs/s,
the prefix-cache hit rate (prompt tokens vLLM read from its cache: `num_cached_tokens` in-process,
`vllm:prefix_cache_hits` / `queries` from the server's /metrics), the largest score difference
between the two orders and whether `rerank.jsonl` and `select.jsonl` are byte-identical.

    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python benchmarks/rerank_grouping.py
    .venv-vllm/bin/python benchmarks/rerank_grouping.py --engines vllm --limit 60 --seeds 20 --mode separate
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import yaml
import platform
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # the server's /reset_prefix_cache, so each order starts cold


def prepare(args, out: Path):
    """Corpus, fake queries and top-20 retrieval, once; the config every re-rank run starts from."""
    from data_builders.config import load_config
    from data_builders.fret.runner import run

    sets = {"corpus.limit": args.limit, "corpus.num_seeds": args.seeds, "retrieve.top_n": args.top_n,
            "rerank.mode": args.mode, "filter.round_trip_top_k": None, "llm.submit_size": args.submit_size,
            **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}}
    # generate-v1: the fake LLM's answer parses there, so each query is its own passage fragment
    cfg = load_config(args.config, {**sets, "output_dir": str(out / "prep"), "llm.backend": "fake", "generate.prompt": "generate-v1"})
    run(cfg, ["generate", "retrieve"], force=True)
    cfg = load_config(args.config, sets)
    if not args.compile:  # torch.compile warm-up takes minutes on 2 shared cores; both orders run the same graph
        cfg.llm.engine_kwargs = {**cfg.llm.engine_kwargs, "enforce_eager": True}
    return cfg, out / "prep" / "stages"


def rerank_once(cfg, llm, prep: Path, out: Path, grouped: bool) -> dict:
    """The rerank and select stages on a copy of the prepared stages, from an empty LLM cache."""
    from data_builders.fret import stages
    from data_builders.fret.context import Context

    shutil.rmtree(out, ignore_errors=True)
    (out / "stages").mkdir(parents=True)
    for name in ("corpus", "generate", "retrieve"):
        shutil.copy(prep / f"{name}.jsonl", out / "stages" / f"{name}.jsonl")
    cfg.output_dir, cfg.rerank.group_by_passage = str(out), grouped
    ctx = Context(cfg, llm=llm)
    start = time.perf_counter()
    stats = stages.rerank(ctx)
    wall = time.perf_counter() - start
    stages.select(ctx)
    return {"pairs": stats["scored_pairs"], "rerank_s": round(wall, 2), "pairs_per_s": round(stats["scored_pairs"] / wall, 3),
            "llm_calls": ctx.counter.llm_calls["rerank"]}


def _server_counters(root: str) -> dict[str, float]:
    import httpx

    found = {}
    for line in httpx.get(f"{root}/metrics", timeout=10).text.splitlines():
        for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
            if line.startswith(name):
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


# (label, rerank.group_by_passage, llm.score_from_prefix_cache): QL requests read vLLM's prefix cache
# in-process (a server cannot be asked to for requests with prompt log-probs); transformers shares a
# prefix's KV cache itself.
VARIANTS = {"vllm": [("query order, no cache reads (before)", False, False), ("query order, cache reads", False, True),
                     ("passage-grouped, cache reads", True, True)],
            "openai": [("query order (before)", False, None), ("passage-grouped", True, None)],
            "transformers": [("query order (before)", False, False), ("passage-grouped, shared prefixes", True, True)]}


def engine_runs(engine: str, cfg, prep: Path, out: Path) -> list[dict]:
    """Each variant of `engine` from a cold prefix cache, one after the other, on one engine or server."""
    import httpx

    from data_builders.llm import build_llm

    server, rows = None, []
    if engine == "openai":
        from data_builders.llm.gguf import ensure_hf_folder
        from data_builders.llm.server import VLLMServer

        folder = ensure_hf_folder(cfg.llm.model, cfg.llm.gguf_file, "float32")
        eager = ["--enforce-eager"] if cfg.llm.engine_kwargs.get("enforce_eager") else []
        server = VLLMServer(folder, "bench", out, max_model_len=2048, extra=eager).start()
        cfg.llm.base_url, cfg.llm.model, cfg.llm.tokenizer, cfg.llm.gguf_file = server.url, "bench", str(folder), None
    cfg.llm.backend = engine
    try:
        llm = build_llm(cfg.llm, seed=cfg.corpus.seed)
        for i, (label, grouped, reads) in enumerate(VARIANTS[engine]):
            if engine == "vllm":
                llm.read_cache = reads
                llm.engine.reset_prefix_cache()
            if engine == "transformers":  # llm.cfg is cfg.llm: the stage's schedule and the backend both read it
                cfg.llm.score_from_prefix_cache = reads
            if server is None:
                before = dict(llm.cache_stats)
            else:
                root = server.url.removesuffix("/v1")
                httpx.post(f"{root}/reset_prefix_cache", timeout=30).raise_for_status()
                before = _server_counters(root)
            row = {"engine": engine, "variant": label, **rerank_once(cfg, llm, prep, out / f"{engine}-{i}", grouped)}
            if server is None:
                delta = {k: v - before.get(k, 0) for k, v in llm.cache_stats.items()}
                row["hit_rate"] = round(delta["cached_tokens"] / max(1, delta["prompt_tokens"]), 4)
                row["prompt_tokens"], row["cached_tokens"] = delta["prompt_tokens"], delta["cached_tokens"]
                row["recomputed"] = delta.get("recomputed", 0)
            else:
                after = _server_counters(root)
                hits, queries = (after[k] - before.get(k, 0) for k in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"))
                row["hit_rate"] = round(hits / max(1, queries), 4)
            rows.append(row)
    finally:
        if server is not None:
            server.stop()
    return rows


def compare(a: Path, b: Path) -> dict:
    """Largest |score difference| between two rerank.jsonl files, and whether the stage files are identical."""
    delta = 0.0
    for ra, rb in zip(*(open(p / "stages" / "rerank.jsonl") for p in (a, b)), strict=True):
        ca, cb = (sorted(json.loads(r)["candidates"], key=lambda c: c["id"]) for r in (ra, rb))
        delta = max([delta] + [abs(x[k] - y[k]) for x, y in zip(ca, cb) for k in ("ql", "rc")])
    same = {n: (a / "stages" / n).read_bytes() == (b / "stages" / n).read_bytes() for n in ("rerank.jsonl", "select.jsonl")}
    return {"max_abs_delta": delta, **{f"{n}_identical": v for n, v in same.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "data" / "fret_wiki.yaml"))
    ap.add_argument("--engines", default="vllm,openai")
    ap.add_argument("--limit", type=int, default=90, help="passages searched")
    ap.add_argument("--seeds", type=int, default=30, help="queries (seeds) among them")
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--mode", default="joint", choices=["joint", "separate"])
    ap.add_argument("--submit-size", type=int, default=100,
                    help="llm.submit_size: small, so that as at scale a passage's queries span several submissions")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config overrides")
    ap.add_argument("--compile", action="store_true", help="let vLLM compile the model (default: enforce_eager)")
    ap.add_argument("--out", default="outputs/bench_rerank_grouping")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    cfg, prep = prepare(args, out)
    rows = []
    for engine in args.engines.split(","):
        runs = engine_runs(engine, copy.deepcopy(cfg), prep, out)
        for i, run in enumerate(runs[1:], start=1):  # each against the first, the order before this change
            run.update(compare(out / f"{engine}-0", out / f"{engine}-{i}"), speedup=round(run["pairs_per_s"] / runs[0]["pairs_per_s"], 2))
        rows += runs
    retrieved = [json.loads(line)["candidates"] for line in open(prep / "retrieve.jsonl")]
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "mode": args.mode,
                      "limit": args.limit, "seeds": args.seeds, "top_n": args.top_n, "queries": len(retrieved),
                      "distinct_passages": len({c for cands in retrieved for c in cands}), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
