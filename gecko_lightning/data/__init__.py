"""Training data: the record schema, formatting/collate, samplers and DataModules.

Every DataModule here yields the training batch that `GeckoModule.training_step` consumes:

    {"query":    {"input_ids": LongTensor(B, Tq), "attention_mask": LongTensor(B, Tq)},
     "positive": {"input_ids": LongTensor(B, Tp), "attention_mask": LongTensor(B, Tp)},
     "negative": {...same...},   # absent when no row of the batch has a negative
     "neg_filled": int,          # rows whose missing negative was filled with the positive of row (i+1) % B
     "pos_ids": LongTensor(B),   # equal ids = duplicate positive or same class: not negatives of each other
     "same_tower": BoolTensor(B),
     "ids": list[str],           # record ids
     # with model.distill, when a row of the batch has a candidate list (a FRet build's meta.candidates):
     "candidates": {...},        # (M, Tp) each distinct list passage that is not a positive or negative of the batch
     "list_index": LongTensor(B, K),    # each row's list as rows of [positive, negative, candidates], positive first; -1 pads
     "list_scores": FloatTensor(B, K)}  # the LLM's score of each (data.init_args.teacher_score)

May import: the rest of `gecko_lightning` except `module` and `cli`; never `data_builders`. `schema`,
the contract with the builder, imports no Lightning (import-linter checks both).
"""

from gecko_lightning.data.datamodule import FRetDataModule, MixtureDataModule
from gecko_lightning.data.formatting import Example, Template, TripletCollator
from gecko_lightning.data.sampler import GlobalBatchSampler
from gecko_lightning.data.sources import SourceConfig, TripletDataset

__all__ = [
    "Example",
    "FRetDataModule",
    "GlobalBatchSampler",
    "MixtureDataModule",
    "SourceConfig",
    "Template",
    "TripletCollator",
    "TripletDataset",
]
