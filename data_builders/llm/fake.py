"""`FakeLLM`: a deterministic engine for tests and the offline smoke build; no model, no network."""

from __future__ import annotations

import hashlib
import math
import re
import time

from .base import LLM, GenRequest


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
