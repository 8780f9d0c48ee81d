"""Any OpenAI-compatible server (vLLM, TGI, llama.cpp server, hosted APIs) as an FRet LLM.

Requests run in a thread pool of `concurrency` workers. Each one retries 429, 5xx, timeouts,
connection errors and malformed JSON with exponential backoff, at most `max_retries` times, then
raises `BackendError` naming the URL and the last failure. `probe()` runs at start-up and fails at
once if the server cannot return the log-probabilities that QL or RC need.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .config import LLMConfig
from .llm import LLM, BackendError, GenRequest

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAILLM(LLM):
    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=cfg.timeout_s, headers=headers)
        self.model_id = f"openai:{cfg.model}"

    # ---- transport
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with bounded retries; returns the parsed JSON object."""
        url, last = f"{self.base_url}{path}", ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.client.post(url, json={"model": self.cfg.model, **body})
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:  # 400/401/404: retrying cannot help
                raise BackendError(f"{url} answered HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                data = resp.json()
            except ValueError:
                last = f"malformed JSON: {resp.text[:200]!r}"
                continue
            if isinstance(data, dict) and data.get("choices"):
                return data
            last = f"no 'choices' in response: {str(data)[:200]}"
        raise BackendError(f"{url} failed after {self.cfg.max_retries + 1} attempts; last error: {last}")

    def _map(self, fn, items: list[Any]) -> list[Any]:
        if len(items) <= 1 or self.cfg.concurrency <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.cfg.concurrency) as pool:
            return list(pool.map(fn, items))

    # ---- the LLM interface
    def _generate_one(self, req: GenRequest) -> str:
        common = {"max_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature}
        if self.cfg.stop:
            common["stop"] = list(self.cfg.stop)
        if self.cfg.use_chat_endpoint:  # no prefill on chat endpoints: the parser accepts a missing prefix
            data = self._post("/chat/completions", {"messages": [{"role": "user", "content": req.prompt}], **common})
            return data["choices"][0]["message"]["content"] or ""
        data = self._post("/completions", {"prompt": req.prompt + req.prefix, **common})
        return data["choices"][0].get("text") or ""

    def generate(self, requests: list[GenRequest]) -> list[str]:
        return self._map(self._generate_one, requests)

    def _loglik_one(self, pair: tuple[str, str]) -> float:
        context, continuation = pair
        if self.cfg.ql_method == "prompt_logprobs":  # vLLM extension
            data = self._post("/completions", {"prompt": context + continuation, "max_tokens": 1, "prompt_logprobs": 0})
            return _mean_prompt_logprobs(data, len(context) + len(continuation), len(context))
        # max_tokens=1 (some servers reject 0); the generated token lies past the prompt and is dropped
        data = self._post("/completions", {"prompt": context + continuation, "max_tokens": 1, "echo": True, "logprobs": 0})
        return _mean_echo_logprobs(data, len(context), len(context) + len(continuation))

    def loglik(self, contexts: list[str], continuations: list[str]) -> list[float]:
        return self._map(self._loglik_one, list(zip(contexts, continuations)))

    def _labels_one(self, prompt: str, labels: list[str]) -> list[float]:
        data = self._post("/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                                           "logprobs": self.cfg.rc_top_logprobs})
        top = _top_logprobs(data)
        floor = min(top.values()) - math.log(2) if top else -100.0  # a label outside the top-k is less likely
        return [top.get(label, top.get(label.strip(), floor)) for label in labels]

    def label_logprobs(self, prompts: list[str], labels: list[str]) -> list[list[float]]:
        return self._map(lambda p: self._labels_one(p, labels), prompts)

    def probe(self, needs: set[str]) -> None:
        """One tiny call per need; a server that lacks a feature fails here, before hours of work."""
        try:
            if "generate" in needs:
                self._generate_one(GenRequest("Say yes.", ""))
            if "ql" in needs:
                self._loglik_one(("The sky is", " blue"))
            if "rc" in needs:
                self._labels_one("Is the sky blue? Answer:", [" yes"])
        except BackendError as e:
            raise BackendError(f"LLM server probe failed ({self.model_id} at {self.base_url}): {e}") from e


def _logprobs(data: dict[str, Any], field: str) -> Any:
    lp = data["choices"][0].get("logprobs") or {}
    if not lp.get(field):
        raise BackendError(f"the response has no logprobs.{field}; {_HINT.get(field, '')}")
    return lp[field]


_HINT = {
    "token_logprobs": "QL needs echo=true with logprobs on /v1/completions (vLLM, llama.cpp server); "
    "or set llm.ql_method=prompt_logprobs for vLLM",
    "top_logprobs": "RC needs logprobs=<k> (top log-probabilities) on /v1/completions",
}


def _mean_echo_logprobs(data: dict[str, Any], start: int, end: int) -> float:
    """Mean log-prob of the echoed tokens whose text starts in [start, end) characters of the prompt."""
    tokens, offsets = _logprobs(data, "token_logprobs"), _logprobs(data, "text_offset")
    picked = [lp for lp, off in zip(tokens, offsets) if start <= off < end and lp is not None]
    if not picked:
        raise BackendError("echo returned no log-probabilities for the query tokens")
    return sum(picked) / len(picked)


def _mean_prompt_logprobs(data: dict[str, Any], prompt_chars: int, context_chars: int) -> float:
    """Mean log-prob of the prompt tokens that start at or after `context_chars` (vLLM `prompt_logprobs`).

    Entry 0 is null (the first token has no log-prob); each later entry maps token id -> {logprob,
    decoded_token}. Offsets are counted back from the end of the prompt, so the first token's text,
    which no entry carries, is not needed.
    """
    entries = data["choices"][0].get("prompt_logprobs")
    if not entries:
        raise BackendError("the response has no prompt_logprobs; this server is not vLLM: set llm.ql_method=echo")
    tokens = [next(iter(e.values())) for e in entries if e]  # with prompt_logprobs=0: the prompt token only
    offset, picked = prompt_chars - sum(len(t.get("decoded_token", "")) for t in tokens), []
    for tok in tokens:
        if offset >= context_chars:
            picked.append(tok["logprob"])
        offset += len(tok.get("decoded_token", ""))
    if not picked:
        raise BackendError("prompt_logprobs covered no query tokens")
    return sum(picked) / len(picked)


def _top_logprobs(data: dict[str, Any]) -> dict[str, float]:
    top = _logprobs(data, "top_logprobs")[0]
    if not isinstance(top, dict):
        raise BackendError(f"logprobs.top_logprobs[0] should map token -> log-prob, got {type(top).__name__}")
    return {str(k): float(v) for k, v in top.items()}
