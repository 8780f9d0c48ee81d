import os
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
