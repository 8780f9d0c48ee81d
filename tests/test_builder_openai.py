"""The OpenAI-compatible backend against a scripted fake server on 127.0.0.1.

The fake server speaks vLLM's token-id protocol: a prompt token's log-prob is a pure function of its
id, LP(t), so a test knows the right QL from the query's own tokens alone, and a query read one
position off (the BOS bug) gives a different number. The tokenizer adds BOS, as Llama 3 and Gemma do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_builders.config import LLMConfig, load_config
from data_builders.llm import BackendError, CallFailed, GenRequest
from data_builders.llm.openai import OpenAILLM


# The client's timeout in these tests, and how long a scripted "timeout" answer stalls. The timeout is
# wide enough that a loaded CI host (pytest-xdist beside a minutes-long test) never times out an
# ordinary answer; a 0.2 s timeout once did, and the retry test saw four failures instead of three.
TIMEOUT_S, STALL_S = 2.0, 3.0


def LP(token_id: int) -> float:
    return -((token_id * 7919) % 97) / 10 - 0.01


class FakeServer:
    """Answers /v1/completions; `script` holds failures to inject first ("500", "timeout", "malformed", "400")."""

    def __init__(self, script=(), default="ok", logprobs=True, vllm=True, delay_s=0.0):
        self.script, self.default, self.logprobs, self.vllm, self.delay_s = list(script), default, logprobs, vllm, delay_s
        self.fail_if = lambda body: False  # answer 500 to every request this matches
        self.limit = lambda: None  # -> (status, Retry-After value or None) refuses the request, else None
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    action = server.script.pop(0) if server.script else server.default
                    refused = server.limit()
                    if server.fail_if(body):
                        action = "500"
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if refused:
                        return self._send(refused[0], b'{"error": "rate limited"}', refused[1])
                    time.sleep(server.delay_s)
                    if action == "timeout":
                        time.sleep(STALL_S)  # longer than the client's timeout
                        action = "ok"
                    if action in ("500", "400"):
                        return self._send(int(action), b'{"error": "injected"}')
                    if action == "malformed":
                        return self._send(200, b'{"choices": [')
                    self._send(200, json.dumps(server.answer(body)).encode())
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, status, payload, retry_after=None):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body):
        prompt = body.get("prompt") or []
        choice = {"text": "task: Find facts\nquery: why is the sky blue", "logprobs": None}
        if not self.logprobs:
            return {"choices": [choice]}
        if body.get("echo"):
            choice["logprobs"] = {"token_logprobs": [None] + [LP(t) for t in prompt[1:]] + [-9.0]}
        if "prompt_logprobs" in body and self.vllm:  # null first, then {token id: {...}} per prompt token
            choice["prompt_logprobs"] = [None] + [{str(t): {"logprob": LP(t), "rank": 1}} for t in prompt[1:]]
        if body.get("logprobs") and not body.get("echo"):
            if self.vllm and body.get("logprob_token_ids"):
                top = {f"token_id:{t}": LP(t) for t in body["logprob_token_ids"]}
            else:  # a server without vLLM's extensions: the top-k by text
                top = {" yes": -0.25, " no": -1.5}
            choice["logprobs"] = {"top_logprobs": [top]}
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


@pytest.fixture(scope="module")
def bos_tokenizer_dir(tmp_path_factory):
    from scripts.make_tiny_bos_llm import make

    return make(tmp_path_factory.mktemp("tinybos"))


@pytest.fixture(scope="module")
def tok(bos_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bos_tokenizer_dir)


def _llm(server, tokdir, **kw) -> OpenAILLM:
    base = dict(backend="openai", model="m", tokenizer=str(tokdir), base_url=server.url, timeout_s=TIMEOUT_S,
                max_retries=3, backoff_s=0.01, concurrency=2)
    return OpenAILLM(LLMConfig(**{**base, **kw}))


def test_retries_500_timeout_and_malformed_json_then_succeeds(server_factory, bos_tokenizer_dir, tok):
    server = server_factory(script=["500", "timeout", "malformed"])
    llm = _llm(server, bos_tokenizer_dir)
    (text,) = llm.generate([GenRequest("hi", "task:")])
    assert "query: why is the sky blue" in text
    assert len(server.requests) == 4  # three injected failures, one success
    assert llm.counts["retries"] == 3 and llm.counts["failures"] == 0
    # the chat template is rendered on the client, BOS once, and the answer prefix prefilled
    assert tok.decode(server.requests[-1]["prompt"]) == "<s><|user|>\nhi\n<|assistant|>\ntask:"


def test_prompt_is_the_transformers_backends_prompt(server_factory, bos_tokenizer_dir):
    """Byte-identical: the ids sent are the ids TransformersLLM feeds its model for the same request."""
    from data_builders.llm.hf import TransformersLLM

    server = server_factory()
    hf = TransformersLLM(LLMConfig(model=str(bos_tokenizer_dir), device="cpu"))
    for chat in (True, False):
        server.requests.clear()
        req = GenRequest("Passage: the sky is blue\nWrite a query.", "task:")
        _llm(server, bos_tokenizer_dir, chat_template=chat).generate([req])
        hf.prompts.use_chat = chat
        sent = server.requests[-1]["prompt"]
        assert sent == hf.prompts.generation_ids(req)
        assert hf.tokenizer.decode(sent) == ("<s><|user|>\n" + req.prompt + "\n<|assistant|>\ntask:" if chat else "<s>" + req.prompt + "task:")


def test_final_failure_is_returned_counted_and_bounded(server_factory, bos_tokenizer_dir):
    server = server_factory(default="500")
    llm = _llm(server, bos_tokenizer_dir)
    (out,) = llm.generate([GenRequest("hi")])
    assert isinstance(out, CallFailed) and "failed after 4 attempts; last error: HTTP 500" in out.error
    assert len(server.requests) == 4  # bounded: 1 try + max_retries
    assert llm.counts["failures"] == 1 and llm.counts["retries"] == 3


def test_client_errors_are_not_retried(server_factory, bos_tokenizer_dir):
    server = server_factory(default="400")
    with pytest.raises(BackendError, match="HTTP 400"):
        _llm(server, bos_tokenizer_dir).generate([GenRequest("hi")])
    assert len(server.requests) == 1


@pytest.mark.parametrize("method", ["prompt_logprobs", "echo"])
def test_ql_reads_the_query_tokens_by_position_with_bos(server_factory, bos_tokenizer_dir, tok, method):
    server = server_factory()
    (ql,) = _llm(server, bos_tokenizer_dir, ql_method=method).loglik(["The sky"], [" is blue"])
    query_ids = tok(" is blue", add_special_tokens=False)["input_ids"]
    assert ql == pytest.approx(sum(LP(t) for t in query_ids) / len(query_ids))
    sent = server.requests[0]["prompt"]
    assert sent[0] == tok.bos_token_id and sent.count(tok.bos_token_id) == 1


def test_rc_reads_exact_label_logprobs_by_token_id(server_factory, bos_tokenizer_dir, tok):
    server = server_factory()
    (lp,) = _llm(server, bos_tokenizer_dir).label_logprobs(["Relevant? Answer:"], [" yes", " maybe"])
    first = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " maybe")]
    assert lp == pytest.approx([LP(t) for t in first])


def test_rc_falls_back_to_top_k_text_and_floors_missing_labels(server_factory, bos_tokenizer_dir):
    server = server_factory(vllm=False)
    (lp,) = _llm(server, bos_tokenizer_dir).label_logprobs(["Relevant? Answer:"], [" yes", " maybe"])
    assert lp[0] == -0.25
    assert lp[1] < -1.5  # below every returned top log-prob


def test_joint_ql_rc_is_one_request_per_pair(server_factory, bos_tokenizer_dir, tok):
    server = server_factory()
    out = _llm(server, bos_tokenizer_dir).ql_rc(["Passage: a", "Passage: b"], [" sky", " sky"], "\nAnswer:", [" yes"])
    assert len(server.requests) == 2
    q = tok(" sky", add_special_tokens=False)["input_ids"]
    yes = tok(" yes", add_special_tokens=False)["input_ids"][0]
    for ql, rc in out:
        assert ql == pytest.approx(sum(LP(t) for t in q) / len(q)) and rc == pytest.approx([LP(yes)])


def test_probe_fails_at_start_up_when_the_server_has_no_logprobs(server_factory, bos_tokenizer_dir):
    server = server_factory(logprobs=False)
    with pytest.raises(BackendError, match="probe failed.*prompt_logprobs"):
        _llm(server, bos_tokenizer_dir).probe({"generate", "ql", "rc"})


def test_all_requests_in_flight_at_once_up_to_the_limit_in_order(server_factory, bos_tokenizer_dir, tok):
    server = server_factory(delay_s=0.05)
    prompts = [f"p{i} Answer:" for i in range(12)]
    out = _llm(server, bos_tokenizer_dir, concurrency=4, timeout_s=5).label_logprobs(prompts, [" yes"])
    assert len(out) == 12 and server.max_in_flight == 4
    sent = {tok.decode(r["prompt"]) for r in server.requests}
    assert sent == {"<s>" + p for p in prompts}


def test_unknown_tokenizer_is_a_clear_error(server_factory, tmp_path):
    server = server_factory()
    with pytest.raises(BackendError, match="set llm.tokenizer"):
        _llm(server, tmp_path / "nope")


def test_httpx_request_lines_are_silenced():
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING


def test_build_counts_retries_and_failures_then_a_rerun_retries_them(server_factory, bos_tokenizer_dir, tmp_path):
    """A build through a flaky server: a call that fails for good is skipped and counted, never
    cached, and the next run of the same command asks exactly that call again and finishes whole."""
    from data_builders.fret.runner import run

    server = server_factory()
    over = {"llm.backend": "openai", "llm.model": "m", "llm.tokenizer": str(bos_tokenizer_dir), "llm.base_url": server.url,
            "llm.max_retries": 3, "llm.backoff_s": 0.01, "llm.concurrency": 2, "llm.timeout_s": 5,
            "retrieve.top_n": 3}
    whole = run(load_config("configs/data/fret_tiny.yaml", {**over, "output_dir": str(tmp_path / "whole")}))
    assert whole["generate"]["llm_failures"] == 0 and whole["generate"]["llm_retries"] == 0
    target = [r["prompt"] for r in server.requests if r.get("return_token_ids")][-1]  # the last seed's generation
    cfg = load_config("configs/data/fret_tiny.yaml", {**over, "output_dir": str(tmp_path / "flaky")})
    server.fail_if = lambda body: body.get("prompt") == target
    flaky = run(cfg)
    assert flaky["generate"]["llm_failures"] == 1 and flaky["generate"]["llm_retries"] == 3
    manifest = json.loads((tmp_path / "flaky" / "manifest.json").read_text())
    assert manifest["llm_failures"]["generate"] == 1 and manifest["llm_retries"]["generate"] == 3
    assert manifest["parse_failures"].get("llm_error") == 1
    assert manifest["records"] == whole["export"]["records"] - 1
    server.fail_if = lambda body: False
    again = run(cfg)  # not a reuse: the build had a failed call
    assert again["generate"]["llm_calls"] == 1 and again["generate"]["llm_failures"] == 0
    assert again["export"]["records"] == whole["export"]["records"]
