"""`gecko export CHECKPOINT OUT_DIR`: a folder that sentence-transformers and transformers both load.

Layout written (sentence-transformers convention, backbone at the root so `AutoModel` loads it too):
    config.json, model.safetensors, tokenizer files      the backbone (AutoModel.from_pretrained(out))
    modules.json, sentence_bert_config.json              Transformer -> 1_Pooling (the encoder's) [-> 2_Dense] -> 3_Normalize
    config_sentence_transformers.json                    Gecko prompts as named prompts, cosine similarity
    gecko_encoder.json, projection.pt                    so GeckoEncoder.from_pretrained(out) restores it exactly
    README.md                                            model card: usage, prompts, Matryoshka dims, config, eval results
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
import yaml

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.errors import UserError
from gecko_lightning.evaluation.models import ModelLoadError, load_checkpoint_encoder, load_encoder
from gecko_lightning.evaluation.prompts import PromptMap, format_query
from gecko_lightning.evaluation.results import scores_of

RESULT_NAMES = ("results.json", "eval_results.json")
POOLING_WORDS = {"mean": "mean pooling over all tokens (task prefix included)", "cls": "the first ([CLS]) token's state",
                 "lasttoken": "the last non-padding token's state"}


def gecko_prompts(prompt_map: PromptMap | None = None) -> dict[str, str]:
    """Named sentence-transformers prompts: "query"/"document" plus one per Gecko task string.

    Prompts are prefixes, so `encode(texts, prompt_name="fact checking")` yields `task: fact checking | query: {text}`.
    Documents with a title should be formatted by the caller as `title: {title} | text: {text}`.
    """
    pm = prompt_map or PromptMap.load()
    tasks = sorted({*pm.task_types.values(), *pm.retrieval.values(), pm.retrieval_default})
    prompts = {"query": format_query(pm.retrieval_default, ""), "document": "title: none | text: "}
    prompts.update({task: format_query(task, "") for task in tasks})
    return prompts


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


def _card_results(results: dict | None) -> str:
    if not results:
        return "No evaluation results were given (`gecko export ... --results results.json`)."
    rows = [f"| {ds} | {m} | {v:.2f} |" for ds, per in scores_of(results).items() for m, v in per.items()]
    return "\n".join(["| dataset | metric | score |", "| --- | --- | ---: |", *rows])


def model_card(name: str, encoder: GeckoEncoder, hparams: dict, dims: list[int], prompts: dict[str, str], results: dict | None) -> str:
    """README.md: how to load it, which prompts, which Matryoshka widths, how it was trained and scored."""
    dims_line = ", ".join(map(str, dims)) if dims else f"{encoder.dim} (no Matryoshka training)"
    trunc_line = (f'\nsmall = SentenceTransformer("{name}", truncate_dim={dims[-1]})   # Matryoshka: keep the first {dims[-1]} dims'
                  if dims else "")
    prompt_rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in prompts.items())
    config = yaml.safe_dump(hparams, sort_keys=False).strip() if hparams else "(not recorded: exported from a saved encoder folder)"
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, feature-extraction, sentence-similarity, gecko, matryoshka]
---

# {name}

A Gecko-style text embedder trained with gecko_lightning: {POOLING_WORDS[encoder.pooling]},
{'a linear projection to ' + str(encoder.dim) + ' dims, ' if encoder.projection is not None else ''}L2 normalisation, cosine similarity.
Maximum input length: {encoder.max_length} tokens. Embedding width: {encoder.dim}.

## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{name}")
q = model.encode(["what causes tides?"], prompt_name="question answering")   # task: question answering | query: ...
d = model.encode(["title: Tide | text: Tides are the rise and fall of sea levels..."])
print(model.similarity(q, d)){trunc_line}
```

`transformers.AutoModel.from_pretrained("{name}")` loads the backbone alone (apply {encoder.pooling} pooling{', the projection in 2_Dense' if encoder.projection is not None else ''} and L2 normalisation yourself).

## Input format and prompts

Queries are `task: {{task}} | query: {{text}}`; retrieval documents `title: {{title}} | text: {{text}}` (title `none` when absent);
symmetric tasks (STS, classification, clustering) use the query format on both sides. Named prompts:

| prompt_name | prefix |
| --- | --- |
{prompt_rows}

## Matryoshka dimensions

Trained dims: {dims_line}. Load with `truncate_dim=d` (or slice the first d values and re-normalise) for smaller vectors.

## Training configuration

```yaml
{config}
```

## Evaluation (0-100)

{_card_results(results)}
"""


def load_source(path: Path) -> tuple[GeckoEncoder, dict]:
    """(encoder, hparams) from a `gecko fit` checkpoint or a GeckoEncoder/exported folder."""
    if path.is_file():
        return load_checkpoint_encoder(path)
    if path.is_dir():  # also reads a sentence-transformers folder's max_seq_length
        return load_encoder(str(path)), {}
    raise ModelLoadError(f"{path}: no such checkpoint file or model folder")


def _find_results(given: str | None, source: Path) -> dict | None:
    if given:
        return json.loads(Path(given).read_text())
    folder = source.parent if source.is_file() else source
    found = next((folder / n for n in RESULT_NAMES if (folder / n).is_file()), None)
    return json.loads(found.read_text()) if found else None


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


def export(source: str | Path, out_dir: str | Path, results: str | None = None, matryoshka_dims: list[int] | None = None,
           name: str | None = None, overwrite: bool = False) -> Path:
    """Write the folder described in the module docstring; returns it.

    The folder is built beside out_dir and swapped in at the end: a bad source or a crash mid-export
    leaves a previous export exactly as it was.
    """
    source, out_dir = Path(source), Path(out_dir)
    _refuse_self_export(source, out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite or pick another folder")
    encoder, hparams = load_source(source)
    encoder.eval()
    dims = sorted(matryoshka_dims or hparams.get("matryoshka_dims") or [], reverse=True)
    prompts = gecko_prompts()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_folder(tmp, encoder, hparams, dims, prompts, name or out_dir.name, _find_results(results, source))
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful swap
    return out_dir


def _write_folder(out_dir: Path, encoder: GeckoEncoder, hparams: dict, dims: list[int], prompts: dict[str, str],
                  name: str, results: dict | None) -> None:
    write_sentence_transformers(encoder, out_dir, prompts)
    cfg_path = out_dir / "gecko_encoder.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["matryoshka_dims"] = dims or None
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(name, encoder, hparams, dims, prompts, results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gecko export", description="Export a trained model as a sentence-transformers folder.")
    p.add_argument("checkpoint", help="a `gecko fit` .ckpt, or a folder saved by GeckoEncoder.save_pretrained")
    p.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    p.add_argument("--results", default=None, help="`gecko eval --output` JSON for the model card (default: results.json beside the checkpoint)")
    p.add_argument("--matryoshka-dims", nargs="+", type=int, default=None, help="override the dims recorded in the checkpoint")
    p.add_argument("--name", default=None, help="model name shown in the card (default: the out_dir name)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out_dir, args.results, args.matryoshka_dims, args.name, args.overwrite)
    except (ModelLoadError, UserError, FileExistsError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"gecko export: error: {e}", file=sys.stderr)
        return 1
    print(f"[gecko export] wrote {out}")
    return 0
