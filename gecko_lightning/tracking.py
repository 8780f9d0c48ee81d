"""Experiment tracking: a W&B logger that never blocks, the run's metadata, and throughput.

`gecko fit` logs to W&B by default (see `lightning_cli.py`). Without an API key, and in CI, the
run is written offline under `<trainer.default_root_dir>/wandb/` and `gecko sync <folder>` uploads
it later (docs/tracking.md); `--trainer.logger=false` or a CSVLogger replace it. Everything here writes on rank 0 only.

    GeckoWandbLogger   WandbLogger whose mode is resolved so that it never asks for a login
    GeckoSaveConfig    logs the resolved config, the git commit, the data manifests and the dataset
                       artifacts the data came from (`inputs`, artifacts.py) to every logger
    log_export         the fit's exported model as a `model` artifact of its run (`export_model`)
    Throughput         triples/s and non-pad tokens/s, one host sync per logging interval
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor

from gecko_lightning.artifacts import (  # noqa: F401  (MODES, WandbMode, has_wandb_api_key: re-exported)
    MODES, RECORD, WandbMode, artifact_name, declare_inputs, folder_inputs, has_wandb_api_key, log_folder,
    read_run_record, resolve_wandb_mode, write_run_record,
)
from gecko_lightning.data.schema import read_manifest

# Manifest keys too bulky for a run's config (per-stage logs, shard lists); the manifest file keeps them.
_MANIFEST_SKIP = ("shards", "stages")

class GeckoWandbLogger(WandbLogger):
    """`WandbLogger` that runs offline (and says where) unless a W&B key is available."""

    def __init__(
        self,
        project: str = "gecko",
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        mode: WandbMode | None = None,
        save_dir: str | None = None,
        log_model: bool = False,
        export_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            project: W&B project.
            entity: W&B team or user; None = the key's default entity.
            name: Run name; None lets W&B pick one.
            group: Run group, e.g. one per sweep; defaults to $WANDB_RUN_GROUP.
            tags: Run tags.
            mode: online | offline | disabled; None = $WANDB_MODE, else offline in CI or without an API key.
            save_dir: Parent of the `wandb/` run folders; `gecko fit` fills in trainer.default_root_dir.
            log_model: Upload checkpoints as W&B artifacts (online runs only).
            export_model: After a successful fit, `gecko export` the last checkpoint into this folder and log
                it as a `model` artifact of this run, offline too (docs/tracking.md); None: neither.
        """
        self.mode = resolve_wandb_mode(mode)
        group = group or os.environ.get("WANDB_RUN_GROUP")
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True, exist_ok=True)  # wandb falls back to /tmp if it is missing
        super().__init__(
            project=project, entity=entity, name=name, group=group, tags=tags, mode=self.mode,
            save_dir=save_dir, log_model=log_model, **{"job_type": "fit", **kwargs},
        )
        self._announced = False
        self.export_model = export_model
        self._last_checkpoint: str | None = None

    @property
    def experiment(self):  # noqa: ANN201 - wandb's Run, imported lazily
        run = super().experiment
        # On ranks > 0 Lightning hands back a placeholder whose `dir` is a method, not a folder.
        if not self._announced and self.mode == "offline" and isinstance(getattr(run, "dir", None), str):
            folder = Path(run.dir).parent  # run.dir is <run folder>/files
            rank_zero_info(f"W&B is offline: the run is in {folder}; upload it later with `gecko sync {folder}` (or `wandb sync`)")
            self._announced = True
        return run

    def after_save_checkpoint(self, checkpoint_callback) -> None:  # noqa: ANN001 - a ModelCheckpoint
        super().after_save_checkpoint(checkpoint_callback)
        self._last_checkpoint = checkpoint_callback.last_model_path or checkpoint_callback.best_model_path or None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "success" and self.export_model and self.mode != "disabled":
            log_export(self.experiment, self._last_checkpoint, self.export_model)


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """{commit, dirty} of the checkout holding the code, or {} outside a git checkout."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def data_paths(datamodule: Any) -> dict[str, str]:
    """{source name: path} of a FRet/Mixture DataModule (or any with `.path` / `.sources`)."""
    if datamodule is None:
        return {}
    sources = getattr(datamodule, "sources", None)
    if sources:
        names = [s.display_name() if hasattr(s, "display_name") else Path(s.path).name for s in sources]
        return {name: str(s.path) for name, s in zip(names, sources)}
    path = getattr(datamodule, "path", None)
    return {Path(path).name: str(path)} if path else {}


def data_manifests(datamodule: Any) -> dict[str, dict[str, Any]]:
    """{source name: manifest summary} for every source folder that has a `manifest.json`.

    The FRet builder's manifest carries the positive-changed rate, the task distribution and the
    build config (`config.select.positive/negative`), which `gecko report` groups runs by.
    """
    out = {}
    for name, path in data_paths(datamodule).items():
        if Path(path).is_dir():
            manifest = read_manifest(path)
            if manifest:
                out[name] = {k: v for k, v in manifest.items() if k not in _MANIFEST_SKIP} | {"path": path}
    return out


class GeckoSaveConfig(SaveConfigCallback):
    """Save config.yaml as LightningCLI does, and log the same resolved config to every logger.

    With it a W&B run alone reproduces the run: `config` holds every key `gecko fit` resolved
    (defaults included), plus `git` and `data_manifest`. Runs on rank 0 only (Lightning's contract).
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        params = yaml.safe_load(text) or {}
        params.pop("config", None)  # the --config file paths: the resolved values are already here
        params["git"] = git_info()
        params["data_manifest"] = data_manifests(trainer.datamodule)
        # The dataset artifacts of the builds it trains on (name, digest): W&B refuses use_artifact offline.
        params["inputs"] = inputs = folder_inputs(data_paths(trainer.datamodule).values())
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
            if isinstance(logger, WandbLogger) and getattr(logger, "mode", None) != "disabled" and logger.experiment.dir:
                # The exact YAML, so `gecko fit --config gecko_config.yaml` repeats the run.
                (Path(logger.experiment.dir) / "gecko_config.yaml").write_text(text)
                declare_inputs(logger.experiment, inputs)
                write_run_record(logger.experiment, "fit", inputs, outputs=[])


def log_export(run, checkpoint: str | None, out_dir: str | Path) -> dict[str, Any] | None:
    """`gecko export` `checkpoint` into `out_dir` and log that folder as a `model` artifact of `run`.

    The artifact is named `model-<run id>`, as Lightning names its checkpoint artifacts; the folder gets
    its record (wandb_artifact.json), so `gecko eval --wandb --model out_dir` declares it as its input.
    """
    from gecko_lightning.export import export  # loads the model: only at the end of a fit that asks for it

    if not checkpoint or not Path(checkpoint).exists():
        rank_zero_info(f"export_model: no checkpoint was saved, so nothing was exported to {out_dir}")
        return None
    export(checkpoint, out_dir, overwrite=True)
    files = [p for p in Path(out_dir).rglob("*") if p.is_file() and p.name != RECORD]
    record = log_folder(run, out_dir, artifact_name(f"model-{run.id}"), "model", files,
                        metadata={"checkpoint": str(checkpoint)})
    previous = read_run_record(Path(run.dir).parent) or {}
    write_run_record(run, "fit", previous.get("inputs", []), outputs=[record])
    rank_zero_info(f"exported {checkpoint} to {out_dir} and logged it as W&B artifact {record['name']} (model)")
    return record


def _count_tokens(batch: dict[str, Any]) -> Tensor | None:
    """Non-pad tokens of the query, positive and negative sides: a device scalar (no host sync)."""
    total = None
    for side in ("query", "positive", "negative"):
        if isinstance(batch.get(side), dict) and "attention_mask" in batch[side]:
            n = batch[side]["attention_mask"].sum()
            total = n if total is None else total + n
    return total


class Throughput(L.Callback):
    """Logs `throughput/triples_per_s` and `throughput/tokens_per_s` over all ranks.

    Token counts accumulate on the device; the one host sync (and one all-reduce) happens every
    `every_n_batches` batches, when the numbers are logged, so steps in between never wait.
    """

    def __init__(self, every_n_batches: int | None = None) -> None:
        """
        Args:
            every_n_batches: Logging interval in training batches; None = trainer.log_every_n_steps.
        """
        self.every_n_batches = every_n_batches
        self._reset()

    def _reset(self) -> None:
        self._start, self._triples, self._tokens, self._batches = time.perf_counter(), 0, None, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()  # skip the time spent in set-up, validation and data loader start-up

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        tokens = _count_tokens(batch) if isinstance(batch, dict) else None
        if tokens is not None:
            self._tokens = tokens if self._tokens is None else self._tokens + tokens
        if isinstance(batch, dict) and isinstance(batch.get("query"), dict):
            self._triples += int(batch["query"]["input_ids"].shape[0])  # a shape: known on the host
        self._batches += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.every_n_batches or trainer.log_every_n_steps
        if self._batches < every:
            return
        seconds = max(time.perf_counter() - self._start, 1e-9)
        world = trainer.world_size  # equal batch sizes on every rank (the samplers drop the last one)
        metrics = {"throughput/triples_per_s": self._triples * world / seconds}
        if self._tokens is not None:
            tokens = trainer.strategy.reduce(self._tokens.float(), reduce_op="sum")  # all ranks reach this line
            metrics["throughput/tokens_per_s"] = float(tokens) / seconds
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        self._reset()
