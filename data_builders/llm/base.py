"""The one LLM interface every stage talks to, and the request and failure types it exchanges.

Three operations cover FRet:
    generate(requests)                -> texts            (query generation)
    loglik(contexts, continuations)   -> mean log p(continuation tokens | context)   (QL)
    label_logprobs(prompts, labels)   -> log p(label's first token | prompt) per label (RC)
Engines: `TransformersLLM` (hf.py), `VLLMLLM` (vllm.py), `OpenAILLM` (openai.py), `FakeLLM`
(fake.py); they import this module only, never the factory in `__init__.py`. A backend that talks to
a server may answer a call with `CallFailed` instead of a value; stages skip and count those, and
never cache them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
