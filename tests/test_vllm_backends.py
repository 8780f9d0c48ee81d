"""One config, any backend, the same FRet build: transformers, vllm (in-process) and openai against
a real vLLM server, on the same weights in float32.

For each model, three builds run the generate stage on their own; then the vllm and openai builds
re-rank the transformers build's retrieved candidates, so every backend scores the same
(query, passage) pairs. Checked: greedy queries identical for >= 90% of seeds, QL (mean log-prob
per query token) and RC (log-prob of a relevance label) within 0.02 nats on every pair, >= 50 pairs,
and the same chosen positive for >= 95% of queries.

Models: a tiny random Llama whose tokenizer adds BOS (about 1 minute), SmolLM2-135M-Instruct (no
BOS, chat template; about 4) and Gemma 3 270M (adds `<bos>`, base model, completion-style prompt;
about 8, most of it log-softmax over its 262k-token vocabulary). `make test-vllm` (and CI) runs the
first two; `GECKO_VLLM_MODELS=all make test-vllm` adds Gemma 3 (or name them: `tiny-bos,gemma3`).
Without vLLM these tests skip.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_builders.config import load_config
from data_builders.corpus import read_jsonl
from data_builders.fret.runner import Context, run_stage

from test_builder_resume import cached_calls
from vllm_support import (ONE_PROCESS_ENGINE, ONE_PROCESS_ENV, ONE_PROCESS_SERVER, VLLMServer, copy_stage_files,
                          gemma3_folder, require_vllm, smollm2_folder)

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
TOL = 0.02
# vLLM compiles its model graph with torch.compile at every engine or server start, which takes minutes
# on 2 CPU cores; eager mode runs the same kernels op by op and scores the same (docs/benchmarks.md).
# Each engine and server also runs in one process (tests/vllm_support.py, ONE_PROCESS_*).
EAGER = {"enforce_eager": True, **ONE_PROCESS_ENGINE}
EAGER_SERVER = ["--enforce-eager", *ONE_PROCESS_SERVER]


def _tiny_bos(tmp: Path) -> Path:
    from scripts.make_tiny_bos_llm import make

    return make(tmp / "tiny-bos-llm")


# (config file, overrides) per model; every build runs the same config with only llm.backend changed.
MODELS = {
    "tiny-bos": (_tiny_bos, "configs/data/fret_tiny.yaml", {
        "llm.chat_template": True, "llm.max_model_len": 1024, "retrieve.top_n": 5, "corpus.num_seeds": 12,
    }),
    "smollm2": (lambda tmp: smollm2_folder(), "configs/data/fret_scifact_demo.yaml", {
        "corpus.num_seeds": 14, "corpus.limit": 300, "filter.round_trip_top_k": None, "retrieve.top_n": 4,
        "generate.fallback": "extractive", "llm.max_model_len": 2048,
    }),
    "gemma3": (lambda tmp: gemma3_folder(), "configs/data/fret_scifact_demo.yaml", {
        "corpus.num_seeds": 14, "corpus.limit": 300, "filter.round_trip_top_k": None, "retrieve.top_n": 4,
        "generate.fallback": "extractive", "llm.chat_template": False, "llm.max_model_len": 2048,
    }),
}


def _models() -> list[str]:
    """`GECKO_VLLM_MODELS`: `all`, or model names separated by commas; default tiny-bos and smollm2."""
    names = os.environ.get("GECKO_VLLM_MODELS", "tiny-bos,smollm2")
    chosen = list(MODELS) if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ValueError(f"GECKO_VLLM_MODELS names {unknown}; choose from {sorted(MODELS)} or 'all'")
    return chosen


def _config(name: str, folder: Path, backend: str, out: Path, **extra):
    _, path, over = MODELS[name]
    over = {**over, "llm.backend": backend, "llm.model": str(folder), "llm.gguf_file": None, "llm.random_init": False,
            "llm.dtype": "float32", "llm.device": "cpu", "output_dir": str(out), "llm.engine_kwargs": EAGER, **extra}
    if name == "tiny-bos":
        over["retrieve.embedder"] = "configs/assets/tiny-bert"
    return load_config(REPO / path, over)


def _build(cfg, llm, reference: Path | None) -> None:
    """Generate with `llm`; then re-rank `reference`'s candidates (or its own, with no reference)."""
    ctx = Context(cfg, llm=llm)
    try:
        run_stage(ctx, "generate")
        if reference is None:
            run_stage(ctx, "retrieve")
        else:
            shutil.copyfile(ctx.stage_file("generate"), ctx.out / "own_generate.jsonl")
            copy_stage_files(reference, ctx.out, ("corpus", "generate", "retrieve"))
        run_stage(ctx, "rerank")
        run_stage(ctx, "select")
    finally:
        ctx.cache.close()


def _shutdown(llm) -> None:
    engine = getattr(llm, "engine", None)
    for obj in (engine, getattr(engine, "llm_engine", None)):
        if obj is not None and hasattr(obj, "shutdown"):
            obj.shutdown()
            break
    del engine
    gc.collect()


@pytest.fixture(scope="module", params=_models())
def builds(request, tmp_path_factory):
    """{backend: output folder} for one model, plus the timings of each build."""
    require_vllm()
    from data_builders.llm.hf import TransformersLLM
    from data_builders.llm.openai import OpenAILLM
    from data_builders.llm.vllm import VLLMLLM

    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    folder = MODELS[name][0](tmp)
    outs, seconds = {b: tmp / b for b in ("transformers", "vllm", "openai")}, {}

    start = time.perf_counter()
    cfg = _config(name, folder, "transformers", outs["transformers"])
    _build(cfg, TransformersLLM(cfg.llm, seed=cfg.corpus.seed), None)
    seconds["transformers"] = time.perf_counter() - start

    start = time.perf_counter()
    cfg = _config(name, folder, "vllm", outs["vllm"])
    with pytest.MonkeyPatch.context() as env:
        for key, value in ONE_PROCESS_ENV.items():
            env.setenv(key, value)
        llm = VLLMLLM(cfg.llm, seed=cfg.corpus.seed)
        _build(cfg, llm, outs["transformers"])
        _shutdown(llm)
    seconds["vllm"] = time.perf_counter() - start

    start = time.perf_counter()
    server = VLLMServer(folder, name, tmp, extra=EAGER_SERVER, env=ONE_PROCESS_ENV).start()
    try:
        cfg = _config(name, folder, "openai", outs["openai"], **{"llm.base_url": server.url, "llm.model": name,
                                                                 "llm.tokenizer": str(folder)})
        llm = OpenAILLM(cfg.llm)
        llm.probe({"generate", "ql", "rc"})
        _build(cfg, llm, outs["transformers"])
    finally:
        server.stop()
    seconds["openai"] = time.perf_counter() - start
    return name, outs, seconds


def _by_pair(out: Path) -> dict[tuple[str, str], dict]:
    return {(r["seed_id"], c["id"]): c for r in read_jsonl(out / "stages" / "rerank.jsonl") for c in r["candidates"]}


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_scores_agree_with_transformers(builds, backend):
    name, outs, seconds = builds
    ref, got = _by_pair(outs["transformers"]), _by_pair(outs[backend])
    assert ref.keys() == got.keys()
    ql = max(abs(ref[k]["ql"] - got[k]["ql"]) for k in ref)
    rc = max(abs(ref[k]["rc"] - got[k]["rc"]) for k in ref)
    print(f"\n[{name}] {backend}: {len(ref)} pairs, max |dQL| {ql:.2e} nats/token, max |dRC| {rc:.2e} nats; "
          f"build {seconds[backend]:.0f}s (transformers {seconds['transformers']:.0f}s)")
    assert len(ref) >= 50
    assert ql <= TOL and rc <= TOL


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_chosen_positive_agrees(builds, backend):
    name, outs, _ = builds
    ref = {r["seed_id"]: r["positive_id"] for r in read_jsonl(outs["transformers"] / "stages" / "select.jsonl")}
    got = {r["seed_id"]: r["positive_id"] for r in read_jsonl(outs[backend] / "stages" / "select.jsonl")}
    assert ref.keys() == got.keys()
    same = sum(ref[k] == got[k] for k in ref) / len(ref)
    print(f"\n[{name}] {backend}: same positive for {same:.1%} of {len(ref)} queries")
    assert same >= 0.95


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_greedy_generation_agrees(builds, backend):
    name, outs, _ = builds
    ref = {r["seed_id"]: r["raw"] for r in read_jsonl(outs["transformers"] / "stages" / "generate.jsonl")}
    got = {r["seed_id"]: r["raw"] for r in read_jsonl(outs[backend] / "own_generate.jsonl")}
    assert ref.keys() == got.keys()
    same = sum(ref[k] == got[k] for k in ref) / len(ref)
    failures = sum(r["failure"] is not None for r in read_jsonl(outs[backend] / "own_generate.jsonl"))
    print(f"\n[{name}] {backend}: identical query text for {same:.1%} of {len(ref)} seeds; {failures} parse failures")
    assert same >= 0.90


def test_server_killed_mid_build_then_rerun_finishes_from_the_cache(tmp_path):
    """kill -9 of the server during re-ranking stops the build with a clear error; after a restart the
    same command finishes, asking only the calls the cache lacks, and gives the uninterrupted build."""
    require_vllm()
    folder = _tiny_bos(tmp_path)
    server = VLLMServer(folder, "tiny", tmp_path, extra=EAGER_SERVER, env=ONE_PROCESS_ENV).start()
    flags = [f"--llm.backend=openai", f"--llm.model=tiny", f"--llm.tokenizer={folder}", "--llm.random_init=false",
             "--llm.chat_template=true", "--llm.max_retries=2", "--llm.backoff_s=0.2", "--llm.concurrency=2",
             "--llm.submit_size=24", "--corpus.num_seeds=48", "--retrieve.top_n=6"]

    def cmd(out, url):
        return [sys.executable, "-m", "gecko_lightning", "build", "fret", "--config", "configs/data/fret_tiny.yaml",
                "--output_dir", str(out), f"--llm.base_url={url}", *flags]

    try:
        ref = subprocess.run(cmd(tmp_path / "ref", server.url), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert ref.returncode == 0, ref.stderr[-2000:]
        build = subprocess.Popen(cmd(tmp_path / "b", server.url), cwd=REPO, stderr=subprocess.PIPE, text=True)
        cache = tmp_path / "b" / "llm_cache.sqlite"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and cached_calls(cache) < 48 + 24:  # generation done, re-ranking under way
            time.sleep(0.05)
        server.stop(9)
        _, err = build.communicate(timeout=600)
        assert build.returncode == 2, err[-2000:]
        assert "Finished calls are cached: run the same command again to resume" in err
        done_before = cached_calls(cache)
        total = json.loads((tmp_path / "ref" / "manifest.json").read_text())["llm_calls"]
        assert 48 < done_before < total["generate"] + total["rerank"]
        server = VLLMServer(folder, "tiny", tmp_path, extra=EAGER_SERVER, env=ONE_PROCESS_ENV).start()
        again = subprocess.run(cmd(tmp_path / "b", server.url), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        server.stop()
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    calls = manifest["llm_calls"]
    assert calls["generate"] == 0  # all from the cache
    assert calls["rerank"] == total["generate"] + total["rerank"] - done_before  # no call asked twice
    assert _records(tmp_path / "b") == _records(tmp_path / "ref")


def _records(out: Path) -> list[tuple]:
    rows = [json.loads(line) for p in sorted(out.glob("shard-*.jsonl")) for line in p.read_text().splitlines()]
    return sorted((r["id"], r["query"], r["positive"]["text"], (r.get("negative") or {}).get("text")) for r in rows)
