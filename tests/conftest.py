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


def pytest_collection_modifyitems(session, config, items):
    """The longest files first: those with a `published` test (a real model over a real set, minutes),
    then those with `slow` tests. `make test` runs the suite on pytest-xdist workers, one file to a
    worker at a time in this order, so the longest test runs beside the rest instead of after them.
    The order within a file is kept; the sort is stable, so every worker collects the same order."""
    def weight(item) -> int:
        marks = files.get(item.path, set())
        return 0 if "published" in marks else 1 if "slow" in marks else 2

    files: dict = {}
    for item in items:
        files.setdefault(item.path, set()).update(m.name for m in item.iter_markers())
    items.sort(key=weight)
