"""The random number generators a training step draws from, saved and restored as plain values.

Dropout draws from torch's CPU or CUDA generator; a resumed run that does not get them back takes
other masks from the first step on and drifts away from the run that never stopped. Only plain
types and tensors are stored, so a checkpoint loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when in use) this process's current CUDA device generator."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (name, key.tolist(), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # never start CUDA just to read it
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned; a CUDA state is skipped on a machine without CUDA."""
    random.setstate(states["python"])
    name, key, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
