"""GeckoModule: the LightningModule that fine-tunes a `GeckoEncoder` with Gecko's loss.

The loss lives in `losses.py`, the cross-device gather in `distributed.py` and the gradient cache in
`grad_cache.py`; this file only wires the encoder, the loss switches, the optimiser and the logging
together. Its checkpoints carry what `checkpoint.encoder_from_checkpoint` needs to rebuild the encoder
without this class: settings, text format, backbone config and tokenizer (`checkpoint.encoder_record`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from gecko_lightning.checkpoint import DATA_KEY, ENCODER_KEY, encoder_record
from gecko_lightning.encoder import GeckoEncoder, Pooling, drop_unused_pooler
from gecko_lightning.errors import UserError
from gecko_lightning.grad_cache import check_strategy, grad_cache_step
from gecko_lightning.losses import (
    DISTILL, HARD_NEGATIVES, contrastive_loss, in_batch_accuracy, matryoshka_distill_loss, matryoshka_loss,
)
from gecko_lightning.rng import rng_states, set_rng_states
from gecko_lightning.text_format import Template

Batch = dict[str, Any]


class GeckoModule(L.LightningModule):
    def __init__(
        self,
        model_name_or_path: str,
        tokenizer: str | None = None,
        random_init: bool = False,
        projection_dim: int | None = None,
        max_length: int = 512,
        temperature: float = 0.05,
        same_tower: bool = True,
        hard_negatives: Literal["own", "all", "none"] = "own",
        matryoshka_dims: list[int] | None = None,
        matryoshka_weights: list[float] | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_steps: int | float = 0,
        scheduler: Literal["linear", "cosine", "constant"] = "linear",
        grad_cache_chunk_size: int | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        attn_implementation: str | None = None,
        pooling: Pooling | None = None,
        distill: Literal["none", "kl", "margin_mse"] = "none",
        distill_weight: float = 1.0,
        teacher_temperature: float = 0.25,
        student_temperature: float | None = None,
    ) -> None:
        """
        Args:
            model_name_or_path: Hugging Face Hub name or local folder of the backbone (BERT-like or T5).
            tokenizer: tokenizer name or folder, when it differs from the backbone's.
            random_init: build the backbone from its config with random weights (tests, tiny runs).
            projection_dim: add a linear projection to this size after pooling.
            max_length: longest input `encode()` tokenizes; training lengths are the DataModule's.
            temperature: τ of the softmax; the paper does not state it, 0.05 is common.
            same_tower: add query-query similarities s(q_i, q_j), j≠i, to the denominator.
            hard_negatives: "own" (row i's negative only, Eq. 3), "all" (every row's) or "none".
            matryoshka_dims: train the first d dims, re-normalised, for each d (e.g. [768, 256]); None = full only.
            matryoshka_weights: one weight per Matryoshka dim; default 1 each.
            lr: peak AdamW learning rate.
            weight_decay: AdamW decay, never applied to biases and norm weights.
            warmup_steps: linear warm-up length; a float below 1 is a fraction of all steps.
            scheduler: decay after warm-up: "linear" or "cosine" to zero, or "constant".
            grad_cache_chunk_size: embed in chunks of this many texts with a gradient cache (large batches).
            gradient_checkpointing: trade compute for activation memory in the backbone.
            compile: `torch.compile` the backbone with dynamic shapes: one graph serves every batch
                size and sequence length, instead of one compile per padded length.
            attn_implementation: transformers' attention switch for the backbone: "sdpa", "eager",
                or "flash_attention_2" (CUDA, flash-attn installed), with which attention skips the
                pad tokens the mask marks; None keeps transformers' default (sdpa where supported).
            pooling: "mean" (the paper), "cls" or "lasttoken" (the last token the attention mask keeps);
                None follows the base model's folder (a sentence-transformers modules.json), else mean.
            distill: add the LLM's judgement over each FRet query's candidate list to Eq. 3: "kl" (its
                softmax over the list, matched by the embedder's), "margin_mse" (its score margins between
                the positive and each candidate), or "none" (Eq. 3 alone, bit for bit). The DataModule then
                attaches each record's list (`data.init_args.list_size`, `data.init_args.teacher_score`).
            distill_weight: weight of the distillation term; 0 computes and logs it without training on it.
            teacher_temperature: T of the teacher's scores (QL: mean token log-likelihoods); lower is sharper.
                0.25 makes SmolLM2's QL about as sharp as a student at 0.05 (at 1.0 `kl` flattened the
                student: docs/fret.md); Tamber et al. (2025) use 0.3.
            student_temperature: T of the embedder's cosines in the distillation term; None = `temperature`.
        """
        super().__init__()
        if not temperature > 0:
            raise UserError(f"model.temperature must be > 0, got {temperature}; the paper's default is 0.05")
        if hard_negatives not in HARD_NEGATIVES:
            raise UserError(f"model.hard_negatives must be one of {HARD_NEGATIVES}, got {hard_negatives!r}")
        if distill not in DISTILL:
            raise UserError(f"model.distill must be one of {DISTILL}, got {distill!r}")
        if not (teacher_temperature > 0 and (student_temperature is None or student_temperature > 0)):
            raise UserError(f"model.teacher_temperature ({teacher_temperature}) and model.student_temperature "
                            f"({student_temperature}) must be > 0 (student null = model.temperature)")
        if matryoshka_weights is not None and (matryoshka_dims is None or len(matryoshka_weights) != len(matryoshka_dims)):
            raise UserError(f"model.matryoshka_weights {matryoshka_weights} need one weight per matryoshka_dims entry ({matryoshka_dims})")
        self.save_hyperparameters()
        self.encoder = GeckoEncoder.from_pretrained(
            model_name_or_path, random_init=random_init, tokenizer=tokenizer, projection_dim=projection_dim,
            max_length=max_length, attn_implementation=attn_implementation, pooling=pooling,
            normalize=True,  # the loss compares cosines, whatever the base folder declares
        )
        if matryoshka_dims is not None and max(matryoshka_dims) > self.encoder.dim:
            raise UserError(
                f"matryoshka dim {max(matryoshka_dims)} exceeds the embedding dimension {self.encoder.dim} of "
                f"{model_name_or_path}; set model.matryoshka_dims to sizes <= {self.encoder.dim}"
            )
        # from_pretrained leaves the backbone in eval mode; training wants its dropout on.
        self.encoder.train()
        if gradient_checkpointing:
            self.encoder.backbone.gradient_checkpointing_enable()
        drop_unused_pooler(self.encoder.backbone)
        if compile:
            # In place (nn.Module.compile), so parameter names and checkpoints stay those of the eager model.
            self.encoder.backbone.compile(dynamic=True)
        self._resumed_rng: dict[str, Any] | None = None

    def embed(self, features: dict[str, Tensor]) -> Tensor:
        """(B, T) token features -> (B, D) L2-normalised embeddings."""
        return self.encoder(features["input_ids"], features["attention_mask"])

    def compute_loss(self, q: Tensor, pos: Tensor, neg: Tensor | None, batch: Batch,
                     candidates: Tensor | None = None) -> Tensor:
        """The configured loss on precomputed embeddings; GradCache calls it on cached ones too.

        With `model.distill` on and a batch with lists (`batch["list_index"]`), the distillation term
        joins Eq. 3 with `distill_weight`; its passages are rows of [pos, neg, candidates], where
        `candidates` (M, D) embeds the list passages that are not already a positive or a negative of
        the batch (`batch["candidates"]`; None when there are none)."""
        loss = self._contrastive(q, pos, neg, batch)
        self._terms = {"contrastive": loss.detach()}
        hp = self.hparams
        if hp.distill == "none" or "list_index" not in batch:
            return loss
        if ("negative" in batch) != (neg is not None) or ("candidates" in batch) != (candidates is not None):
            raise ValueError("the list pool needs the batch's negatives and candidates embedded (see _towers)")
        pool = torch.cat([pos] + [e for e in (neg, candidates) if e is not None])  # (B [+ B] [+ M], D)
        term = matryoshka_distill_loss(
            q, pool, batch["list_index"], batch["list_scores"], dims=hp.matryoshka_dims,
            weights=hp.matryoshka_weights, kind=hp.distill, teacher_temperature=hp.teacher_temperature,
            student_temperature=hp.student_temperature or hp.temperature)
        self._terms["distill"] = term.detach()
        return loss + hp.distill_weight * term

    def _contrastive(self, q: Tensor, pos: Tensor, neg: Tensor | None, batch: Batch) -> Tensor:
        hp = self.hparams
        kwargs = dict(
            temperature=hp.temperature,
            same_tower=batch.get("same_tower", True) if hp.same_tower else False,
            hard_negatives=hp.hard_negatives,
            pos_ids=batch.get("pos_ids"),
        )
        if hp.hard_negatives == "none":
            neg = None
        if hp.matryoshka_dims:
            return matryoshka_loss(q, pos, neg, dims=hp.matryoshka_dims, weights=hp.matryoshka_weights, **kwargs)
        return contrastive_loss(q, pos, neg, **kwargs)

    def _towers(self, batch: Batch) -> list[str]:
        """The batch keys to embed: the negative side when the loss or a list uses it, the remaining list
        passages only when a distillation term is on and the batch has lists (an NLI batch has none)."""
        lists = "list_index" in batch and self.hparams.distill != "none"
        negative = "negative" in batch and (self.hparams.hard_negatives != "none" or lists)
        return ["query", "positive"] + (["negative"] if negative else []) + (["candidates"] if lists and "candidates" in batch else [])

    def _step_loss(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, q, pos) of a plain (uncached) step."""
        emb = {k: self.embed(batch[k]) for k in self._towers(batch)}  # (B, D) each; candidates (M, D)
        loss = self.compute_loss(emb["query"], emb["positive"], emb.get("negative"), batch, emb.get("candidates"))
        return loss, emb["query"], emb["positive"]

    def grad_cache_step(self, batch: Batch) -> Tensor:
        """The training loss with a gradient cache (`model.grad_cache_chunk_size` texts per chunk);
        backpropagate it as usual. Logs the true loss and accuracy."""
        check_strategy(getattr(self._trainer, "strategy", None))
        loss, emb = grad_cache_step(self.embed, self.compute_loss, self.parameters(), batch, self._towers(batch),
                                    self.hparams.grad_cache_chunk_size)
        self._log_step("train", loss.detach(), emb["query"], emb["positive"])
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.hparams.grad_cache_chunk_size:
            return self.grad_cache_step(batch)
        loss, q, pos = self._step_loss(batch)
        self._log_step("train", loss, q, pos)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, q, pos = self._step_loss(batch)
        self._log_step("val", loss, q, pos)
        return loss

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, q, pos = self._step_loss(batch)
        self._log_step("test", loss, q, pos)
        return loss

    def _log_step(self, stage: str, loss: Tensor, q: Tensor, pos: Tensor) -> None:
        on_step = stage == "train"
        b = q.shape[0]
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, on_step=on_step, on_epoch=not on_step, batch_size=b, sync_dist=not on_step)
        if self.hparams.distill != "none":  # each term of the sum, so a sweep can see which one moved
            for name, value in getattr(self, "_terms", {}).items():
                self.log(f"{stage}/loss_{name}", value, on_step=on_step, on_epoch=not on_step, batch_size=b, sync_dist=not on_step)
        acc = in_batch_accuracy(q.detach(), pos.detach())
        self.log(f"{stage}/acc", acc, on_step=on_step, on_epoch=not on_step, batch_size=b, sync_dist=not on_step)
        if on_step and self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=b)

    def setup(self, stage: str) -> None:
        """Record the DataModule's text format on the encoder: checkpoints and exports then carry it."""
        datamodule = getattr(self._trainer, "datamodule", None)
        template = getattr(datamodule, "template", None)
        if isinstance(template, Template):
            self.encoder.text_format = template
        if self.hparams.distill != "none":
            if not hasattr(datamodule, "attach_lists"):
                raise UserError(f"model.distill={self.hparams.distill!r} needs candidate lists from the DataModule; "
                                f"{type(datamodule).__name__} has none: use gecko_lightning.data.MixtureDataModule or FRetDataModule")
            datamodule.attach_lists()

    # ---- checkpoints: the encoder's own record, and an exact resume ---------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()
        checkpoint[ENCODER_KEY] = encoder_record(self.encoder)
        checkpoint[DATA_KEY] = _data_record(getattr(self._trainer, "datamodule", None))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng = checkpoint.get("rng_states")
        saved = (checkpoint.get(ENCODER_KEY) or {}).get("settings", {}).get("text_format")
        if saved and self.encoder.text_format is None:
            self.encoder.text_format = Template.from_dict(saved)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Restore the saved generators just before the first step, not at load: between the two,
        Lightning and the DataLoader draw numbers that the uninterrupted run drew at other times."""
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = _split_decay(self)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, fused=_fused_ok(self))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(hp.warmup_steps * total) if isinstance(hp.warmup_steps, float) and hp.warmup_steps < 1 else int(hp.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp.scheduler, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def lr_lambda(kind: str, warmup: int, total: int):
    """Multiplier of the peak lr at step s: linear warm-up over `warmup` steps, then decay to 0 at `total`."""
    if kind not in ("linear", "cosine", "constant"):
        raise UserError(f"model.scheduler must be 'linear', 'cosine' or 'constant', got {kind!r}")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _split_decay(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Biases and every norm layer's weights get no weight decay (BERT LayerNorm, T5LayerNorm, RMSNorm)."""
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower():
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or id(p) in no_decay_ids else decay).append(p)
    return decay, no_decay


def _data_record(datamodule: Any) -> dict[str, dict[str, Any]]:
    """{source name: {path, source}}: the training sets, and where a converted set came from (its
    manifest's `source`, e.g. a Hub dataset name), for the exported model card."""
    from gecko_lightning.data.schema import read_manifest
    from gecko_lightning.tracking import data_paths

    out = {}
    for name, path in data_paths(datamodule).items():
        try:
            manifest = read_manifest(path) if Path(path).is_dir() else {}
        except ValueError:  # an unreadable manifest only costs the card its dataset line
            manifest = {}
        out[name] = {"path": path, "source": manifest.get("source")}
    return out


def _fused_ok(model: nn.Module) -> bool:
    """Fused AdamW saves a kernel launch per tensor on GPU; CPU keeps the reference path."""
    p = next(model.parameters())
    return p.is_cuda and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
