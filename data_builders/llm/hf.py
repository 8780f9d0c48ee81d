"""Any Hugging Face causal LM (GGUF included) as an FRet LLM, on GPU or CPU.

Everything is left-padded, so the tokens we score sit at the end of every row. That lets QL and RC
ask the model for the last k logits only (`logits_to_keep`) instead of a (B, T, vocab) tensor, and
explicit position ids keep a padded row's numbers equal to the same row run alone.

With `llm.score_from_prefix_cache`, scoring rows that arrive one after another with a long common
prefix (the re-rank stage then sends a passage's pairs together) share it: the prefix runs once, then
the rows' remaining tokens run as one batch on a copy of its KV cache (`past_key_values`). Scores stay
within 1e-5 nats of the full-prompt path (tests/test_builder_hf.py) but are not bit-equal to it, and a
row's last digits depend on its neighbours; docs/benchmarks.md has the speed-up.
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.nn.functional as F

from gecko_lightning.paths import model_loading, resolve_path

from ..config import LLMConfig
from .base import LLM, GenRequest
from .tokens import PromptTokens, ScoringRow, cut_at_stop

MIN_SHARED_PREFIX = 16
"""Tokens two consecutive scoring rows must share before their prefix is run once for both."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TransformersLLM(LLM):
    def __init__(self, cfg: LLMConfig, seed: int = 0) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        path = resolve_path(cfg.model)
        kw = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
        tok_path = resolve_path(cfg.tokenizer) if cfg.tokenizer else path
        with model_loading(tok_path, "tokenizer"):
            self.tokenizer = AutoTokenizer.from_pretrained(tok_path, **({} if cfg.tokenizer else kw))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        dtype = getattr(torch, cfg.dtype)
        with model_loading(path, "LLM"):
            if cfg.random_init:  # tiny smoke-test model: weights from a fixed seed, never downloaded
                torch.manual_seed(seed)
                self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
            else:
                self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)
        self.device = _device(cfg.device)
        self.model.to(self.device).eval()
        # transformers 5.20+ names the KV cache `cache` (in and out); earlier releases `past_key_values`.
        self._kv_name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        init = f"random-init-seed{seed}" if cfg.random_init else "pretrained"
        self.prompts = PromptTokens(self.tokenizer, cfg.chat_template)
        self.cache_stats = {"prompt_tokens": 0, "cached_tokens": 0}
        """Scoring tokens asked for, and those a shared prefix saved (run once for a run of rows, not per row)."""
        self.model_id = f"transformers:{cfg.model}:{cfg.gguf_file or ''}:{init}:{cfg.dtype}:tok-{self.prompts.fingerprint()}"

    # ---- padding

    def _left_pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """Token id lists -> left-padded input_ids, attention_mask and position_ids, each (B, T)."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # a row's first real token is position 0
        batch = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def _last_logprobs(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        """Log-softmax over the vocabulary for the last `keep` positions of each row: (B, keep, V)."""
        return F.log_softmax(self._last_logits(keep, **self._left_pad(rows)).float(), dim=-1)

    def _last_logits(self, keep: int, **batch) -> torch.Tensor:
        """The model's logits for the last `keep` positions of each row: (B, keep, V)."""
        try:
            logits = self.model(**batch, logits_to_keep=keep).logits
        except TypeError:  # older architectures without logits_to_keep
            logits = self.model(**batch).logits
        return logits[:, -keep:]

    # ---- the LLM interface
    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return self.prompts.truncate(text, max_tokens)

    @torch.inference_mode()
    def generate(self, requests: list[GenRequest]) -> list[str]:
        rows = [self.prompts.generation_ids(r) for r in requests]
        batch = self._left_pad(rows)
        batch.pop("position_ids")  # generate() derives them from the mask
        sample = self.cfg.temperature > 0
        if sample:  # the same batch always draws the same tokens, so resumed runs repeat exactly
            torch.manual_seed(hash(tuple(tuple(r) for r in rows)) % 2**31)
        out = self.model.generate(
            **batch,
            max_new_tokens=self.cfg.max_new_tokens,
            do_sample=sample,
            temperature=self.cfg.temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            **({"stop_strings": list(self.cfg.stop), "tokenizer": self.tokenizer} if self.cfg.stop else {}),
        )
        new = out[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
        return [cut_at_stop(self.prompts.decode(r.tolist()), self.cfg.stop) for r in new]

    def loglik(self, contexts: list[str], continuations: list[str]) -> list[float]:
        """Mean log p(continuation | context) per pair, in chunks of `score_batch_size` sequences."""
        return [ql for ql, _ in self.ql_rc(contexts, continuations, "", [])]

    def label_logprobs(self, prompts: list[str], labels: list[str]) -> list[list[float]]:
        """log p(first token of each label | prompt): (len(prompts), len(labels))."""
        label_ids = self.prompts.label_ids(labels)
        rows = [self.prompts.prompt_ids(p) for p in prompts]
        out: list[list[float]] = []
        for start in range(0, len(rows), self.cfg.score_batch_size):
            logp = self._last_logprobs(rows[start : start + self.cfg.score_batch_size], 1)[:, -1]  # (B, V)
            out += logp[:, label_ids].tolist()
        return out

    def ql_rc(
        self, contexts: list[str], continuations: list[str], suffix: str, labels: list[str]
    ) -> list[tuple[float, list[float]]]:
        """QL and RC per pair: rows are context + query + suffix, in left-padded chunks of `score_batch_size`
        rows, one forward pass each. With `llm.score_from_prefix_cache`, consecutive rows that share a
        prefix of `MIN_SHARED_PREFIX` tokens or more run it once instead (`_shared_prefix_scores`)."""
        label_ids = self.prompts.label_ids(labels) if labels else []
        rows = [self.prompts.scoring_row(ctx, c, suffix) for ctx, c in zip(contexts, continuations)]
        out: list[tuple[float, list[float]] | None] = [None] * len(rows)
        self.cache_stats["prompt_tokens"] += sum(len(r.ids) for r in rows)
        alone: list[int] = []
        groups = _prefix_groups(rows) if self.cfg.score_from_prefix_cache else [([i], 0) for i in range(len(rows))]
        for group, shared in groups:
            prefix = min(shared, min(rows[i].start for i in group) - 1)  # the query's first prediction stays out
            if len(group) < 2 or prefix < MIN_SHARED_PREFIX:
                alone += group
                continue
            for i, score in zip(group, self._shared_prefix_scores([rows[i] for i in group], prefix, label_ids)):
                out[i] = score
            self.cache_stats["cached_tokens"] += prefix * (len(group) - 1)
        size = self.cfg.score_batch_size
        for start in range(0, len(alone), size):
            idx = alone[start : start + size]
            for i, score in zip(idx, self._full_prompt_scores([rows[i] for i in idx], label_ids)):
                out[i] = score
        return out  # type: ignore[return-value]

    def _full_prompt_scores(self, chunk: list[ScoringRow], label_ids: list[int]) -> list[tuple[float, list[float]]]:
        """One left-padded forward pass over whole rows."""
        keep = max(len(r.ids) - r.start for r in chunk) + 1  # every continuation and suffix token, + 1
        logp = self._last_logprobs([r.ids for r in chunk], keep)  # (B, keep, V); position t predicts t+1
        return [_read_scores(logp[i], keep - 1 - (len(r.ids) - r.start), r, label_ids) for i, r in enumerate(chunk)]

    @torch.inference_mode()
    def _shared_prefix_scores(
        self, rows: list[ScoringRow], prefix: int, label_ids: list[int]
    ) -> list[tuple[float, list[float]]]:
        """Rows whose first `prefix` ids are equal, and before every row's first query token: those once,
        then each chunk of tails right-padded on a copy of the prefix's KV cache."""
        name = self._kv_name
        cache = getattr(self.model(input_ids=torch.tensor([rows[0].ids[:prefix]], device=self.device), use_cache=True), name)
        out = []
        for start in range(0, len(rows), self.cfg.score_batch_size):
            chunk = rows[start : start + self.cfg.score_batch_size]
            width = max(len(r.ids) for r in chunk) - prefix
            first = min(r.start for r in chunk) - 1 - prefix  # the first tail position any row reads
            tail = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), prefix + width), dtype=torch.long)
            mask[:, :prefix] = 1
            for i, r in enumerate(chunk):
                tail[i, : len(r.ids) - prefix] = torch.tensor(r.ids[prefix:])
                mask[i, prefix : len(r.ids)] = 1
            kv = copy.deepcopy(cache)
            kv.batch_repeat_interleave(len(chunk))
            positions = torch.arange(prefix, prefix + width).expand(len(chunk), -1)
            logits = self._last_logits(width - first, input_ids=tail.to(self.device), attention_mask=mask.to(self.device),
                                       position_ids=positions.to(self.device), **{name: kv})
            logp = F.log_softmax(logits.float(), dim=-1)  # (B, width - first, V): tail position first + t
            for i, r in enumerate(chunk):
                out.append(_read_scores(logp[i, : len(r.ids) - prefix - first], r.start - 1 - prefix - first, r, label_ids))
        return out


def _read_scores(logp: torch.Tensor, first: int, row: ScoringRow, label_ids: list[int]) -> tuple[float, list[float]]:
    """(QL, label log-probs) of `row` from its log-probs `logp` (T, V), whose last position is the row's
    last token and whose position `first` predicts the first query token."""
    preds = logp[first : first + row.length]  # (length, V)
    targets = torch.tensor(row.ids[row.start : row.start + row.length], device=logp.device)
    ql = preds.gather(-1, targets[:, None]).mean().item()
    return ql, (logp[-1, label_ids].tolist() if label_ids else [])


def _prefix_groups(rows: list[ScoringRow]) -> list[tuple[list[int], int]]:
    """Runs of consecutive rows that share at least `MIN_SHARED_PREFIX` leading ids, with the length of
    the prefix all of a run's rows share; a row that shares too little with its neighbour starts a run."""
    groups: list[tuple[list[int], int]] = []
    for i, r in enumerate(rows):
        if groups:
            idx, shared = groups[-1]
            common = _common_prefix(rows[idx[0]].ids[:shared], r.ids)
            if common >= MIN_SHARED_PREFIX:
                idx.append(i)
                groups[-1] = (idx, common)
                continue
        groups.append(([i], len(r.ids)))
    return groups


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
