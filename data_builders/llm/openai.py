"""Any OpenAI-compatible server (vLLM first; TGI, llama.cpp server) as an FRet LLM.

Prompts are rendered on the client with the served model's tokenizer (`tokens.PromptTokens`) and
sent to `/v1/completions` as token ids, so the server reads exactly what the transformers and vllm
backends read, chat template and BOS included. QL reads the query's log-probs by position
(`prompt_logprobs`, or `echo` for servers without it); RC asks for the labels' own log-probs
(`logprob_token_ids`, vLLM) and falls back to the top-k elsewhere.

One async client sends every call of a submission at once, at most `concurrency` in flight. Each call
retries 429, 5xx, timeouts, connection errors and malformed JSON, at most `max_retries` times: after
the server's `Retry-After` on a 429 or 503, else after a jittered exponential backoff, waiting at most
`max_wait_s` in all (retry_after.py). A call that still fails comes back as `CallFailed`: the stage skips and counts
it, it is not cached, and a re-run retries it. `retries` and `failures` count both for the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
from collections import Counter
from typing import Any

import httpx
from tqdm.auto import tqdm

from ..config import LLMConfig
from .base import LLM, BackendError, CallFailed, GenRequest
from .retry_after import retry_delay
from .tokens import PromptTokens, ScoringRow, cut_at_stop, load_tokenizer

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# One line per request from httpx would bury the progress bars.
logging.getLogger("httpx").setLevel(logging.WARNING)


class _Fatal(Exception):
    """A 4xx answer: retrying cannot help, and every other call would fail the same way."""


class OpenAILLM(LLM):
    def __init__(self, cfg: LLMConfig, tokenizer: Any | None = None) -> None:
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        if tokenizer is None:
            name = cfg.tokenizer or cfg.model
            try:
                tokenizer = load_tokenizer(name, None if cfg.tokenizer else cfg.gguf_file)
            except (OSError, ValueError) as e:
                raise BackendError(
                    f"cannot load the tokenizer {name!r} for llm.model={cfg.model!r} ({type(e).__name__}: "
                    f"{str(e).splitlines()[0]}); set llm.tokenizer to the served model's tokenizer folder or Hub name"
                ) from e
        self.prompts = PromptTokens(tokenizer, cfg.chat_template)
        self.counts: Counter = Counter()
        self.exact_rc = True
        parts = [cfg.model, cfg.ql_method, f"tok-{self.prompts.fingerprint()}"]
        if cfg.use_chat_endpoint:
            parts.append("chat-endpoint")
        self.model_id = "openai:" + ":".join(parts)

    # ---- transport
    async def _post(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, path: str, body: dict[str, Any]) -> Any:
        """POST with bounded retries: the parsed JSON, or `CallFailed` naming the last error.

        A 429/503 waits what its Retry-After asks, anything else retried a jittered backoff; the waits of
        one call stay within `max_wait_s` (retry_after.py)."""
        url, last, waited, resp, tries = f"{self.base_url}{path}", "", 0.0, None, 0
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                delay, asked = retry_delay(getattr(resp, "status_code", None), getattr(resp, "headers", None),
                                           self.cfg.backoff_s, attempt)
                if waited + delay > self.cfg.max_wait_s:
                    why = "Retry-After asks" if asked else "the next backoff is"
                    last += f" ({why} {delay:.0f} s more, past llm.max_wait_s={self.cfg.max_wait_s:g})"
                    break
                self.counts["retries"] += 1
                await asyncio.sleep(delay)
                waited += delay
            resp, tries = None, tries + 1
            try:
                async with gate:
                    resp = await client.post(url, json={"model": self.cfg.model, **body})
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                raise _Fatal(f"{url} answered HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                data = resp.json()
            except ValueError:
                last = f"malformed JSON: {resp.text[:200]!r}"
                continue
            if isinstance(data, dict) and data.get("choices"):
                return data
            last = f"no 'choices' in response: {str(data)[:200]}"
        self.counts["failures"] += 1
        return CallFailed(f"{url} failed after {tries} attempts; last error: {last}")

    def _post_all(self, path: str, bodies: list[dict[str, Any]], desc: str) -> list[Any]:
        """Every body at once through one client; results in input order (JSON or `CallFailed`)."""

        async def run() -> list[Any]:
            gate = asyncio.Semaphore(max(1, self.cfg.concurrency))
            limits = httpx.Limits(max_connections=max(1, self.cfg.concurrency), max_keepalive_connections=max(1, self.cfg.concurrency))
            async with httpx.AsyncClient(timeout=self.cfg.timeout_s, headers=self.headers, limits=limits) as client:
                tasks = [asyncio.ensure_future(self._post(client, gate, path, b)) for b in bodies]
                bar = tqdm(total=len(tasks), desc=desc, unit="call", leave=False, disable=len(tasks) < 2)
                for t in tasks:
                    t.add_done_callback(lambda _: bar.update(1))
                try:
                    return await asyncio.gather(*tasks)
                except _Fatal:
                    for t in tasks:
                        t.cancel()
                    raise
                finally:
                    bar.close()

        try:
            return asyncio.run(run())
        except _Fatal as e:
            raise BackendError(str(e)) from None

    # ---- generation
    def _gen_body(self, req: GenRequest) -> tuple[str, dict[str, Any]]:
        common: dict[str, Any] = {"max_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature}
        if self.cfg.stop:
            common["stop"] = list(self.cfg.stop)
        if self.cfg.temperature > 0:  # the same prompt always draws the same tokens
            common["seed"] = int(hashlib.sha256((req.prompt + "\0" + req.prefix).encode()).hexdigest()[:8], 16)
        if self.cfg.use_chat_endpoint:
            messages = [{"role": "user", "content": req.prompt}]
            if req.prefix:  # vLLM: continue the assistant turn that starts with the prefix
                messages.append({"role": "assistant", "content": req.prefix})
                common.update(continue_final_message=True, add_generation_prompt=False)
            return "/chat/completions", {"messages": messages, **common}
        return "/completions", {"prompt": self.prompts.generation_ids(req), "return_token_ids": True, **common}

    def _gen_text(self, data: Any, req: GenRequest) -> Any:
        if isinstance(data, CallFailed):
            return data
        choice = data["choices"][0]
        if self.cfg.use_chat_endpoint:
            text = (choice.get("message") or {}).get("content") or ""
            return text[len(req.prefix) :] if req.prefix and text.startswith(req.prefix) else text
        if choice.get("token_ids") is not None:  # vLLM: decode exactly as the transformers backend does
            return cut_at_stop(self.prompts.decode(choice["token_ids"]), self.cfg.stop)
        return choice.get("text") or ""

    def generate(self, requests: list[GenRequest]) -> list[Any]:
        by_path: dict[str, list[int]] = {}
        bodies = [self._gen_body(r) for r in requests]
        for i, (path, _) in enumerate(bodies):
            by_path.setdefault(path, []).append(i)
        out: list[Any] = [None] * len(requests)
        for path, idx in by_path.items():
            for i, data in zip(idx, self._post_all(path, [bodies[i][1] for i in idx], "generate calls")):
                out[i] = self._gen_text(data, requests[i])
        return out

    # ---- scoring
    def _score_body(self, row: ScoringRow | None, prompt_ids: list[int] | None, label_ids: list[int]) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": row.ids if row else prompt_ids, "max_tokens": 1, "temperature": 0.0}
        if row is not None:
            if self.cfg.ql_method == "prompt_logprobs":
                body["prompt_logprobs"] = 0
            else:
                body.update(echo=True, logprobs=0)
        if label_ids and self.exact_rc:  # vLLM: the labels' own log-probs (it wants logprobs == their count)
            body.update(logprobs=len(label_ids), logprob_token_ids=label_ids, return_tokens_as_token_ids=True)
        elif label_ids:
            body["logprobs"] = max(1, self.cfg.rc_top_logprobs)
        return body

    def _ql(self, data: dict[str, Any], row: ScoringRow) -> float:
        choice = data["choices"][0]
        span = range(row.start, row.start + row.length)
        if self.cfg.ql_method == "prompt_logprobs":
            entries = choice.get("prompt_logprobs")
            if not entries or len(entries) < len(row.ids):
                raise BackendError("the response has no prompt_logprobs for every prompt token; "
                                   "this server is not vLLM: set llm.ql_method=echo")
            picked = [_entry_logprob(entries[j], row.ids[j]) for j in span]
        else:
            lp = choice.get("logprobs") or {}
            tokens = lp.get("token_logprobs")
            if not tokens or len(tokens) < len(row.ids):
                raise BackendError("the response has no logprobs.token_logprobs for the echoed prompt; "
                                   "QL needs echo=true with logprobs on /v1/completions, or llm.ql_method=prompt_logprobs")
            picked = [tokens[j] for j in span]
        if any(p is None for p in picked):
            raise BackendError("the server returned no log-probability for a query token")
        return sum(picked) / len(picked)

    def _rc(self, data: dict[str, Any], labels: list[str], label_ids: list[int]) -> list[float]:
        lp = data["choices"][0].get("logprobs") or {}
        tops = lp.get("top_logprobs")
        if not tops or not isinstance(tops[-1], dict):
            raise BackendError("the response has no logprobs.top_logprobs; RC needs logprobs=<k> on /v1/completions")
        top = {str(k): float(v) for k, v in tops[-1].items()}  # the generated position (after any echo)
        exact = [top.get(f"token_id:{t}") for t in label_ids]
        if all(v is not None for v in exact):
            return exact
        if self.exact_rc and not any(k.startswith("token_id:") for k in top):
            self.exact_rc = False  # not vLLM: ask for the top k from now on (the probe finds this out first)
        by_text = {k: v for k, v in top.items() if not k.startswith("token_id:")} or top
        floor = min(by_text.values()) - math.log(2)  # a label outside the top k is less likely than the k-th
        return [e if e is not None else by_text.get(lab, by_text.get(lab.strip(), floor)) for e, lab in zip(exact, labels)]

    def _score(self, rows: list[ScoringRow] | None, prompts: list[list[int]] | None,
               labels: list[str]) -> list[Any]:
        label_ids = self.prompts.label_ids(labels) if labels else []
        n = len(rows if rows is not None else prompts)
        bodies = [self._score_body(rows[i] if rows else None, prompts[i] if prompts else None, label_ids) for i in range(n)]
        out: list[Any] = []
        for i, data in enumerate(self._post_all("/completions", bodies, "score calls")):
            if isinstance(data, CallFailed):
                out.append(data)
                continue
            ql = self._ql(data, rows[i]) if rows else None
            rc = self._rc(data, labels, label_ids) if label_ids else None
            out.append((ql, rc))
        return out

    def loglik(self, contexts: list[str], continuations: list[str]) -> list[Any]:
        rows = [self.prompts.scoring_row(c, q) for c, q in zip(contexts, continuations)]
        return [r if isinstance(r, CallFailed) else r[0] for r in self._score(rows, None, [])]

    def label_logprobs(self, prompts: list[str], labels: list[str]) -> list[Any]:
        ids = [self.prompts.prompt_ids(p) for p in prompts]
        return [r if isinstance(r, CallFailed) else r[1] for r in self._score(None, ids, labels)]

    def ql_rc(self, contexts: list[str], continuations: list[str], suffix: str, labels: list[str]) -> list[Any]:
        """QL and RC from one request per pair: the prompt is context + query + suffix."""
        rows = [self.prompts.scoring_row(c, q, suffix) for c, q in zip(contexts, continuations)]
        return self._score(rows, None, labels)

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return self.prompts.truncate(text, max_tokens)

    def probe(self, needs: set[str]) -> None:
        """One tiny call per need; a server that lacks a feature fails here, before hours of work."""
        checks = []
        if "generate" in needs:
            checks.append(lambda: self.generate([GenRequest("Say yes.", "")])[0])
        if "ql" in needs:
            checks.append(lambda: self.loglik(["The sky is"], [" blue"])[0])
        if "rc" in needs:
            checks.append(lambda: self.label_logprobs(["Is the sky blue? Answer:"], [" yes"])[0])
        for check in checks:
            try:
                result = check()
            except BackendError as e:
                raise BackendError(f"LLM server probe failed ({self.cfg.model} at {self.base_url}): {e}") from e
            if isinstance(result, CallFailed):
                raise BackendError(f"LLM server probe failed ({self.cfg.model} at {self.base_url}): {result.error}")


def _entry_logprob(entry: Any, token_id: int) -> float | None:
    """One `prompt_logprobs` entry ({token id: {logprob, ...}}, keys as JSON strings) for `token_id`."""
    if not entry:
        return None
    hit = entry.get(str(token_id), entry.get(token_id))
    if hit is None:
        raise BackendError(f"prompt_logprobs entry lacks the prompt token {token_id}: {str(entry)[:200]}")
    return float(hit["logprob"] if isinstance(hit, dict) else hit)
