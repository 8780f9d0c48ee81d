"""W&B logging: never asks for a login, records the resolved config and metrics; throughput counts real tokens."""

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from gecko_lightning.data.schema import write_manifest
from gecko_lightning.lightning_cli import run_lightning_cli
from gecko_lightning.report import offline_runs
from gecko_lightning.tracking import Throughput, data_manifests, resolve_wandb_mode

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    """A machine without `wandb login`: no key in the environment, an empty home (no ~/.netrc)."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "CI", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_mode_is_offline_without_a_key_and_in_ci(no_key, monkeypatch):
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode() == "online"
    monkeypatch.setenv("CI", "true")
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled"
    assert resolve_wandb_mode("online") == "online"


def test_netrc_login_counts_as_a_key(no_key, tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode() == "online"


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match=r"W&B mode 'ofline' is not one of \('online', 'offline', 'disabled'\)"):
        resolve_wandb_mode("ofline")


class _Recorder:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append(dict(metrics))


def _batch(rng, b):
    sides = {}
    for side, t in (("query", 5), ("positive", 9), ("negative", 7)):
        lengths = torch.randint(1, t + 1, (b,), generator=rng)
        mask = (torch.arange(t)[None, :] < lengths[:, None]).long()  # (b, t) right-padded
        sides[side] = {"input_ids": torch.ones(b, t, dtype=torch.long), "attention_mask": mask}
    return sides


def test_throughput_counts_non_pad_tokens_and_triples():
    """tokens/s : triples/s equals (sum of mask entries) : (rows), whatever the wall time was."""
    logger = _Recorder()
    trainer = SimpleNamespace(log_every_n_steps=3, world_size=1, is_global_zero=True, loggers=[logger], global_step=0,
                              strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    callback, rng = Throughput(), torch.Generator().manual_seed(0)
    batches = [_batch(rng, b) for b in (4, 4, 4, 2, 2, 2)]
    callback.on_train_epoch_start(trainer, None)
    for i, batch in enumerate(batches):
        callback.on_train_batch_start(trainer, None, batch, i)
        callback.on_train_batch_end(trainer, None, None, batch, i)
    assert len(logger.rows) == 2  # one row per 3 batches
    for row, window in zip(logger.rows, (batches[:3], batches[3:])):
        tokens = sum(int(b[s]["attention_mask"].sum()) for b in window for s in ("query", "positive", "negative"))
        triples = sum(b["query"]["input_ids"].shape[0] for b in window)
        ratio = row["throughput/tokens_per_s"] / row["throughput/triples_per_s"]
        assert ratio == pytest.approx(tokens / triples)


def test_data_manifest_is_summarised(tmp_path):
    folder = tmp_path / "fret"
    folder.mkdir()
    (folder / "shard-00000.jsonl").write_text("")
    write_manifest(folder, source="fret", positive_ne_seed_rate=0.15, task_distribution={"qa": 3},
                   config={"select": {"positive": "llm_top1", "negative": "lowest"}}, stages={"big": 1})
    dm = SimpleNamespace(sources=[SimpleNamespace(path=str(folder), display_name=lambda: "fret")])
    got = data_manifests(dm)["fret"]
    assert got["positive_ne_seed_rate"] == 0.15 and got["task_distribution"] == {"qa": 3}
    assert got["config"]["select"]["negative"] == "lowest" and "stages" not in got and "shards" not in got


def _fit(argv):
    import wandb

    try:
        run_lightning_cli(["fit", "--config", "configs/tiny.yaml", "--trainer.max_steps=4",
                           "--trainer.accelerator=cpu", *argv])
    finally:
        wandb.finish()  # one W&B run per process is the norm; tests run several
        wandb.teardown()  # flushes the run file before the test reads it


@pytest.mark.slow
def test_tiny_fit_logs_config_and_metrics_to_offline_wandb(tmp_path, monkeypatch, no_key, caplog):
    monkeypatch.chdir(REPO)
    _fit([f"--trainer.default_root_dir={tmp_path}", "--trainer.log_every_n_steps=2"])
    assert f"W&B is offline: the run is in {tmp_path}" in caplog.text
    (run,) = offline_runs(tmp_path / "wandb")
    assert run["finished"]
    config = run["config"]
    assert config["model"]["temperature"] == 0.05 and config["model"]["matryoshka_dims"] == [32, 16]
    assert config["data"]["init_args"]["path"] == "configs/assets/tiny_fret"
    assert config["trainer"]["max_steps"] == 4  # the override, not the file's 12
    assert len(config["git"].get("commit", "x" * 40)) == 40
    summary = run["summary"]
    for key in ("train/loss", "train/acc", "train/lr", "throughput/triples_per_s", "throughput/tokens_per_s"):
        assert isinstance(summary.get(key), (int, float)), (key, sorted(summary))
    saved = yaml.safe_load((Path(run["path"]).parent / "files" / "gecko_config.yaml").read_text())
    assert saved["model"] == config["model"]


@pytest.mark.slow
def test_logger_false_and_csv_logger_still_work(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    _fit([f"--trainer.default_root_dir={tmp_path / 'none'}", "--trainer.logger=false"])
    assert not (tmp_path / "none" / "wandb").exists()
    assert (tmp_path / "none" / "config.yaml").is_file()
    _fit(["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp_path / 'csv'}",
          "--trainer.log_every_n_steps=2"])
    (metrics,) = (tmp_path / "csv").rglob("metrics.csv")
    header = next(csv.reader(metrics.open()))
    assert "throughput/tokens_per_s" in header and "train/loss" in header
    hparams = yaml.safe_load(next((tmp_path / "csv").rglob("hparams.yaml")).read_text())
    assert hparams["model"]["hard_negatives"] == "own"
