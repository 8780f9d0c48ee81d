"""The LLM: one interface, its engines, prompt tokens, the call cache, GGUF conversion and a local server.

Lives here: `base` (the `LLM` interface, `GenRequest`, `CallFailed`, `BackendError`), one module per
engine (`hf` for transformers, `vllm`, `openai` for any OpenAI-compatible server, `fake`), `tokens`
(chat templates rendered to token ids), `cache` (the SQLite call cache and its keys), `gguf` and
`server` (a vLLM server for tests and benchmarks). This file is the factory, `build_llm`.
May import: `data_builders.config` and `gecko_lightning`; engines import `base` and `tokens`, never
this file. Nothing here imports `corpus`, `index`, `fret` or the commands.
"""

from __future__ import annotations

from ..config import LLMConfig
from .base import LLM, BackendError, CallFailed, GenRequest
from .fake import FakeLLM

__all__ = ["LLM", "BackendError", "CallFailed", "FakeLLM", "GenRequest", "build_llm"]


def build_llm(cfg: LLMConfig, seed: int = 0) -> LLM:
    """Pick the backend named in `cfg.backend`; heavy imports happen only for the chosen one."""
    if cfg.backend == "fake":
        return FakeLLM(delay_s=cfg.fake_delay_s)
    if cfg.backend == "transformers":
        from .hf import TransformersLLM

        return TransformersLLM(cfg, seed=seed)
    if cfg.backend == "vllm":
        from .vllm import VLLMLLM

        return VLLMLLM(cfg, seed=seed)
    if cfg.backend == "openai":
        from .openai import OpenAILLM

        return OpenAILLM(cfg)
    raise BackendError(f"llm.backend={cfg.backend!r} is not one of ['transformers', 'vllm', 'openai', 'fake']")
