"""`gecko fit` prints none of Lightning's "💡 Tip" adverts (litlogger, litmodels); its other lines stay."""

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from gecko_lightning.lightning_cli import TIP_LOGGERS, _NoIntegrationTips, quiet_integration_tips


def _fit_messages(tmp_path, caplog) -> list[str]:
    """Lightning's console messages of a one-step fit with a default checkpoint and no logger."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(BoringModel())
    return [r.getMessage() for r in caplog.records]


@pytest.fixture
def unfiltered():
    """The tip loggers without our filter, restored afterwards (other tests may have installed it)."""
    saved = {name: list(logging.getLogger(name).filters) for name in TIP_LOGGERS}
    for name in TIP_LOGGERS:
        for f in saved[name]:
            if isinstance(f, _NoIntegrationTips):
                logging.getLogger(name).removeFilter(f)
    yield
    for name in TIP_LOGGERS:
        logging.getLogger(name).filters[:] = saved[name]


def test_the_two_tips_are_dropped_and_the_rest_is_kept(tmp_path, caplog, unfiltered):
    torch.manual_seed(0)
    before = _fit_messages(tmp_path / "a", caplog)
    tips = [m for m in before if m.startswith("💡 Tip")]
    assert len(tips) == 2 and "litlogger" in tips[0] + tips[1] and "litmodels" in tips[0] + tips[1]  # what a user saw
    quiet_integration_tips()
    quiet_integration_tips()  # idempotent: one filter per logger
    assert all(sum(isinstance(f, _NoIntegrationTips) for f in logging.getLogger(n).filters) == 1 for n in TIP_LOGGERS)
    after = _fit_messages(tmp_path / "b", caplog)
    assert not [m for m in after if "💡" in m]
    assert [m for m in after if m.startswith("GPU available")] == [m for m in before if m.startswith("GPU available")] != []
