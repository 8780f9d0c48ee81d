"""FRet builder throughput per LLM engine, side by side in one run: transformers (in-process), vllm
(in-process) and openai (against a local vLLM server started here, on the same weights).

Each engine runs the whole build (every stage, a fresh folder and an empty cache), as
`gecko build fret --config X --llm.backend=ENGINE` does. Printed per engine: start-up seconds (model
load, GGUF conversion for vLLM, server start), LLM calls/s of generate, scored pairs/s of rerank, the
whole build's seconds, the parse-failure rate and the record count, each with its ratio to transformers.

Run it where vLLM is importable (`make test-vllm` builds `.venv-vllm`):

    .venv-vllm/bin/python benchmarks/builder.py --config configs/data/fret_scifact_demo.yaml
    .venv-vllm/bin/python benchmarks/builder.py --engines transformers,vllm --set corpus.num_seeds=80

`ENGINE:query-order` runs ENGINE with `rerank.group_by_passage: false` (re-ranking in query order, as
before the passage-grouped schedule), so `--engines vllm,vllm:query-order` compares the two. An
engine that cannot start here (vLLM not installed, no server) is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_engine(engine: str, cfg, log_dir: Path) -> dict:
    """One whole build (all stages, fresh folder and cache) with `engine`; its figures."""
    from data_builders.fret.runner import run

    out = Path(cfg.output_dir)
    shutil.rmtree(out, ignore_errors=True)
    server, server_s = None, 0.0
    if engine == "openai":  # a local server on the same weights, started (and timed) here
        from data_builders.llm.gguf import ensure_hf_folder
        from data_builders.llm.server import VLLMServer
        from gecko_lightning.paths import resolve_path

        start = time.perf_counter()
        folder = ensure_hf_folder(cfg.llm.model, cfg.llm.gguf_file, cfg.llm.dtype) if cfg.llm.gguf_file else resolve_path(cfg.llm.model)
        server = VLLMServer(folder, "bench", log_dir, max_model_len=cfg.llm.max_model_len or 2048).start()
        server_s = time.perf_counter() - start
        cfg.llm.base_url, cfg.llm.model, cfg.llm.tokenizer, cfg.llm.gguf_file = server.url, "bench", str(folder), None
    try:
        start = time.perf_counter()
        stats = run(cfg, force=True)
        total = time.perf_counter() - start + server_s
    finally:
        if server is not None:
            server.stop()
        gc.collect()
    gen, rer = stats["generate"], stats["rerank"]
    return {
        "engine": engine, "startup_s": round(gen["llm_load_s"] + server_s, 1), "total_s": round(total, 1),
        "generate_calls": gen["llm_calls"], "generate_s": gen["wall_s"],
        "generate_calls_per_s": round(gen["llm_calls"] / gen["wall_s"], 3),
        "parse_failure_rate": gen["parse_failure_rate"], "queries": gen["queries"],
        "rerank_calls": rer["llm_calls"], "rerank_s": rer["wall_s"], "scored_pairs": rer["scored_pairs"],
        "pairs_per_s": round(rer["scored_pairs"] / rer["wall_s"], 3), "records": stats["export"]["records"],
    }


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["engine"] == "transformers"), rows[0])
    lines = ["| engine | start-up s | generate calls/s | ratio | rerank pairs/s | ratio | whole build s | ratio "
             "| parse failures | records |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['startup_s']:.0f} | {r['generate_calls_per_s']:.2f} | "
            f"{r['generate_calls_per_s'] / base['generate_calls_per_s']:.2f}x | {r['pairs_per_s']:.2f} | "
            f"{r['pairs_per_s'] / base['pairs_per_s']:.2f}x | {r['total_s']:.0f} | {base['total_s'] / r['total_s']:.2f}x | "
            f"{r['parse_failure_rate']:.1%} | {r['records']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/data/fret_scifact_demo.yaml")
    ap.add_argument("--engines", default="transformers,vllm,openai")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. corpus.num_seeds=80")
    ap.add_argument("--out", default="outputs/bench_builder")
    args = ap.parse_args()

    from data_builders.config import load_config

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for spec in args.engines.split(","):
        engine, _, order = spec.partition(":")
        sets = {**overrides, "llm.backend": engine, "output_dir": str(out / spec.replace(":", "-"))}
        if order:
            sets["rerank.group_by_passage"] = order != "query-order"
        try:
            rows.append({**run_engine(engine, load_config(args.config, sets), out), "engine": spec})
        except Exception as e:  # noqa: BLE001 - one engine that cannot run must not cost the others' figures
            skipped.append({"engine": spec, "skipped": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]})
            print(json.dumps(skipped[-1]), flush=True)
            continue
        print(json.dumps(rows[-1]), flush=True)
    if not rows:
        raise SystemExit(f"no engine ran: {skipped}")
    cpu = platform.processor() or platform.machine()
    print(f"\n{args.config}, {overrides or 'no overrides'}; {os.cpu_count()} cores ({cpu}), "
          f"avx512f={'avx512f' in Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').is_file() else '?'}\n")
    print(table(rows))
    (out / "results.json").write_text(json.dumps(rows + skipped, indent=1) + "\n")
    (out / "builder.md").write_text(table(rows) + "".join(f"\n\n{r['engine']}: skipped, {r['skipped']}" for r in skipped) + "\n")


if __name__ == "__main__":
    main()
