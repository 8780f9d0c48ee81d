"""RetrievalEvalCallback: logs eval/ndcg_at_10 and eval/spearman per Matryoshka dim, in process and under 2-process DDP."""

import csv
import os
import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from gecko_lightning.data import FRetDataModule
from gecko_lightning.evaluation.callback import RetrievalEvalCallback
from gecko_lightning.module import GeckoModule

REPO = Path(__file__).resolve().parents[1]
TINY_EVAL = REPO / "configs" / "assets" / "tiny_eval"
KEYS = {"eval/ndcg_at_10", "eval/ndcg_at_10@16", "eval/spearman", "eval/spearman@16"}
CALLBACK_YAML = f"""trainer:
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: LOGDIR}}
  callbacks:
    - class_path: gecko_lightning.evaluation.callback.RetrievalEvalCallback
      init_args:
        beir_dir: {TINY_EVAL / 'beir'}
        sts_file: {TINY_EVAL / 'sts.tsv'}
        every_n_steps: 2
"""


def _logged(log_dir: Path) -> list[dict]:
    (metrics,) = log_dir.rglob("metrics.csv")
    return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(metrics.open())]


@pytest.mark.slow
def test_callback_logs_per_dim_and_matches_a_fresh_compute(tmp_path, tiny_bert):
    torch.manual_seed(0)
    module = GeckoModule(str(tiny_bert), random_init=True, matryoshka_dims=[32, 16], lr=1e-3)
    data = FRetDataModule(str(REPO / "configs/assets/tiny_fret"), tokenizer=str(tiny_bert), batch_size=16, query_max_length=32, doc_max_length=64)
    callback = RetrievalEvalCallback(str(TINY_EVAL / "beir"), str(TINY_EVAL / "sts.tsv"), every_n_steps=2)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[callback], log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    rows = [r for r in _logged(tmp_path) if "eval/ndcg_at_10" in r]
    assert {int(r["step"]) for r in rows} >= {1, 3}  # logged right after optimizer steps 2 and 4 (CSV step is 0-based)
    assert all(KEYS <= set(r) for r in rows) and not any("@32" in k for r in rows for k in r)  # 32 is the full width
    # The last evaluation ran after the final step, so a fresh compute on the trained module must equal it.
    fresh = callback.compute(module)
    for key in KEYS:
        assert float(trainer.callback_metrics[key]) == pytest.approx(fresh[key], abs=1e-4)
    assert 0 <= fresh["eval/ndcg_at_10"] <= 100 and -100 <= fresh["eval/spearman"] <= 100


def test_callback_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="needs beir_dir and/or sts_file"):
        RetrievalEvalCallback(None, None)
    with pytest.raises(ValueError, match="prompts='plain'"):
        RetrievalEvalCallback(prompts="plain")
    with pytest.raises(Exception, match="BEIR folder .*nowhere not found"):
        RetrievalEvalCallback(beir_dir=str(tmp_path / "nowhere"), sts_file=None)


@pytest.mark.slow
def test_gecko_fit_tiny_yaml_ddp_two_processes_logs_eval(tmp_path):
    """`gecko fit --config configs/tiny.yaml` plus the callback, 2 gloo processes: rank 0 scores, nobody hangs."""
    gecko = shutil.which("gecko") or pytest.skip("the gecko command is not installed (pip install -e .)")
    extra = tmp_path / "eval.yaml"
    extra.write_text(CALLBACK_YAML.replace("LOGDIR", str(tmp_path / "logs")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [gecko, "fit", "--config", "configs/tiny.yaml", "--config", str(extra), "--trainer.accelerator=cpu",
           "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=4", f"--trainer.default_root_dir={tmp_path}",
           "--trainer.enable_progress_bar=false"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [r for r in _logged(tmp_path / "logs") if "eval/ndcg_at_10" in r]
    assert len(rows) >= 2 and all(KEYS <= set(r) for r in rows)
