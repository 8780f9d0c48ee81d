"""The OpenAI-compatible backend against a scripted fake server on 127.0.0.1: retries, clean failure, probes."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_builders.config import LLMConfig
from data_builders.llm import BackendError, GenRequest
from data_builders.openai_backend import OpenAILLM

TOKENS = ["The", " sky", " is", " blue"]
LOGPROBS = [None, -1.0, -2.0, -0.5]


class FakeServer:
    """Answers /v1/completions; `script` holds failures to inject first ("500", "timeout", "malformed", "400")."""

    def __init__(self, script=(), default="ok", logprobs=True):
        self.script, self.default, self.logprobs = list(script), default, logprobs
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                action = server.script.pop(0) if server.script else server.default
                if action == "timeout":
                    time.sleep(0.5)  # longer than the client's timeout
                    action = "ok"
                if action in ("500", "400"):
                    return self._send(int(action), b'{"error": "injected"}')
                if action == "malformed":
                    return self._send(200, b'{"choices": [')
                self._send(200, json.dumps(server.answer(body)).encode())

            def _send(self, status, payload):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body):
        choice = {"text": "task: Find facts\nquery: why is the sky blue", "logprobs": None}
        if self.logprobs and body.get("echo"):
            offsets = [sum(len(t) for t in TOKENS[:i]) for i in range(len(TOKENS))]
            choice["logprobs"] = {"tokens": TOKENS + [" ."], "token_logprobs": LOGPROBS + [-9.0],
                                  "text_offset": offsets + [len("".join(TOKENS))]}
        elif self.logprobs and "prompt_logprobs" in body:  # vLLM: null first, then {token_id: {...}}
            choice["prompt_logprobs"] = [None] + [{str(i): {"logprob": lp, "rank": 1, "decoded_token": t}}
                                                  for i, (t, lp) in enumerate(zip(TOKENS[1:], LOGPROBS[1:]))]
        elif self.logprobs and body.get("logprobs"):
            choice["logprobs"] = {"top_logprobs": [{" yes": -0.25, " no": -1.5}]}
        return {"choices": [choice]}

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kw):
        servers.append(FakeServer(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _llm(server, **kw) -> OpenAILLM:
    cfg = LLMConfig(backend="openai", model="m", base_url=server.url, timeout_s=0.2, max_retries=3, backoff_s=0.01,
                    concurrency=2, **kw)
    return OpenAILLM(cfg)


def test_retries_500_timeout_and_malformed_json_then_succeeds(server_factory):
    server = server_factory(script=["500", "timeout", "malformed"])
    (text,) = _llm(server).generate([GenRequest("hi", "task:")])
    assert "query: why is the sky blue" in text
    assert len(server.requests) == 4  # three injected failures, one success
    assert server.requests[-1]["prompt"] == "hitask:"  # the prefix is prefilled on /completions


def test_gives_up_after_max_retries_with_a_clear_message(server_factory):
    server = server_factory(default="500")
    with pytest.raises(BackendError, match=r"failed after 4 attempts; last error: HTTP 500"):
        _llm(server).generate([GenRequest("hi")])
    assert len(server.requests) == 4  # bounded: 1 try + max_retries


def test_client_errors_are_not_retried(server_factory):
    server = server_factory(default="400")
    with pytest.raises(BackendError, match="HTTP 400"):
        _llm(server).generate([GenRequest("hi")])
    assert len(server.requests) == 1


def test_ql_is_the_mean_echo_logprob_of_the_continuation_tokens(server_factory):
    server = server_factory()
    (ql,) = _llm(server).loglik(["The sky"], [" is blue"])
    assert ql == pytest.approx((-2.0 + -0.5) / 2)  # " is", " blue"; the generated " ." is dropped
    assert server.requests[0]["echo"] is True


def test_ql_from_vllm_prompt_logprobs_matches_echo(server_factory):
    server = server_factory()
    (ql,) = _llm(server, ql_method="prompt_logprobs").loglik(["The sky"], [" is blue"])
    assert ql == pytest.approx((-2.0 + -0.5) / 2)
    assert server.requests[0]["prompt_logprobs"] == 0


def test_rc_reads_label_top_logprobs_and_floors_missing_labels(server_factory):
    server = server_factory()
    (lp,) = _llm(server).label_logprobs(["Relevant? Answer:"], [" yes", " maybe"])
    assert lp[0] == -0.25
    assert lp[1] < -1.5  # below every returned top log-prob


def test_probe_fails_at_start_up_when_the_server_has_no_logprobs(server_factory):
    server = server_factory(logprobs=False)
    with pytest.raises(BackendError, match="probe failed.*QL needs echo=true"):
        _llm(server).probe({"generate", "ql", "rc"})


def test_concurrent_requests_keep_input_order(server_factory):
    server = server_factory()
    out = _llm(server).label_logprobs([f"p{i}" for i in range(6)], [" yes"])
    assert out == [[-0.25]] * 6
    assert sorted(r["prompt"] for r in server.requests) == [f"p{i}" for i in range(6)]
