"""LightningDataModules that feed `GeckoModule`: one FRet folder, or a weighted mixture.

Both yield the training batch documented in `gecko_lightning.data` and share one engine:
`TripletDataset` (records -> formatted `Example`s), `GlobalBatchSampler` (the per-seed, per-epoch
plan of global batches, sharded by rank) and `TripletCollator` (tokenization in the workers).

Exact resume: the DataModule counts the training batches handed to the model in the current
epoch (`on_before_batch_transfer`), saves (epoch, count) in the checkpoint through
`state_dict()`, and on restore the sampler skips that many batches of the same epoch plan.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from gecko_lightning.data.formatting import Template, TripletCollator, load_tokenizer
from gecko_lightning.data.sampler import GlobalBatchSampler, source_weights
from gecko_lightning.data.schema import OnError, ReadStats
from gecko_lightning.data.sources import SourceConfig, TripletDataset, read_source
from gecko_lightning.errors import UserError

Sampling = Literal["proportional", "uniform", "temperature"]
TeacherScore = Literal["ql", "rc"]


class MixtureDataModule(LightningDataModule):
    """Many schema sources mixed by weight, optionally one source per global batch."""

    def __init__(
        self,
        sources: list[SourceConfig],
        tokenizer: str | None = None,
        batch_size: int = 32,
        sampling: Sampling = "proportional",
        temperature: float = 1.0,
        homogeneous_batches: bool = False,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        on_error: OnError = "raise",
        val_path: str | None = None,
        format: str = "gecko",
        query_template: str | None = None,
        document_template: str | None = None,
        group_by_length: int = 0,
        pad_to_multiple_of: int | None = None,
        list_size: int | None = None,
        teacher_score: TeacherScore = "ql",
    ) -> None:
        """
        Args:
            sources: The schema datasets to mix, each with its own formatting and false-negative options.
            tokenizer: Hugging Face fast tokenizer name or folder; usually linked from the model.
            batch_size: Rows per rank per step; a global batch is batch_size x world_size.
            sampling: Share of each source in an epoch: proportional to size, uniform, or size ** (1/temperature).
            temperature: T of `temperature` sampling (1 = proportional, large = uniform).
            homogeneous_batches: Every global batch, on all ranks, comes from one source (the paper's option).
            query_max_length: Token limit of the query side.
            doc_max_length: Token limit of the positive and negative sides.
            num_workers: DataLoader worker processes; tokenization runs in them.
            seed: Seed of the epoch plan; with the epoch it fixes every batch.
            on_error: `raise` on the first bad record, or `skip` bad rows (counted and logged at setup).
            val_path: Optional schema dataset for validation (fixed order, full batches).
            format: Text format preset: `gecko` (Table 7 of the paper) or `plain` (concatenation).
            query_template: Override of the query template ({task}, {query}).
            document_template: Override of the document template ({title}, {text}).
            group_by_length: Length grouping, off at 0 (the default). k > 1 draws pools of k global batches (of one
                source with homogeneous_batches), sorts each pool by length, cuts it into batches and shuffles
                the batch order: less padding, but a query meets in-batch negatives of similar length. The
                order stays a function of (seed, epoch), so ranks agree and resume is exact. 16 is a fair start.
            pad_to_multiple_of: Pad token length to a multiple of this (tensor-core friendly shapes).
            list_size: With `model.distill`, the candidates per FRet row (positive first, then the build's
                order); None keeps every candidate the build retrieved (`retrieve.top_n`).
            teacher_score: The LLM's score distilled: `ql` (query likelihood) or `rc` (relevance classification).
        """
        super().__init__()
        if list_size is not None and list_size < 2:
            raise UserError(f"list_size must be >= 2 (the positive and one other candidate) or null for all, got {list_size}")
        if not sources:
            raise UserError("MixtureDataModule needs at least one entry in `sources`; list the datasets to mix")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}; set data.init_args.batch_size to the rows per device")
        if group_by_length < 0 or group_by_length == 1:
            raise UserError(f"group_by_length must be 0 (off) or a pool of k > 1 batches, got {group_by_length}")
        self.sources = [s if isinstance(s, SourceConfig) else SourceConfig(**s) for s in sources]
        self.tokenizer_name = tokenizer
        self.batch_size, self.sampling, self.temperature = batch_size, sampling, temperature
        self.homogeneous_batches = homogeneous_batches
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length
        self.num_workers, self.seed, self.on_error, self.val_path = num_workers, seed, on_error, val_path
        self.template = Template.from_preset(format, query_template, document_template)
        self.group_by_length, self.pad_to_multiple_of = group_by_length, pad_to_multiple_of
        self.list_size, self.teacher_score = list_size, teacher_score
        self.read_stats: dict[str, ReadStats] = {}
        self.skipped_rows = 0
        self._epoch, self._consumed = 0, 0
        self._resume: dict[str, int] | None = None
        self._train_sampler: GlobalBatchSampler | None = None

    # ---- setup ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_dataset", None) is not None:
            return
        self.tokenizer = load_tokenizer(self.tokenizer_name, type(self).__name__)
        loaded = []
        for config in self.sources:
            table, stats = read_source(config, self.on_error)
            self.read_stats[config.display_name()] = stats
            loaded.append((config, table))
        self.skipped_rows = sum(len(s.skipped) for s in self.read_stats.values())
        self.train_dataset = TripletDataset(loaded, self.template)
        self.val_dataset = None
        if self.val_path:
            val_config = SourceConfig(path=self.val_path, name="val")
            self.val_dataset = TripletDataset([(val_config, read_source(val_config, self.on_error)[0])], self.template)

    def attach_lists(self) -> None:
        """Give FRet rows their candidate lists (GeckoModule calls this when `model.distill` is on)."""
        self.setup()
        if not self.train_dataset.attach_lists(self.list_size, self.teacher_score):
            raise UserError(f"model.distill needs candidate lists, but no training source has any ({', '.join(self.train_dataset.names)}); "
                            "a FRet build keeps them in meta.candidates: add one as a source, or set model.distill=none")
        if self.val_dataset is not None:
            self.val_dataset.attach_lists(self.list_size, self.teacher_score)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _weights(self) -> list[float]:
        sizes = self.train_dataset.sizes
        weights = source_weights(sizes, self.sampling, self.temperature)
        explicit = [c.weight for c in self.sources]
        if any(w is not None for w in explicit):
            weights = [w if w is not None else float(m) for w, m in zip(explicit, weights)]
            weights = [w / sum(weights) for w in weights]
        return list(weights)

    def _collator(self) -> TripletCollator:
        return TripletCollator(self.tokenizer, self.query_max_length, self.doc_max_length, self.pad_to_multiple_of)

    def _loader(self, dataset: TripletDataset, sampler: GlobalBatchSampler) -> DataLoader:
        return _ResumableLoader(
            dataset,
            batch_size=None,  # the sampler yields whole batches (lists of indices)
            sampler=sampler,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator(),  # seeded per epoch in _ResumableLoader.__iter__
        )

    def train_sampler(self) -> GlobalBatchSampler:
        rank, world = self._rank_world()
        ds = self.train_dataset
        sampler = GlobalBatchSampler(
            ds.sizes, self.batch_size, self._weights(), self.homogeneous_batches, True, self.seed, rank, world,
            lengths=ds.doc_lengths() if self.group_by_length > 1 else None,
            group_size=self.group_by_length, names=ds.names,
        )
        if self._resume is not None:
            sampler.skip = self._skip_for(sampler)
            sampler.set_epoch(self._resume["epoch"])
        return sampler

    def _skip_for(self, sampler: GlobalBatchSampler) -> tuple[int, int]:
        state = self._resume
        saved_k = state.get("group_by_length", 0)  # checkpoints from before length grouping have none
        if saved_k != self.group_by_length:
            rank_zero_warn(
                f"resuming with group_by_length {self.group_by_length} instead of {saved_k}: the epoch plan differs, "
                "so the rest of this epoch is approximate (keep group_by_length for an exact resume)"
            )
        if state["global_batch"] != sampler.global_batch or state["seed"] != self.seed:
            rank_zero_warn(
                f"resuming with global batch {sampler.global_batch} / seed {self.seed} instead of "
                f"{state['global_batch']} / {state['seed']}: the epoch plan differs, so the rest of this epoch "
                "is approximate (keep batch_size, world size and seed for an exact resume)"
            )
            return state["epoch"], state["consumed"] * state["global_batch"] // sampler.global_batch
        return state["epoch"], state["consumed"]

    def train_dataloader(self) -> DataLoader:
        self._train_sampler = self.train_sampler()
        return self._loader(self.train_dataset, self._train_sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        rank, world = self._rank_world()
        sampler = GlobalBatchSampler(
            self.val_dataset.sizes, self.batch_size, shuffle=False, seed=self.seed, rank=rank, world_size=world
        )
        return self._loader(self.val_dataset, sampler)

    # ---- exact resume ----------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the training batches the model actually receives (not those prefetched by workers)."""
        trainer = self.trainer
        if trainer is not None and trainer.training:
            if trainer.current_epoch != self._epoch:
                self._epoch, self._consumed = trainer.current_epoch, 0
            self._consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        sampler = self._train_sampler
        global_batch = sampler.global_batch if sampler is not None else self.batch_size * self._rank_world()[1]
        return {"epoch": self._epoch, "consumed": self._consumed, "seed": self.seed, "global_batch": global_batch,
                "group_by_length": self.group_by_length}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)
        self._epoch, self._consumed = state_dict["epoch"], state_dict["consumed"]


class _ResumableLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable mid-epoch (no "not resumable" warning).

    The resume state itself is the DataModule's `state_dict()`: the sampler skips the batches
    already consumed. The loader has nothing of its own to save.
    """

    def __iter__(self):
        # Each epoch's iterator draws the workers' base seed. From the global torch generator, that
        # draw would move dropout's stream at every epoch start, and a run resumed at an epoch
        # boundary would miss it; from (seed, epoch) it is the same in both runs.
        self.generator.manual_seed(self.sampler.seed * 1_000_003 + self.sampler.epoch)
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class FRetDataModule(MixtureDataModule):
    """One schema dataset (a FRet builder output folder or file); `MixtureDataModule` mixes many."""

    def __init__(
        self,
        path: str,
        tokenizer: str | None = None,
        batch_size: int = 32,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        on_error: OnError = "raise",
        val_path: str | None = None,
        symmetric: bool | None = None,
        same_tower: bool = True,
        format: str = "gecko",
        query_template: str | None = None,
        document_template: str | None = None,
        group_by_length: int = 0,
        pad_to_multiple_of: int | None = None,
        max_records: int | None = None,
        list_size: int | None = None,
        teacher_score: TeacherScore = "ql",
    ) -> None:
        """
        Args:
            path: Schema dataset: a shard file or a folder of shards (+ manifest.json).
            tokenizer: Hugging Face fast tokenizer name or folder; usually linked from the model.
            batch_size: Rows per rank per step; a global batch is batch_size x world_size.
            query_max_length: Token limit of the query side.
            doc_max_length: Token limit of the positive and negative sides.
            num_workers: DataLoader worker processes; tokenization runs in them.
            seed: Seed of the epoch plan; with the epoch it fixes every batch.
            on_error: `raise` on the first bad record, or `skip` bad rows (counted and logged at setup).
            val_path: Optional schema dataset for validation (fixed order, full batches).
            symmetric: Force the query format on both sides (True/False) or follow each record (None).
            same_tower: Whether the other queries of the batch act as negatives.
            format: Text format preset: `gecko` (Table 7 of the paper) or `plain` (concatenation).
            query_template: Override of the query template ({task}, {query}).
            document_template: Override of the document template ({title}, {text}).
            group_by_length: Length grouping, off at 0 (the default). k > 1 draws pools of k global batches (of one
                source with homogeneous_batches), sorts each pool by length, cuts it into batches and shuffles
                the batch order: less padding, but a query meets in-batch negatives of similar length. The
                order stays a function of (seed, epoch), so ranks agree and resume is exact. 16 is a fair start.
            pad_to_multiple_of: Pad token length to a multiple of this (tensor-core friendly shapes).
            max_records: Use only the first N records.
            list_size: With `model.distill`, the candidates per row (positive first); None keeps all.
            teacher_score: The LLM's score distilled: `ql` (query likelihood) or `rc` (relevance classification).
        """
        source = SourceConfig(path=path, symmetric=symmetric, same_tower=same_tower, max_records=max_records)
        super().__init__(
            [source], tokenizer=tokenizer, batch_size=batch_size, query_max_length=query_max_length,
            doc_max_length=doc_max_length, num_workers=num_workers, seed=seed, on_error=on_error,
            val_path=val_path, format=format, query_template=query_template,
            document_template=document_template, group_by_length=group_by_length,
            pad_to_multiple_of=pad_to_multiple_of, list_size=list_size, teacher_score=teacher_score,
        )
        self.path = path
