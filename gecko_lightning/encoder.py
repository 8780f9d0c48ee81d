"""A Hugging Face backbone turned into a text embedder: pooling, optional projection, L2 norm.

Pooling is mean (Gecko's recipe), cls or lasttoken; a sentence-transformers folder declares its own
in modules.json and its Pooling config, and `from_pretrained` follows that declaration. The encoder
also carries the text format it was trained with (`text_format`) and the prompts a sentence-transformers
folder declares (`declared_prompts`), from which `text_format.resolve_format` decides what it reads.

No Lightning here: `GeckoModule` (module.py) trains it; `from_pretrained` loads a saved or exported
folder, and `checkpoint.encoder_from_checkpoint` (the module above this one) what `gecko fit`
writes, so evaluation and export never import the trainer.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from gecko_lightning.errors import UserError
from gecko_lightning.paths import local_model_path, model_loading, resolve_path
from gecko_lightning.text_format import ST_CONFIG, DeclaredPrompts, Template, read_declared_prompts
from gecko_lightning.user_files import check_weights_folder, load_torch_file

GECKO_CONFIG = "gecko_encoder.json"
PROJECTION_WEIGHTS = "projection.pt"
CPU_BATCH_TOKENS = 2048
"""`GeckoEncoder.encode`'s default cap on padded tokens per batch on CPU (docs/benchmarks.md, "Batches by tokens")."""
Pooling = Literal["mean", "cls", "lasttoken"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
# sentence-transformers < 6 writes one boolean per mode in the Pooling config; 6.x writes `pooling_mode`.
_LEGACY_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "lasttoken",
                        "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens": "weightedmean"}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states that the mask keeps, task prefix included as in the paper.

    hidden: (B, T, H), attention_mask: (B, T) -> (B, H)
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of the last token the mask keeps, so left and right padding give the same vector.

    hidden: (B, T, H), attention_mask: (B, T) -> (B, H)
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    last = (positions * attention_mask.bool()).argmax(dim=1)  # (B,) highest kept position
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, T, H) token states -> (B, H); "cls" is position 0, as in sentence-transformers."""
    if pooling == "mean":
        return mean_pool(hidden, attention_mask)
    if pooling == "cls":
        return hidden[:, 0]
    return last_token_pool(hidden, attention_mask)


def _declared_pooling_mode(config_file: Path) -> str:
    cfg = json.loads(config_file.read_text())
    mode = cfg.get("pooling_mode") or [m for key, m in _LEGACY_POOLING_KEYS.items() if cfg.get(key)]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise UserError(f"{config_file}: pooling {'+'.join(modes) or 'none'} is not supported; "
                        f"GeckoEncoder pools with one of {', '.join(POOLINGS)}")
    return modes[0]


def declared_pooling(folder: str | os.PathLike) -> dict:
    """{"pooling", "normalize"} that a saved folder declares; {} when it declares nothing.

    Our own gecko_encoder.json first, else a sentence-transformers modules.json (a Pooling module's
    config, and whether a Normalize module follows).
    """
    folder = Path(folder)
    if (folder / GECKO_CONFIG).is_file():
        cfg = json.loads((folder / GECKO_CONFIG).read_text())
        if cfg.get("pooling", "mean") not in POOLINGS:
            raise UserError(f"{folder / GECKO_CONFIG}: pooling {cfg['pooling']!r} is not one of {', '.join(POOLINGS)}")
        return {"pooling": cfg.get("pooling", "mean"), "normalize": cfg.get("normalize", True)}
    if not (folder / "modules.json").is_file():
        return {}
    modules = json.loads((folder / "modules.json").read_text())
    kinds = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    declared = {"normalize": "Normalize" in kinds}
    if "Pooling" in kinds:
        declared["pooling"] = _declared_pooling_mode(folder / kinds["Pooling"] / "config.json")
    return declared


def declared_inputs(folder: str | os.PathLike | None) -> tuple[Template | None, DeclaredPrompts | None]:
    """What a model folder says about its inputs: the text format it was trained with (our
    gecko_encoder.json) and the prompts its sentence-transformers config declares. None for either
    when the folder says nothing; `text_format.resolve_format` decides from these."""
    if folder is None:
        return None, None
    saved, text_format = Path(folder) / GECKO_CONFIG, None
    if saved.is_file() and (recorded := json.loads(saved.read_text()).get("text_format")):
        text_format = Template.from_dict(recorded, f"{saved}: text_format")
    return text_format, read_declared_prompts(folder)


def declaring_folder(name_or_path: str, revision: str | None = None) -> Path | None:
    """The folder whose files declare pooling: the path itself, or a Hub model's (cached) snapshot."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=["modules.json", "*/config.json", GECKO_CONFIG,
                                                                                             ST_CONFIG]))
    except Exception:  # noqa: BLE001 - offline and not cached, or not on the Hub: nothing is declared
        return None


def backbone_class(config) -> type:
    """AutoModel, or the encoder half for T5-style configs (an embedder never runs the decoder)."""
    if config.model_type in ("t5", "mt5", "umt5"):
        from transformers import T5EncoderModel

        return T5EncoderModel
    return AutoModel


def drop_unused_pooler(backbone: nn.Module) -> None:
    """Our pooling never reads the [CLS] pooler of BERT-like backbones (their forward skips a None
    pooler). Its parameters would get no gradient, which DDP's reducer rejects at the first step, and
    checkpoints therefore hold none: a backbone rebuilt from a checkpoint drops it too."""
    if isinstance(getattr(backbone, "pooler", None), nn.Module):
        backbone.pooler = None


def _load_backbone(name_or_path: str, random_init: bool, attn_implementation: str | None = None, **kwargs) -> nn.Module:
    """AutoModel from the Hub or a folder; T5-style configs load their encoder only.

    `attn_implementation` is transformers' own switch (eager, sdpa, flash_attention_2, ...); with
    flash attention, transformers runs attention on the unpadded tokens that the attention mask marks.
    """
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    cls = backbone_class(config)
    attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
    folder = Path(name_or_path, kwargs.get("subfolder") or "")
    if not random_init and folder.is_dir():  # a truncated or missing weight file: one line naming it
        check_weights_folder(folder)
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


def _batches(order: list[int], counts: list[int], batch_size: int, max_tokens: int | None):
    """Slices of `order` (longest first): `batch_size` rows, fewer where the first row's token count times
    the rows would pass `max_tokens` (one row alone may pass it)."""
    start = 0
    while start < len(order):
        rows = max(1, min(batch_size, max_tokens // max(1, counts[order[start]]))) if max_tokens else batch_size
        yield order[start : start + rows]
        start += rows


class GeckoEncoder(nn.Module):
    """Backbone + pooling (mean, cls or lasttoken) + optional linear projection + optional L2 normalisation.

    forward(input_ids (B, T), attention_mask (B, T)) -> (B, D) embeddings.
    text_format: the Template its inputs were formatted with in training; None when unknown (a
    model trained elsewhere). declared_prompts: the prompts its sentence-transformers config declares.
    Readers format through `text_format.resolve_format`, which tries the first, then the second, then raw text.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        projection_dim: int | None = None,
        normalize: bool = True,
        max_length: int = 512,
        pooling: Pooling = "mean",
        text_format: Template | None = None,
        declared_prompts: DeclaredPrompts | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling, self.text_format, self.declared_prompts = pooling, text_format, declared_prompts
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
        normalize: bool | None = None,
        max_length: int = 512,
        attn_implementation: str | None = None,
        pooling: Pooling | None = None,
        **hf_kwargs,
    ) -> GeckoEncoder:
        """Load a Hub name, a local folder or `package:<pkg>/<sub>`; a `save_pretrained` folder restores the projection.

        pooling / normalize: None follows what the folder declares (`declared_pooling`), else mean / True.
        """
        name_or_path = local_model_path(resolve_path(str(name_or_path)))
        tokenizer = local_model_path(resolve_path(tokenizer), "tokenizer") if tokenizer else None
        saved = Path(name_or_path) / GECKO_CONFIG
        if saved.is_file():
            cfg = json.loads(saved.read_text())
            projection_dim, max_length = cfg.get("projection_dim"), cfg.get("max_length", max_length)
        with model_loading(name_or_path):  # a Hub name that cannot be reached or found: one line, no retries
            folder = declaring_folder(name_or_path, hf_kwargs.get("revision"))
        text_format, prompts = declared_inputs(folder)
        declared = declared_pooling(folder) if folder is not None else {}
        pooling = pooling or declared.get("pooling", "mean")
        normalize = declared.get("normalize", True) if normalize is None else normalize
        with model_loading(name_or_path):
            backbone = _load_backbone(name_or_path, random_init, attn_implementation, **hf_kwargs)
        with model_loading(tokenizer or name_or_path, "tokenizer"):
            tok = AutoTokenizer.from_pretrained(tokenizer or name_or_path, **hf_kwargs)
        enc = cls(backbone, tok, projection_dim=projection_dim, normalize=normalize, max_length=max_length, pooling=pooling,
                  text_format=text_format, declared_prompts=prompts)
        weights = Path(name_or_path) / PROJECTION_WEIGHTS
        if enc.projection is not None and weights.is_file():
            enc.projection.load_state_dict(load_torch_file(weights, "projection weights file", weights_only=True))
        return enc

    def settings(self) -> dict:
        """What a saved folder or checkpoint records besides weights (gecko_encoder.json)."""
        return {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length,
                "projection_dim": self.projection.out_features if self.projection is not None else None,
                "text_format": self.text_format.to_dict() if self.text_format is not None else None}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        emb = pool(out.last_hidden_state, attention_mask, self.pooling)  # (B, H)
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
        max_tokens: int | None | Literal["auto"] = "auto",
    ) -> torch.Tensor:
        """Embed texts in length-sorted batches (less padding); returns (N, D) float32 on CPU, in input order.

        A batch holds at most `batch_size` texts and, with `max_tokens`, at most that many padded tokens
        (its longest text's token count times its rows), texts sorted by token count: long texts go in
        smaller batches. "auto": `CPU_BATCH_TOKENS` on CPU, where that embeds the demo's evaluation sets
        1.1-1.6x faster than 64 rows sorted by characters (docs/benchmarks.md, "Batches by tokens"); no cap
        on an accelerator. The vectors do not depend on the batching beyond float rounding (~2e-7).
        """
        device = torch.device(device) if device is not None else next(self.parameters()).device
        if max_tokens == "auto":
            max_tokens = CPU_BATCH_TOKENS if device.type == "cpu" else None
        was_training = self.training
        self.eval()
        if max_tokens:  # by token count: the cap needs it, and it pads less than characters do
            counts = self._token_counts(texts, max_length)
            order = sorted(range(len(texts)), key=lambda i: -counts[i])
        else:
            counts, order = [], sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.dim)
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(texts), desc="encode", unit="text")
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        for idx in _batches(order, counts, batch_size, max_tokens):
            batch = self.tokenize([texts[i] for i in idx], max_length).to(device)
            with autocast:
                emb = self(batch["input_ids"], batch["attention_mask"])
            out[idx] = emb.float().cpu()
            if progress is not None:
                progress.update(len(idx))
        if progress is not None:
            progress.close()
        self.train(was_training)
        return out

    def _token_counts(self, texts: Sequence[str], max_length: int | None) -> list[int]:
        """Tokens per text after truncation, tokenized in chunks whose ids are dropped: only the counts stay."""
        counts: list[int] = []
        for start in range(0, len(texts), 4096):
            ids = self.tokenizer(list(texts[start : start + 4096]), truncation=True, max_length=max_length or self.max_length)
            counts += [len(x) for x in ids["input_ids"]]
        return counts

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Backbone + tokenizer in Hugging Face layout, plus our pooling/projection/text-format settings."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        (out_dir / GECKO_CONFIG).write_text(json.dumps(self.settings(), indent=2) + "\n")
        if self.projection is not None:
            torch.save(self.projection.state_dict(), out_dir / PROJECTION_WEIGHTS)

