import json
import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_BERT = REPO / "configs" / "assets" / "tiny-bert"

# Tests never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# DeepSpeed compiles its CPU communication op (~45 s) on first use; the DeepSpeed tests' processes
# inherit this folder, so one compile serves them all, and later runs in this clone (ignored by git).
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".torch_extensions"))


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` beside the repo; a user's clone has none, so tests that need it skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def tiny_bert() -> Path:
    return TINY_BERT


@pytest.fixture
def one_thread():
    """One torch thread for tiny-model tests: tiny matmuls oversubscribing 2 shared cores run up to 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_dropout_bert(tiny_bert, tmp_path) -> Path:
    """The tiny BERT with dropout off: steps that must match across processes or compilers draw no masks."""
    folder = tmp_path / "tiny-bert-nodrop"
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder
