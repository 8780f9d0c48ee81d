"""data_builders.llm.server.VLLMServer without vLLM: its command swapped for a small HTTP server that
answers /v1/models as vLLM does. Checked: start() waits for the answer, the server sees the variables
given in `env` over this process's own, stop() ends its process group, and a server that exits at
start-up is a ServerStartError that ends with its log's last line."""

from __future__ import annotations

import sys

import httpx
import pytest

from data_builders.llm.server import ServerStartError, VLLMServer

FAKE = """
import http.server, os, sys, time
time.sleep(0.5)  # not ready at once, as vLLM
print("GECKO_TEST_VAR=" + os.environ.get("GECKO_TEST_VAR", "<unset>"), "KV=" + os.environ.get("VLLM_CPU_KVCACHE_SPACE", ""), flush=True)
class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.end_headers()
        self.wfile.write(b'{"data": []}')
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Models).serve_forever()
"""


def _fake(server: VLLMServer, code: str) -> VLLMServer:
    server.cmd = [sys.executable, "-c", code, str(server.port)]
    return server


def test_env_reaches_the_server_over_this_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GECKO_TEST_VAR", "from-parent")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    server = _fake(VLLMServer("model", "fake", tmp_path, startup_s=60, env={"GECKO_TEST_VAR": "given"}), FAKE)
    with server:
        assert httpx.get(f"{server.url}/models", timeout=5).status_code == 200
        proc = server.proc
    assert proc.poll() is not None  # stopped on exit
    log = server.log.read_text()
    assert "GECKO_TEST_VAR=given" in log and "KV=3" in log  # env wins over ours; the rest is inherited


def test_default_env_is_this_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GECKO_TEST_VAR", "from-parent")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    with _fake(VLLMServer("model", "fake", tmp_path, startup_s=60), FAKE) as server:
        pass
    assert "GECKO_TEST_VAR=from-parent KV=2" in server.log.read_text()  # 2 GiB of KV cache unless set


def test_a_server_that_exits_at_start_up_is_one_error_with_its_log(tmp_path):
    server = _fake(VLLMServer("model", "fake", tmp_path, startup_s=60), "import sys; print('no such model'); sys.exit(3)")
    with pytest.raises(ServerStartError, match="exited with 3 at start-up: no such model"):
        server.start()
