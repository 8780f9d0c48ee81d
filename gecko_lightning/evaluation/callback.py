"""RetrievalEvalCallback: score small local retrieval and STS sets during training.

Rank 0 encodes and scores; the metrics are then broadcast so every rank logs the same numbers
(no rank waits on a collective the others skip, and checkpoint monitors see the values everywhere).
Encoding runs on rank 0 alone, so it does not suit DeepSpeed ZeRO-3, whose forward needs every rank.

YAML (under `trainer.callbacks`):
    - class_path: gecko_lightning.evaluation.callback.RetrievalEvalCallback
      init_args: {beir_dir: configs/assets/tiny_eval/beir, sts_file: configs/assets/tiny_eval/sts.tsv, every_n_steps: 6}
"""

from __future__ import annotations

import lightning as L
import torch

from gecko_lightning.errors import UserError
from gecko_lightning.evaluation import runner
from gecko_lightning.evaluation.loaders import load_beir, load_sts
from gecko_lightning.evaluation.prompts import PROMPT_STYLES, PromptMap


class RetrievalEvalCallback(L.Callback):
    def __init__(
        self,
        beir_dir: str | None = "configs/assets/tiny_eval/beir",
        sts_file: str | None = "configs/assets/tiny_eval/sts.tsv",
        every_n_steps: int = 0,
        at_epoch_end: bool = True,
        prompts: str = "model",
        batch_size: int = 64,
        prefix: str = "eval/",
    ) -> None:
        """
        Args:
            beir_dir: BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) -> `eval/ndcg_at_10`; None skips retrieval.
            sts_file: STS pairs file (see `gecko eval --sts`) -> `eval/spearman`; None skips STS.
            every_n_steps: also evaluate every N optimizer steps; 0 = only at epoch ends.
            at_epoch_end: evaluate at the end of each training epoch.
            prompts: "model" (as the model says: the format the DataModule trains with, which `setup`
                records on the encoder; for a DataModule without one, the prompts the base model's
                sentence-transformers config declares, else raw text), "gecko" (the paper's task/title
                formats) or "none" (raw text). The rule is `text_format.resolve_format`, as in `gecko eval`.
            batch_size: encoding batch size.
            prefix: metric name prefix; each Matryoshka dim d adds `...@d` (e.g. `eval/ndcg_at_10@32`).
        """
        if prompts not in PROMPT_STYLES:
            raise UserError(f"RetrievalEvalCallback prompts={prompts!r}: choose one of {PROMPT_STYLES}")
        if beir_dir is None and sts_file is None:
            raise UserError("RetrievalEvalCallback needs beir_dir and/or sts_file")
        # Read now, on every rank: a missing file fails at startup, not after hours of training.
        self.beir = load_beir(beir_dir) if beir_dir else None
        self.sts = load_sts(sts_file) if sts_file else None
        self.every_n_steps, self.at_epoch_end = every_n_steps, at_epoch_end
        self.prompts, self.batch_size, self.prefix = prompts, batch_size, prefix
        self.prompt_map = PromptMap.load()
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        # global_step counts optimizer steps; with gradient accumulation several batches share one value.
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._evaluate_and_log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_epoch_end and trainer.global_step != self._last_step:
            self._evaluate_and_log(trainer, pl_module)

    def _evaluate_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        metrics = self.compute(pl_module) if trainer.is_global_zero else None
        metrics = trainer.strategy.broadcast(metrics, src=0)  # every rank reaches this line: no hang
        for name, value in metrics.items():
            pl_module.log(name, value, sync_dist=False, rank_zero_only=False)

    def dims(self, pl_module: L.LightningModule) -> list[int | None]:
        """None (full width, plain names) plus each Matryoshka dim below the full width."""
        full = pl_module.encoder.dim
        extra = sorted({d for d in (pl_module.hparams.get("matryoshka_dims") or []) if d < full}, reverse=True)
        return [None, *extra]

    @torch.no_grad()
    def compute(self, pl_module: L.LightningModule) -> dict[str, float]:
        """{"eval/ndcg_at_10": x, "eval/ndcg_at_10@32": y, "eval/spearman": z, ...} on a 0-100 scale."""
        encoder, dims = pl_module.encoder, self.dims(pl_module)
        device = str(pl_module.device)
        out: dict[str, float] = {}
        if self.beir is not None:
            scores = runner.evaluate_beir(encoder, self.beir, dims, self.prompts, self.prompt_map, self.batch_size,
                                          show_progress=False, device=device)
            out.update(self._named(scores, "ndcg_at_10"))
        if self.sts is not None:
            task = self.prompt_map.task_type("STS")
            scores = runner.evaluate_sts(encoder, self.sts, dims, self.prompts, task, self.batch_size, show_progress=False, device=device)
            out.update(self._named(scores, "spearman"))
        return out

    def _named(self, scores: dict, metric: str) -> dict[str, float]:
        return {f"{self.prefix}{metric}" + (f"@{d}" if d else ""): float(per[metric]) for d, per in scores.items()}
