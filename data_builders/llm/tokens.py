"""Prompts as token ids: the one place that turns builder text into what a model reads.

Every backend with a tokenizer (transformers, vllm, openai) goes through `PromptTokens`, so the same
config feeds the same token ids to every engine:

- generation: the chat template (when the tokenizer has one and `llm.chat_template` is on), then the
  answer prefix; special tokens are added only when no template is used, since a template writes
  its own BOS;
- scoring: `context` with special tokens (BOS where the tokenizer adds one), then the continuation
  and suffix without, so the query's tokens sit at known positions whatever the tokenizer does with
  BOS. QL and RC read log-probabilities by position, never by character offset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .base import BackendError, GenRequest


@dataclass(frozen=True)
class ScoringRow:
    ids: list[int]
    """context (with special tokens) + continuation + suffix."""
    start: int
    """Index in `ids` of the first continuation token."""
    length: int
    """Number of continuation tokens (QL averages over these)."""


def cut_at_stop(text: str, stop: list[str] | tuple[str, ...]) -> str:
    """`text` up to the first stop string, as an OpenAI-compatible server returns it."""
    cut = len(text)
    for s in stop:
        if s and (i := text.find(s)) != -1:
            cut = min(cut, i)
    return text[:cut]


class PromptTokens:
    def __init__(self, tokenizer: Any, chat_template: bool = True) -> None:
        self.tokenizer = tokenizer
        self.use_chat = bool(chat_template and getattr(tokenizer, "chat_template", None))

    # ---- text
    def render(self, req: GenRequest) -> str:
        """The exact text a generation request becomes: chat template + prefix, or prompt + prefix."""
        if not self.use_chat:
            return req.prompt + req.prefix
        messages = [{"role": "user", "content": req.prompt}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + req.prefix

    def encode(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        ids = self.encode(text, special=False)
        if len(ids) <= max_tokens:
            return text, False
        return self.decode(ids[:max_tokens]), True

    # ---- token ids
    def generation_ids(self, req: GenRequest) -> list[int]:
        return self.encode(self.render(req), special=not self.use_chat)

    def scoring_row(self, context: str, continuation: str, suffix: str = "") -> ScoringRow:
        ctx = self.encode(context, special=True)
        cont = self.encode(continuation, special=False)
        if not cont:
            raise BackendError(f"empty continuation {continuation!r}: QL needs at least one query token")
        return ScoringRow(ctx + cont + (self.encode(suffix, special=False) if suffix else []), len(ctx), len(cont))

    def prompt_ids(self, prompt: str) -> list[int]:
        """An RC prompt (the next token is the label)."""
        return self.encode(prompt, special=True)

    def label_ids(self, labels: list[str]) -> list[int]:
        """The first token of each label: RC reads log p(that token | prompt)."""
        ids = []
        for label in labels:
            toks = self.encode(label, special=False)
            if not toks:
                raise BackendError(f"RC label {label!r} encodes to no token")
            ids.append(toks[0])
        return ids

    def fingerprint(self) -> str:
        """Hash of everything here that changes a prompt's ids: vocabulary, merges, specials, template."""
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        vocab = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
        blob = json.dumps([vocab, self.use_chat, getattr(tok, "chat_template", None) if self.use_chat else None,
                           self.encode("a", special=True)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_tokenizer(name_or_path: str, gguf_file: str | None = None) -> Any:
    """A Hugging Face tokenizer from a folder, `package:` path or Hub name (GGUF files included)."""
    from transformers import AutoTokenizer

    from gecko_lightning.paths import model_loading, resolve_path

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    path = resolve_path(name_or_path)
    with model_loading(path, "tokenizer"):
        return AutoTokenizer.from_pretrained(path, **kw)
