"""What every stage is a function of: the config, the output folder, the LLM cache and the lazily built LLM.

It sits below the stages and the runner, so stages never import the runner that calls them.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import BuildConfig
from ..llm import LLM, build_llm
from ..llm.cache import CallCounter, LLMCache, cached_batch
from .sharding import shard_dir

STAGES = ("generate", "retrieve", "rerank", "select", "export")
LLM_STAGES = ("generate", "rerank")
# Engines that schedule many prompts themselves get whole submissions; in-process transformers
# gets its own batch size, since its batch is one padded forward pass.
SCHEDULING_BACKENDS = ("vllm", "openai")


class Context:
    """What stages share: the config, the output folder, the cache, call counts and the lazily built LLM."""

    def __init__(self, cfg: BuildConfig, llm: LLM | None = None) -> None:
        """`llm`: an already loaded backend to use instead of building one from `cfg.llm`.

        A sharded `cfg` (see `sharding.resolve_shard`) works in its shard's folder.
        """
        self.cfg = cfg
        self.out = shard_dir(cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = LLMCache(cfg.cache.path or self.out / "llm_cache.sqlite")
        self.counter = CallCounter()
        self.prompt_versions: dict[str, str] = {}
        self.models: dict[str, str] = {}
        self.llm_load_s = 0.0
        self._llm: LLM | None = llm
        if llm is not None:
            self.models["llm"] = llm.model_id

    def stage_file(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.jsonl"

    def llm(self) -> LLM:
        if self._llm is None:
            start = time.perf_counter()
            self._llm = build_llm(self.cfg.llm, seed=self.cfg.corpus.seed)
            # Fail now if the backend cannot generate or return the log-probs QL/RC need.
            self._llm.probe({"generate", "ql", "rc"})
            self.llm_load_s = time.perf_counter() - start
            self.models["llm"] = self._llm.model_id
        return self._llm


def submission(ctx: Context, in_process: int) -> int:
    """Prompts per backend call: `llm.submit_size` for vllm/openai, else `in_process`."""
    return ctx.cfg.llm.submit_size if ctx.cfg.llm.backend in SCHEDULING_BACKENDS else in_process


def cached(ctx: Context, stage: str, keys: list[str], compute) -> list:
    """`compute` for the keys the cache lacks, through the build's cache and call counter."""
    return cached_batch(ctx.cache, ctx.counter, stage, keys, compute, max_failures=ctx.cfg.llm.max_failures)
