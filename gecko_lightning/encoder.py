"""A Hugging Face backbone turned into a text embedder: mean pooling, optional projection, L2 norm.

No Lightning here: `GeckoModule` (module.py) trains it, evaluation and export use it as is.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from gecko_lightning.errors import UserError
from gecko_lightning.paths import local_model_path, resolve_path

GECKO_CONFIG = "gecko_encoder.json"
PROJECTION_WEIGHTS = "projection.pt"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states that the mask keeps, task prefix included as in the paper.

    hidden: (B, T, H), attention_mask: (B, T) -> (B, H)
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _load_backbone(name_or_path: str, random_init: bool, attn_implementation: str | None = None, **kwargs) -> nn.Module:
    """AutoModel from the Hub or a folder; T5-style configs load their encoder only.

    `attn_implementation` is transformers' own switch (eager, sdpa, flash_attention_2, ...); with
    flash attention, transformers runs attention on the unpadded tokens that the attention mask marks.
    """
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    if config.model_type in ("t5", "mt5", "umt5"):
        from transformers import T5EncoderModel

        cls = T5EncoderModel
    else:
        cls = AutoModel
    attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        if random_init:  # a config-only folder: tests and tiny runs never download weights
            return cls.from_config(config, **attn)
        return cls.from_pretrained(name_or_path, config=config, **attn, **kwargs)
    except (ValueError, ImportError) as e:
        if not attn:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model.attn_implementation={attn_implementation!r} cannot be used with {name_or_path} "
                        f"here ({first}); use sdpa or eager, or install what it names") from None


class GeckoEncoder(nn.Module):
    """Backbone + mean pooling + optional linear projection + optional L2 normalisation.

    forward(input_ids (B, T), attention_mask (B, T)) -> (B, D) embeddings.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        projection_dim: int | None = None,
        normalize: bool = True,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.normalize = normalize
        # Never tokenize past the position table (tiny-bert has 128 positions, BERT 512; T5 has no table).
        positions = getattr(backbone.config, "max_position_embeddings", None)
        self.max_length = min(max_length, positions) if positions else max_length
        hidden = backbone.config.hidden_size if hasattr(backbone.config, "hidden_size") else backbone.config.d_model
        self.projection = nn.Linear(hidden, projection_dim) if projection_dim else None
        self.dim = projection_dim or hidden

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        random_init: bool = False,
        tokenizer: str | None = None,
        projection_dim: int | None = None,
        normalize: bool = True,
        max_length: int = 512,
        attn_implementation: str | None = None,
        **hf_kwargs,
    ) -> GeckoEncoder:
        """Load a Hub name, a local folder or `package:<pkg>/<sub>`; a `save_pretrained` folder restores the projection."""
        name_or_path = local_model_path(resolve_path(str(name_or_path)))
        tokenizer = local_model_path(resolve_path(tokenizer), "tokenizer") if tokenizer else None
        saved = Path(name_or_path) / GECKO_CONFIG
        if saved.is_file():
            cfg = json.loads(saved.read_text())
            projection_dim, normalize = cfg.get("projection_dim"), cfg.get("normalize", True)
            max_length = cfg.get("max_length", max_length)
        backbone = _load_backbone(name_or_path, random_init, attn_implementation, **hf_kwargs)
        tok = AutoTokenizer.from_pretrained(tokenizer or name_or_path, **hf_kwargs)
        enc = cls(backbone, tok, projection_dim=projection_dim, normalize=normalize, max_length=max_length)
        weights = Path(name_or_path) / PROJECTION_WEIGHTS
        if enc.projection is not None and weights.is_file():
            enc.projection.load_state_dict(torch.load(weights, map_location="cpu"))
        return enc

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        emb = mean_pool(out.last_hidden_state, attention_mask)  # (B, H)
        if self.projection is not None:
            emb = self.projection(emb)  # (B, D)
        if self.normalize if normalize is None else normalize:
            emb = F.normalize(emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb, dim=-1)
        return emb

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Embed texts in length-sorted batches (less padding); returns (N, D) float32 on CPU, in input order."""
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.dim)
        batches = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="encode", unit="batch")
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        for start in batches:
            idx = order[start : start + batch_size]
            batch = self.tokenize([texts[i] for i in idx], max_length).to(device)
            with autocast:
                emb = self(batch["input_ids"], batch["attention_mask"])
            out[idx] = emb.float().cpu()
        self.train(was_training)
        return out

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Backbone + tokenizer in Hugging Face layout, plus our pooling/projection settings."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        cfg = {"pooling": "mean", "normalize": self.normalize, "projection_dim": self.projection.out_features if self.projection else None, "max_length": self.max_length}
        (out_dir / GECKO_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        if self.projection is not None:
            torch.save(self.projection.state_dict(), out_dir / PROJECTION_WEIGHTS)

