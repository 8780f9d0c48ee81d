"""Turn records into model text and tokenized batches.

The templates are `gecko_lightning.text_format.Template` (the `gecko` preset of Table 7, or `plain`),
the one home evaluation and export format with too. Symmetric records (STS, NLI, classification)
put the query format on both sides, their title joined to the text; `Example` holds the formatted strings.

`TripletCollator` runs inside DataLoader workers: it tokenizes the query side and the
document sides with their own max lengths and pads each to the longest row of the batch.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from gecko_lightning.data.schema import Passage, Record
from gecko_lightning.errors import UserError
from gecko_lightning.paths import local_model_path, model_loading, resolve_path
from gecko_lightning.text_format import Template


class Example(NamedTuple):
    """One formatted training row: what a Dataset yields and the collate consumes.

    `group` names the rows that must not act as each other's in-batch negatives: rows
    with the same group get the same `pos_ids` value (duplicate positive, or same class).
    """

    id: str
    query: str
    positive: str
    negative: str | None
    group: str
    same_tower: bool = True
    candidates: tuple[str, ...] = ()  # a FRet row's list passages, positive first (model.distill)
    teacher: tuple[float, ...] = ()  # the LLM's score of each


def format_record(
    record: Record,
    template: Template,
    symmetric: bool | None = None,
    unique_id: str | None = None,
    same_tower: bool = True,
    group: str | None = None,
    candidates: Sequence[Passage] = (),
    teacher: Sequence[float] = (),
) -> Example:
    """Format one record. `symmetric=None` follows the record's own flag.

    `candidates` (a candidate list's passages, with the `teacher`'s score of each) are formatted as the
    positive is, so the distillation term compares the very strings the contrastive term does.
    `unique_id` is appended to x, x+ and x- (the paper's fix for classification false
    negatives); `group` defaults to the positive text so duplicates are masked by the loss.
    """
    symmetric = record.symmetric if symmetric is None else symmetric
    suffix = f" {unique_id}" if unique_id else ""

    def side(p: Passage) -> str:
        text = template.format_symmetric(record.task, p.title, p.text) if symmetric else template.format_document(p.title, p.text)
        return text + suffix

    positive = side(record.positive)
    return Example(
        id=record.id,
        query=template.format_query(record.task, record.query) + suffix,
        positive=positive,
        negative=side(record.negative) if record.negative is not None else None,
        group=group if group is not None else "text\0" + positive,
        same_tower=same_tower,
        candidates=tuple(side(p) for p in candidates),
        teacher=tuple(teacher),
    )


def stable_id(key: str) -> int:
    """A 63-bit id that is the same on every rank and run (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def load_tokenizer(name_or_path: str | None, owner: str = "the DataModule") -> PreTrainedTokenizerBase:
    """A fast HF tokenizer, or a clear error saying how to set one."""
    if not name_or_path:
        raise UserError(
            f"{owner} needs a tokenizer: set `data.tokenizer` (a Hugging Face tokenizer name or folder, "
            "e.g. configs/assets/tiny-bert) or link it from `model.model_name_or_path`"
        )
    path = local_model_path(resolve_path(name_or_path), "tokenizer")
    with model_loading(path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise UserError(f"tokenizer {name_or_path!r} is not a fast (Rust) tokenizer; the loader needs one for speed")
    return tokenizer


class TripletCollator:
    """list[Example] -> the training batch dict (see module docstring of `gecko_lightning.data`).

    Shapes: query (B, Tq) with Tq <= query_max_length; positive/negative (B, Tp) with
    Tp <= doc_max_length; each side padded to its own longest row (dynamic padding).
    Rows without a negative borrow the positive of row (i+1) % B, which is already an
    in-batch negative for row i, so the loss sees a full (B, Tp) negative block; rows of the
    same group (a duplicate positive, the same class) are passed over, they are no negative.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no pad token: set one (e.g. the eos token)")
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_id = tokenizer.pad_token_id
        # The Rust tokenizer directly, one copy per side (truncation is its state): padding and
        # tensor building in numpy halve the CPU time of the transformers __call__ path.
        self._rust = {n: _truncating(tokenizer, n) for n in {query_max_length, doc_max_length}}

    def _encode(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        rust = self._rust[max_length]
        encode = getattr(rust, "encode_batch_fast", rust.encode_batch)  # _fast skips char offsets
        seqs = [e.ids for e in encode(list(texts))]
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))  # (B,)
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)  # (B, T)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)  # (B, T)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        _quiet_forked_tokenizer()
        n = len(examples)
        batch: dict[str, Any] = {
            "query": self._encode([e.query for e in examples], self.query_max_length),
            "positive": self._encode([e.positive for e in examples], self.doc_max_length),
        }
        negatives = None
        if any(e.negative is not None for e in examples):
            negatives = [e.negative or _borrowed(examples, i) for i, e in enumerate(examples)]
            batch["negative"] = self._encode(negatives, self.doc_max_length)
            batch["neg_filled"] = sum(e.negative is None for e in examples)
        batch["pos_ids"] = torch.tensor([stable_id(e.group) for e in examples], dtype=torch.long)  # (B,)
        batch["same_tower"] = torch.tensor([e.same_tower for e in examples], dtype=torch.bool)  # (B,)
        batch["ids"] = [e.id for e in examples]
        if any(len(e.candidates) >= 2 for e in examples):
            batch.update(self._lists(examples, negatives))
        return batch

    def _lists(self, examples: Sequence[Example], negatives: Sequence[str] | None) -> dict[str, Any]:
        """The batch's candidate lists, as rows of the pool [positives (B), negatives (B, when the batch
        has them), candidates (M)]: a list passage that is already a positive or a negative of the batch
        (a list holds its record's positive first, and the build's negative is one of its candidates)
        points at that row, and each other distinct passage is tokenized once into `candidates`.
        Per row: the indices of its list's passages (B, K; -1 pads a shorter list) and the teacher's
        scores (B, K). `candidates` is absent when every list passage is a positive or a negative."""
        pool: dict[str, int] = {}
        for i, e in enumerate(examples):
            pool.setdefault(e.positive, i)
        for i, text in enumerate(negatives or ()):
            pool.setdefault(text, len(examples) + i)
        offset = len(examples) * (2 if negatives is not None else 1)
        rest: dict[str, int] = {}
        k = max(len(e.candidates) for e in examples)
        index = np.full((len(examples), k), -1, dtype=np.int64)  # (B, K)
        scores = np.zeros((len(examples), k), dtype=np.float32)  # (B, K)
        for row, e in enumerate(examples):
            for slot, (text, score) in enumerate(zip(e.candidates, e.teacher, strict=True)):
                shared = pool.get(text)
                index[row, slot] = shared if shared is not None else offset + rest.setdefault(text, len(rest))
                scores[row, slot] = score
        lists: dict[str, Any] = {"list_index": torch.from_numpy(index), "list_scores": torch.from_numpy(scores)}
        if rest:
            lists["candidates"] = self._encode(list(rest), self.doc_max_length)
        return lists


def _borrowed(examples: Sequence[Example], i: int) -> str:
    """The positive of the next row after i outside row i's group (row i+1 if all share it)."""
    n = len(examples)
    for step in range(1, n):
        if examples[(i + step) % n].group != examples[i].group:
            return examples[(i + step) % n].positive
    return examples[(i + 1) % n].positive


def _truncating(tokenizer: PreTrainedTokenizerBase, max_length: int):
    """A copy of the fast tokenizer's Rust backend that truncates to max_length (special tokens included)."""
    rust = copy.deepcopy(tokenizer.backend_tokenizer)
    rust.no_padding()
    rust.enable_truncation(max_length)
    return rust


def _quiet_forked_tokenizer() -> None:
    """In a worker, Rust-side threads only fight the other workers for cores: turn them off."""
    if torch.utils.data.get_worker_info() is not None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
