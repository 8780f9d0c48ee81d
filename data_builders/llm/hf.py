"""Any Hugging Face causal LM (GGUF included) as an FRet LLM, on GPU or CPU.

Everything is left-padded, so the tokens we score sit at the end of every row. That lets QL and RC
ask the model for the last k logits only (`logits_to_keep`) instead of a (B, T, vocab) tensor, and
explicit position ids keep a padded row's numbers equal to the same row run alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gecko_lightning.paths import resolve_path

from ..config import LLMConfig
from .base import LLM, GenRequest
from .tokens import PromptTokens, cut_at_stop


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
        self.tokenizer = AutoTokenizer.from_pretrained(tok_path, **({} if cfg.tokenizer else kw))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        dtype = getattr(torch, cfg.dtype)
        if cfg.random_init:  # tiny smoke-test model: weights from a fixed seed, never downloaded
            torch.manual_seed(seed)
            self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)
        self.device = _device(cfg.device)
        self.model.to(self.device).eval()
        init = f"random-init-seed{seed}" if cfg.random_init else "pretrained"
        self.prompts = PromptTokens(self.tokenizer, cfg.chat_template)
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
        batch = self._left_pad(rows)
        try:
            logits = self.model(**batch, logits_to_keep=keep).logits
        except TypeError:  # older architectures without logits_to_keep
            logits = self.model(**batch).logits
        return F.log_softmax(logits[:, -keep:].float(), dim=-1)

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
        """QL and RC from one left-padded forward pass per chunk: rows are context + query + suffix."""
        label_ids = self.prompts.label_ids(labels) if labels else []
        rows = [self.prompts.scoring_row(ctx, c, suffix) for ctx, c in zip(contexts, continuations)]
        out: list[tuple[float, list[float]]] = []
        size = self.cfg.score_batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            keep = max(len(r.ids) - r.start for r in chunk) + 1  # every continuation and suffix token, + 1
            logp = self._last_logprobs([r.ids for r in chunk], keep)  # (B, keep, V); position t predicts t+1
            for i, r in enumerate(chunk):
                first = keep - 1 - (len(r.ids) - r.start)  # the position that predicts the first query token
                preds = logp[i, first : first + r.length]  # (length, V)
                targets = torch.tensor(r.ids[r.start : r.start + r.length], device=logp.device)
                ql = preds.gather(-1, targets[:, None]).mean().item()
                out.append((ql, logp[i, -1, label_ids].tolist() if label_ids else []))
        return out
