"""`gecko export CHECKPOINT OUT_DIR`: a folder that sentence-transformers and transformers both load.

Layout written (sentence-transformers convention, backbone at the root so `AutoModel` loads it too):
    config.json, model.safetensors, tokenizer files      the backbone (AutoModel.from_pretrained(out)); config.json
                                                         also lists `matryoshka_dimensions` (vLLM's `dimensions`)
    modules.json, sentence_bert_config.json              Transformer -> 1_Pooling (the encoder's) [-> 2_Dense] -> 3_Normalize;
                                                         `max_seq_length`, the token limit a server reads
    config_sentence_transformers.json                    the model's text format as named prompts, cosine similarity
    gecko_encoder.json, projection.pt                    so GeckoEncoder.from_pretrained(out) restores it exactly (text format included)
    README.md                                            model card (model_card.py): Hub metadata, usage, prompts, dims, config, results
    onnx/model.onnx [, onnx/model_qint8_<arch>.onnx]     with --onnx [--quantize int8]: the backbone for ONNX Runtime (onnx_export.py)
The source is a `gecko fit` checkpoint (a .ckpt file or a DeepSpeed folder, read by
`checkpoint.load_checkpoint`, never by the LightningModule) or a saved/exported folder.
`--base-weight W` averages the tuned backbone with the base model's weights first (`_average_with_base`).
`--push-to-hub OWNER/NAME` then uploads the folder (`gecko_lightning.hub.upload_folder`).
Sibling: `gecko_lightning.evaluation.models.load_encoder` reads these folders back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from gecko_lightning import hub
from gecko_lightning.checkpoint import is_deepspeed_checkpoint, load_checkpoint
from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.errors import MissingPathError, UserError, debug
from gecko_lightning.evaluation.models import load_encoder
from gecko_lightning.evaluation.prompts import PromptMap
from gecko_lightning.evaluation.results import read_results
from gecko_lightning.model_card import front_matter, metadata, model_card
from gecko_lightning.onnx_export import check_flags, require_onnx, write_onnx
from gecko_lightning.text_format import GECKO, Template

RESULT_NAMES = ("results.json", "eval_results.json")


def sentence_transformers_prompts(template: Template | None = None, prompt_map: PromptMap | None = None) -> dict[str, str]:
    """Named sentence-transformers prompts: "query"/"document" plus one per task string, in `template`
    (the model's own format; gecko when None).

    Prompts are prefixes, so with the gecko format `encode(texts, prompt_name="fact checking")` yields
    `task: fact checking | query: {text}`, exactly the training string. A template that puts text after
    {query} (or {text}) is no prefix: those prompts are left out, and the card shows the templates.
    Titled documents are formatted by the caller, `template.format_document(title, text)`.
    """
    template, pm = template or GECKO, prompt_map or PromptMap.load()
    prompts = {"query": template.query_prefix(pm.retrieval_default), "document": template.document_prefix()}
    prompts.update({task: template.query_prefix(task) for task in pm.all_tasks()})
    return {name: prefix for name, prefix in prompts.items() if prefix is not None}


def _st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Dense, Normalize


def write_sentence_transformers(encoder: GeckoEncoder, out_dir: Path, prompts: dict[str, str]) -> None:
    """Save the backbone, then describe pooling/projection/normalisation as sentence-transformers modules."""
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Dense, Normalize = _st_modules()
    encoder.save_pretrained(out_dir)  # backbone + tokenizer + gecko_encoder.json (+ projection.pt)
    hidden = encoder.projection.in_features if encoder.projection is not None else encoder.dim
    modules = [Transformer(str(out_dir), max_seq_length=encoder.max_length), Pooling(hidden, pooling_mode=encoder.pooling, include_prompt=True)]
    if encoder.projection is not None:
        proj = encoder.projection
        modules.append(Dense(hidden, proj.out_features, bias=proj.bias is not None, activation_function=torch.nn.Identity(),
                             init_weight=proj.weight.detach().clone(), init_bias=None if proj.bias is None else proj.bias.detach().clone()))
    if encoder.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, similarity_fn_name="cosine", device="cpu")
    model.save(str(out_dir))
    # sentence-transformers 6 keeps the limit in tokenizer_config.json only; vLLM reads it
    # from here, where 5.x wrote it, and would otherwise take max_position_embeddings and embed more tokens
    _update_json(out_dir / "sentence_bert_config.json", max_seq_length=encoder.max_length)
    # A base tokenizer's own `max_length` rides along in tokenizer_config.json (all-MiniLM-L6-v2: 128 beside a
    # 256-token model); fastembed truncates at the smaller of it and model_max_length, so it must be the model's limit
    tokenizer_config = out_dir / "tokenizer_config.json"
    if tokenizer_config.is_file() and "max_length" in json.loads(tokenizer_config.read_text()):
        _update_json(tokenizer_config, max_length=encoder.max_length)


def load_source(path: Path) -> tuple[GeckoEncoder, dict, dict]:
    """(encoder, hparams, training data record) from a `gecko fit` checkpoint (file or DeepSpeed folder)
    or a GeckoEncoder/exported folder (which records neither)."""
    if path.is_file() or is_deepspeed_checkpoint(path):
        return load_checkpoint(path)
    if path.is_dir():  # also reads a sentence-transformers folder's max_seq_length
        return load_encoder(str(path)), {}, {}
    raise MissingPathError(f"{path}: no such checkpoint file or model folder")


def _find_results(given: str | None, source: Path) -> tuple[dict | None, dict]:
    """(scores, meta) of --results, else of a results file beside the checkpoint (inside a model folder)."""
    folder = source.parent if source.is_file() or is_deepspeed_checkpoint(source) else source
    found = Path(given) if given else next((folder / n for n in RESULT_NAMES if (folder / n).is_file()), None)
    if found is None:
        return None, {}
    if not found.is_file():
        raise MissingPathError(f"--results {found}: no such file; pass the JSON that `gecko eval --output` wrote")
    return read_results(found)


def check_repo(repo: str) -> None:
    """Refuse a bad --push-to-hub name before anything is exported."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    hub._check_repo(repo)
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise UserError(f"--push-to-hub {repo!r}: {e}") from None


def _refuse_self_export(source: Path, out_dir: Path) -> None:
    """Refuse an out_dir that is the source, holds it (a checkpoint in out_dir) or lies inside it."""
    src, dst = source.resolve(), out_dir.resolve()
    if dst == src or dst in src.parents or src in dst.parents:
        raise UserError(f"cannot export {source} onto {out_dir}: the output would replace its own source; pick another out_dir")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir by tmp with renames only, so an error before this point leaves out_dir untouched."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError:
        if old.exists():  # put the previous export back before reporting the failure
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_base_weight(base_weight: float) -> None:
    if not 0.0 <= base_weight < 1.0:
        raise UserError(f"--base-weight {base_weight}: expected a number in [0, 1): 0 keeps the tuned weights, "
                        "0.25 moves them a quarter of the way back to the base model's")


def _average_with_base(encoder: GeckoEncoder, base: str, base_weight: float) -> None:
    """In place: every backbone weight becomes `base_weight` x the base model's + (1 - `base_weight`) x the
    tuned one's (WiSE-FT, Wortsman et al., CVPR 2022: a weight-space ensemble of a fine-tuned model and its
    start). Integer buffers (position ids) stay the tuned model's. `base` must be the model it was tuned
    from: the same backbone keys and shapes; a trained projection has no base counterpart and is refused.
    `export` has checked `base_weight` (`check_base_weight`) before loading anything."""
    if encoder.projection is not None:
        raise UserError(f"--base-weight: this model has a trained projection ({encoder.projection.in_features} -> "
                        f"{encoder.dim}), which {base} lacks; weight averaging needs a model without one")
    tuned = encoder.backbone.state_dict()
    start = GeckoEncoder.from_pretrained(base).backbone.state_dict()
    mixed = {}
    for key, value in tuned.items():
        other = start.get(key)
        if other is None or other.shape != value.shape:
            found = "lacks it" if other is None else f"has shape {tuple(other.shape)}, not {tuple(value.shape)}"
            raise UserError(f"--base-weight: {base} is not the model this one was tuned from: for the weight {key} it {found}")
        mixed[key] = torch.lerp(value.float(), other.float(), base_weight).to(value.dtype) if value.is_floating_point() else value
    encoder.backbone.load_state_dict(mixed, strict=True)


def export(source: str | Path, out_dir: str | Path, results: str | None = None, matryoshka_dims: list[int] | None = None,
           name: str | None = None, overwrite: bool = False, onnx: bool = False, quantize_arch: str | None = None,
           base_weight: float = 0.0, base: str | None = None) -> Path:
    """Write the folder described in the module docstring; returns it.

    The folder is built beside out_dir and swapped in at the end: a bad source or a crash mid-export
    leaves a previous export exactly as it was. `onnx`: also onnx/model.onnx, and with `quantize_arch`
    its int8 copy for that CPU (`onnx_export.check_flags` names them). `base_weight` > 0: the weights are
    first averaged with those of `base` (default: the checkpoint's `model_name_or_path`), `_average_with_base`.
    """
    check_base_weight(base_weight)
    if onnx:
        require_onnx()
    source, out_dir = Path(source), Path(out_dir)
    _refuse_self_export(source, out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"{out_dir} exists and is not empty; pass --overwrite or pick another folder")
    scores, scored = _find_results(results, source)  # a bad results file fails before the model loads
    encoder, hparams, data = load_source(source)
    encoder.eval()
    averaged = None
    if base_weight > 0:
        base = base or hparams.get("model_name_or_path")
        if not base:
            raise UserError(f"--base-weight: {source} does not record the model it was tuned from; pass --base NAME_OR_PATH")
        _average_with_base(encoder, base, base_weight)
        averaged = (base, base_weight)
    dims = sorted(matryoshka_dims or hparams.get("matryoshka_dims") or [], reverse=True)
    name = name or out_dir.name
    meta = metadata(name, hparams.get("model_name_or_path"), data, scores, front_matter(source) if source.is_dir() else None,
                    split=scored.get("split") or "test")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write_sentence_transformers(encoder, tmp, sentence_transformers_prompts(encoder.text_format))
        onnx_checked = write_onnx(tmp, quantize_arch) if onnx else {}
        _finish_folder(tmp, encoder, hparams, dims, name, scores, meta, data, onnx_checked, averaged)
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful swap
    return out_dir


def _finish_folder(out_dir: Path, encoder: GeckoEncoder, hparams: dict, dims: list[int], name: str, results: dict | None,
                   meta: dict, data: dict, onnx_checked: dict[str, float] | None = None,
                   averaged: tuple[str, float] | None = None) -> None:
    """Add the trained Matryoshka dims to gecko_encoder.json and config.json, and write the model card."""
    _update_json(out_dir / "gecko_encoder.json", matryoshka_dims=dims or None)
    if dims:  # vLLM serves `dimensions` only for a backbone config that lists them (and only those)
        _update_json(out_dir / "config.json", matryoshka_dimensions=dims)
    prompts = json.loads((out_dir / "config_sentence_transformers.json").read_text()).get("prompts", {})
    (out_dir / "README.md").write_text(model_card(name, encoder, hparams, dims, prompts, results, meta, data,
                                                     onnx_checked, averaged))


def _update_json(path: Path, **values) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(values)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gecko export", description="Export a trained model as a sentence-transformers folder.")
    p.add_argument("checkpoint", help="a `gecko fit` .ckpt or DeepSpeed checkpoint folder, or a folder saved by GeckoEncoder.save_pretrained")
    p.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    p.add_argument("--results", default=None, help="`gecko eval --output` JSON for the model card (default: results.json beside the checkpoint)")
    p.add_argument("--matryoshka-dims", nargs="+", type=int, default=None, help="override the dims recorded in the checkpoint")
    p.add_argument("--name", default=None, help="model name shown in the card (default: the Hub repo, else the out_dir name)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--base-weight", type=float, default=0.0, metavar="W",
                   help="average the tuned weights with the base model's: W x base + (1 - W) x tuned (WiSE-FT); "
                        "0 (default) keeps the tuned weights. Keeps more of what the base knew off the tuned domain")
    p.add_argument("--base", default=None, metavar="NAME_OR_PATH",
                   help="with --base-weight: the model it was tuned from (default: the checkpoint's model_name_or_path)")
    p.add_argument("--push-to-hub", default=None, metavar="OWNER/NAME", help="upload the exported folder to this Hub model repository")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.add_argument("--onnx", action="store_true", help="also write onnx/model.onnx for ONNX Runtime (needs the onnx extra)")
    p.add_argument("--quantize", default=None, metavar="int8", help="with --onnx: also a dynamically quantized int8 copy")
    p.add_argument("--quantize-arch", default=None, metavar="ARCH",
                   help="the int8 copy's CPU: avx512_vnni, avx512, avx2 or arm64 (default: this machine's)")
    args = p.parse_args(argv)
    try:
        if args.push_to_hub:
            check_repo(args.push_to_hub)
        elif args.private:
            raise UserError("--private only applies with --push-to-hub OWNER/NAME")
        arch = check_flags(args.onnx, args.quantize, args.quantize_arch)
        if args.base and not args.base_weight:
            raise UserError("--base only applies with --base-weight W")
        out = export(args.checkpoint, args.out_dir, args.results, args.matryoshka_dims, args.name or args.push_to_hub, args.overwrite,
                     onnx=args.onnx, quantize_arch=arch, base_weight=args.base_weight, base=args.base)
        print(f"[gecko export] wrote {out}")
        if args.push_to_hub:
            url = hub.upload_folder(out, args.push_to_hub, repo_type="model", private=args.private)
            print(f"[gecko export] uploaded {out} to {url}")
    except UserError as e:  # bad input: one line and exit 2, like every gecko command
        if debug():
            raise
        print(f"gecko export: error: {e}", file=sys.stderr)
        return 2
    return 0
