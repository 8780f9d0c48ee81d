"""The one LLM interface every stage talks to, its factory, and the deterministic fake backend.

Three operations cover FRet:
    generate(requests)                -> texts            (query generation)
    loglik(contexts, continuations)   -> mean log p(continuation tokens | context)   (QL)
    label_logprobs(prompts, labels)   -> log p(label's first token | prompt) per label (RC)
Backends: `TransformersLLM` (hf_backend.py), `VLLMLLM` (vllm_backend.py), `OpenAILLM`
(openai_backend.py), `FakeLLM` (here). A backend that talks to a server may answer a call with
`CallFailed` instead of a value; stages skip and count those, and never cache them.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

from .config import LLMConfig


class BackendError(RuntimeError):
    """The LLM backend cannot do what the build needs; the message says what and how to fix it."""


@dataclass(frozen=True)
class CallFailed:
    """One call that still failed after its retries; `error` says why."""

    error: str


@dataclass(frozen=True)
class GenRequest:
    prompt: str
    """The user turn (or the whole raw prompt)."""
    prefix: str = ""
    """Text the answer must start with (prefilled after the assistant header)."""


class LLM:
    """Base class: word-level truncation; subclasses with a tokenizer truncate by tokens."""

    model_id: str = "llm"

    def generate(self, requests: list[GenRequest]) -> list[str]:
        raise NotImplementedError

    def loglik(self, contexts: list[str], continuations: list[str]) -> list[float]:
        raise NotImplementedError

    def label_logprobs(self, prompts: list[str], labels: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def ql_rc(
        self, contexts: list[str], continuations: list[str], suffix: str, labels: list[str]
    ) -> list[tuple[float, list[float]]]:
        """(QL of continuation | context, label log-probs after context + continuation + suffix) per pair.

        This default makes two calls; `TransformersLLM` answers both from one forward pass.
        """
        ql = self.loglik(contexts, continuations)
        rc = self.label_logprobs([c + q + suffix for c, q in zip(contexts, continuations)], labels)
        return list(zip(ql, rc))

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        words = text.split()
        if len(words) <= max_tokens:
            return text, False
        return " ".join(words[:max_tokens]), True

    def probe(self, needs: set[str]) -> None:
        """Fail now, with a clear message, if a later stage would fail; default: nothing to check."""


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _jitter(text: str) -> float:
    """A small deterministic number in [0, 1e-3) so fake scores have no ties."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 16**8 * 1e-3


class FakeLLM(LLM):
    """Deterministic stand-in for tests: outputs and scores are pure functions of the input text.

    generate: "task: ... / query: <six words of the last passage in the prompt>" (every `fail_every`-th
    prompt, by hash, gets unparseable text). loglik / label_logprobs: word overlap between the texts.
    """

    model_id = "fake-v1"

    def __init__(self, delay_s: float = 0.0, fail_every: int = 0) -> None:
        self.delay_s = delay_s
        self.fail_every = fail_every

    def generate(self, requests: list[GenRequest]) -> list[str]:
        time.sleep(self.delay_s)
        out = []
        for req in requests:
            passage = req.prompt.rsplit("Passage:", 1)[-1].strip().splitlines()[0]
            if self.fail_every and int(hashlib.md5(req.prompt.encode()).hexdigest(), 16) % self.fail_every == 0:
                out.append("I cannot help with that.")
                continue
            words = passage.split()
            query = " ".join(words[len(words) // 3 : len(words) // 3 + 6]) or passage
            task = "Given a query, retrieve a passage that answers it"
            text = f"task: {task}\nquery: {query}"
            out.append(text[len(req.prefix) :] if text.startswith(req.prefix) else text)
        return out

    def _overlap(self, a: str, b: str) -> float:
        wa, wb = set(_words(a)), set(_words(b))
        return len(wa & wb) / max(1, len(wb)) + _jitter(a + "\x00" + b)

    def loglik(self, contexts: list[str], continuations: list[str]) -> list[float]:
        time.sleep(self.delay_s)
        return [math.log(self._overlap(c, q) + 1e-3) for c, q in zip(contexts, continuations)]

    def label_logprobs(self, prompts: list[str], labels: list[str]) -> list[list[float]]:
        time.sleep(self.delay_s)
        out = []
        for p in prompts:
            query, passage = re.findall(r"Query:(.*)", p), re.findall(r"Passage:(.*)", p)
            s = self._overlap(passage[-1] if passage else "", query[-1] if query else "")
            out.append([math.log(min(max(s, 1e-3), 0.999)) for _ in labels])
        return out


def build_llm(cfg: LLMConfig, seed: int = 0) -> LLM:
    """Pick the backend named in `cfg.backend`; heavy imports happen only for the chosen one."""
    if cfg.backend == "fake":
        return FakeLLM(delay_s=cfg.fake_delay_s)
    if cfg.backend == "transformers":
        from .hf_backend import TransformersLLM

        return TransformersLLM(cfg, seed=seed)
    if cfg.backend == "vllm":
        from .vllm_backend import VLLMLLM

        return VLLMLLM(cfg, seed=seed)
    if cfg.backend == "openai":
        from .openai_backend import OpenAILLM

        return OpenAILLM(cfg)
    raise BackendError(f"llm.backend={cfg.backend!r} is not one of ['transformers', 'vllm', 'openai', 'fake']")
