"""The README.md that `gecko export` writes: Hub metadata (YAML front matter) and a human-readable card.

The front matter follows the Hugging Face model card metadata: `base_model` and `license` (the base
model's, read from its README front matter where a local copy exists, else left out), `datasets`
(training sources converted from a Hub dataset), `library_name`, `pipeline_tag`, `tags`, and a
`model-index` built from `gecko eval --output` results (read by `evaluation.results.read_results`):

    model-index:
    - name: my-gecko
      results:
      - task: {type: Retrieval}
        dataset: {name: scifact, type: scifact, split: test}
        metrics: [{type: ndcg_at_10, value: 64.51}, ...]
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.errors import UserError
from gecko_lightning.evaluation.prompts import PromptMap
from gecko_lightning.text_format import GECKO, Template

POOLING_WORDS = {"mean": "mean pooling over all tokens (task prefix included)", "cls": "the first ([CLS]) token's state",
                 "lasttoken": "the last non-padding token's state"}
# Our metric names -> the MTEB task type they score (model-index `task.type`).
METRIC_TASKS = {"ndcg": "Retrieval", "recall": "Retrieval", "mrr": "Retrieval", "map": "Retrieval",
                "spearman": "STS", "pearson": "STS", "accuracy": "Classification", "f1": "Classification"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_id(name: str | None) -> str | None:
    """`name` as a Hub model id, or None: a local folder has none, except a Hub cache snapshot."""
    if not name or name.startswith("package:"):
        return None
    cached = re.search(r"models--([^/]+)--([^/]+)/snapshots/", name)
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    return None if Path(name).expanduser().exists() or not _HUB_ID.match(name) else name


def front_matter(folder_or_readme: Path | None) -> dict:
    """The YAML front matter of a README.md (a folder's, or the file itself); {} when absent or unreadable."""
    if folder_or_readme is None:
        return {}
    readme = folder_or_readme / "README.md" if folder_or_readme.is_dir() else folder_or_readme
    text = readme.read_text(errors="replace") if readme.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return meta if isinstance(meta, dict) else {}


def base_model_card(name: str | None) -> dict:
    """The base model's own card metadata, from a local folder or the Hub cache (never the network)."""
    if not name:
        return {}
    if Path(name).is_dir():
        return front_matter(Path(name))
    if hub_id(name) is None:
        return {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "README.md")
    return front_matter(Path(cached)) if isinstance(cached, str) else {}


def hub_datasets(data: dict) -> list[str]:
    """Hub dataset ids among the training sources (a converter's manifest `source`); local files have none."""
    return sorted({d["source"] for d in data.values() if isinstance(d, dict) and hub_id(d.get("source"))})


def _task_type(dataset: str, metric: str) -> str:
    kind = METRIC_TASKS.get(re.split(r"_|@", metric)[0])
    if kind:
        return kind
    try:  # mteb's `main_score`: the task's own type
        import mteb

        return mteb.get_task(dataset).metadata.type
    except Exception:  # noqa: BLE001 - not an MTEB task name, or mteb absent
        return "feature-extraction"


def model_index(name: str, results: dict[str, dict[str, float]], split: str = "test") -> list[dict]:
    """The Hub's model-index from {dataset[@dim]: {metric[@dim]: score}}: one entry per (dataset, task type)."""
    entries: dict[tuple[str, str], dict] = {}
    for key, per in results.items():
        dataset, _, dataset_dim = key.partition("@")
        for metric, value in per.items():
            base, _, dim = metric.partition("@")
            dim = dim or dataset_dim
            kind = _task_type(dataset, base)
            entry = entries.setdefault((dataset, kind), {"task": {"type": kind},
                                                         "dataset": {"name": dataset, "type": dataset, "split": split},
                                                         "metrics": []})
            entry["metrics"].append({"type": base, "value": round(float(value), 4), **({"name": f"{base} at {dim} dims"} if dim else {})})
    return [{"name": name, "results": list(entries.values())}]


def metadata(name: str, base_model: str | None, data: dict, results: dict | None, inherited: dict | None = None,
             split: str = "test") -> dict:
    """The card's YAML front matter. `inherited`: a re-exported folder's own front matter fills what is unknown;
    `split`: the split the results were scored on (their `_meta.split`)."""
    inherited = inherited or {}
    base = hub_id(base_model) or inherited.get("base_model")
    license_ = base_model_card(base_model).get("license") or inherited.get("license")
    datasets = hub_datasets(data) or inherited.get("datasets")
    meta = {"base_model": base, "license": license_, "datasets": datasets or None,
            "library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
            "tags": ["sentence-transformers", "feature-extraction", "sentence-similarity", "gecko", "matryoshka"],
            "model-index": model_index(name, results, split) if results else None}
    return {k: v for k, v in meta.items() if v is not None}


def _cell(text: str) -> str:
    """A table cell's text: a bare | would end the cell, even inside backticks."""
    return text.replace("|", "\\|")


def _results_table(results: dict | None) -> str:
    if not results:
        return "No evaluation results were given (`gecko export ... --results results.json`)."
    rows = [f"| {ds} | {m} | {v:.2f} |" for ds, per in results.items() for m, v in per.items()]
    return "\n".join(["| dataset | metric | score |", "| --- | --- | ---: |", *rows])


def _provenance(meta: dict, base_model: str | None, data: dict) -> str:
    base = meta.get("base_model") or base_model or "not recorded"
    lic = f"license `{meta['license']}` (the base model's)" if "license" in meta else \
        "license not recorded: the base model's card was not available here; check it before use"
    sources = "\n".join(f"- `{n}`: {d.get('source') or d.get('path')}" for n, d in data.items()) or "- not recorded"
    return f"Base model: `{base}`; {lic}.\n\nTraining data:\n{sources}"


def _averaged_line(averaged: tuple[str, float] | None) -> str:
    if not averaged:
        return ""
    base, w = averaged
    return (f"\n\nWeights: {w:g} x `{base}` + {1 - w:g} x the fine-tuned weights "
            f"(`gecko export --base-weight {w:g}`, a weight-space ensemble as in WiSE-FT).")


def model_card(name: str, encoder: GeckoEncoder, hparams: dict, dims: list[int], prompts: dict[str, str],
               results: dict | None, meta: dict, data: dict | None = None, onnx_checked: dict[str, float] | None = None,
               averaged: tuple[str, float] | None = None) -> str:
    """README.md: Hub metadata, how to load it, which prompts, which Matryoshka widths, how it was trained and scored.

    `onnx_checked`: {ONNX file: its cosine to `encode` at export} (`onnx_export.write_onnx`), listed under Serving.
    `averaged`: (base, weight) when `gecko export --base-weight` averaged the weights with the base model's.
    """
    template = encoder.text_format or GECKO
    dims_line = ", ".join(map(str, dims)) if dims else f"{encoder.dim} (no Matryoshka training)"
    trunc_line = (f'\nsmall = SentenceTransformer("{name}", truncate_dim={dims[-1]})   # Matryoshka: keep the first {dims[-1]} dims'
                  if dims else "")
    prompt_rows = "\n".join(f"| `{k}` | `{_cell(v)}` |" for k, v in prompts.items())
    config = yaml.safe_dump(hparams, sort_keys=False).strip() if hparams else "(not recorded: exported from a saved encoder folder)"
    example_task = "question answering" if "question answering" in prompts else next(iter(prompts), "query")
    return f"""---
{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()}
---

# {name}

A Gecko-style text embedder trained with gecko_lightning: {POOLING_WORDS[encoder.pooling]},
{'a linear projection to ' + str(encoder.dim) + ' dims, ' if encoder.projection is not None else ''}L2 normalisation, cosine similarity.
Maximum input length: {encoder.max_length} tokens. Embedding width: {encoder.dim}.

{_provenance(meta, hparams.get("model_name_or_path"), data or {})}{_averaged_line(averaged)}

## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{name}")
q = model.encode(["what causes tides?"], prompt_name="{example_task}")   # {prompts.get(example_task, '')}...
d = model.encode(["{template.format_document('Tide', 'Tides are the rise and fall of sea levels...')}"])
print(model.similarity(q, d)){trunc_line}
```

`transformers.AutoModel.from_pretrained("{name}")` loads the backbone alone (apply {encoder.pooling} pooling{', the projection in 2_Dense' if encoder.projection is not None else ''} and L2 normalisation yourself).

## Input format and prompts

{_format_words(template, encoder.text_format is None)} Named prompts:

| prompt_name | prefix |
| --- | --- |
{prompt_rows}

## Matryoshka dimensions

Trained dims: {dims_line}. Load with `truncate_dim=d` (or slice the first d values and re-normalise) for smaller vectors.

{serve_section(name, template, encoder.max_length, dims)}{onnx_section(name, encoder, onnx_checked or {})}

## Training configuration

```yaml
{config}
```

## Evaluation (0-100)

{_results_table(results)}
"""


def client_strings(template: Template, task: str | None = None) -> dict[str, str]:
    """The strings a server client sends, with {query}/{title}/{text} left as placeholders.

    A server embeds exactly what it receives, so the client applies the text format that `encode`
    applies through its named prompts: "query" and "document" here equal `prompt_name="query"` and
    `prompt_name="document"` (untitled) once the placeholders are filled.
    """
    task = task or PromptMap.load().retrieval_default
    return {"query": template.format_query(task, "{query}"), "document": template.format_document(None, "{text}"),
            "titled document": template.format_document("{title}", "{text}")}


def serve_section(name: str, template: Template, max_length: int, dims: list[int]) -> str:
    """The card's "Serving" section: what a client sends to vLLM (or any OpenAI-style server), and the limits."""
    strings = client_strings(template)
    rows = "\n".join(f"| {side} | `{_cell(text)}` |" for side, text in strings.items())
    query, doc = strings["query"], strings["document"]
    dims_line = (f"Matryoshka: pass `dimensions={dims[-1]}` (any of {', '.join(map(str, dims))}; vLLM reads them from "
                 "`matryoshka_dimensions` in config.json) for the first d values, re-normalised; with a server that "
                 "has no `dimensions`, slice the vector and re-normalise it yourself."
                 if dims else "This model was not trained for Matryoshka widths; use the full vector.")
    return f"""## Serving

A server embeds exactly the string it is sent, so the client adds the text format that `encode` adds
through its named prompts. Send these strings (fill the placeholders):

| side | string |
| --- | --- |
{rows}

The query string equals `encode(q, prompt_name="query")`, the document string `encode(d, prompt_name="document")`.

```bash
python -m vllm.entrypoints.openai.api_server --model {name} --runner pooling --dtype float32
```

vLLM reads the pooling from `1_Pooling/config.json`, the L2 normalisation from `modules.json` and the
{max_length}-token limit from `sentence_bert_config.json`. A longer text is refused (HTTP 400) unless the
request sets `truncate_prompt_tokens`; with `truncate_prompt_tokens: {max_length}` the server keeps the first
{max_length} tokens, as `encode` does.

```python
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
texts = ["{_py(query.format(query='what causes tides?'))}",
         "{_py(doc.format(text='Tides are the rise and fall of sea levels...'))}"]
out = client.embeddings.create(model="{name}", input=texts, extra_body={{"truncate_prompt_tokens": {max_length}}})
vectors = [d.embedding for d in out.data]
```

{dims_line}
"""


FASTEMBED_POOLING = {"mean": "MEAN", "cls": "CLS", "lasttoken": "LAST_TOKEN"}
NUMPY_POOLING = {"mean": "m = enc['attention_mask'][..., None]; v = (hidden * m).sum(1) / m.sum(1)",
                 "cls": "v = hidden[:, 0]",
                 "lasttoken": "last = enc['attention_mask'].cumsum(1).argmax(1); v = hidden[np.arange(len(hidden)), last]"}


def onnx_section(name: str, encoder: GeckoEncoder, checked: dict[str, float]) -> str:
    """The Serving section's ONNX lines: each file, and how fastembed or an ONNX Runtime session reads it."""
    if not checked:
        return ""
    hidden = encoder.projection.in_features if encoder.projection is not None else encoder.dim
    rows = "\n".join(f"| `{f}` | {_onnx_file_words(f, hidden)}; cosine to `encode` at export: {c:.6f} "
                     f"({'mean' if 'int8' in f else 'lowest'} over 5 texts) |" for f, c in checked.items())
    steps = (f"{POOLING_WORDS[encoder.pooling]}{', the projection in 2_Dense' if encoder.projection is not None else ''}"
             f"{', L2 normalisation' if encoder.normalize else ''}")
    fast = (f"""fastembed applies the pooling and normalisation itself:

```python
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType

TextEmbedding.add_custom_model(model="{name}", pooling=PoolingType.{FASTEMBED_POOLING[encoder.pooling]}, normalization={encoder.normalize},
                               sources=ModelSource(hf="{name}"), dim={encoder.dim}, model_file="onnx/model.onnx")
model = TextEmbedding("{name}", specific_model_path="path/to/this/folder")   # without it, fastembed downloads from the Hub
vectors = list(model.embed(texts))   # texts: the query and document strings at the top of this section
```

`model_file` may name the int8 file instead.""" if encoder.projection is None else
            "fastembed has no projection step, so it cannot read this model (2_Dense); use ONNX Runtime as below.")
    return f"""
### ONNX Runtime and fastembed

| file | what it is |
| --- | --- |
{rows}

The graphs hold the backbone only. To its `last_hidden_state` a client applies what modules.json declares:
{steps}; inputs come from this folder's tokenizer, truncating at {encoder.max_length} tokens.
`SentenceTransformer(path, backend="onnx")` reads `onnx/model.onnx` (an int8 file with
`model_kwargs={{"file_name": ...}}`) wherever optimum-onnx is installed.

{fast}

With ONNX Runtime alone (numpy, no torch):

```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained("path/to/this/folder")
session = ort.InferenceSession("path/to/this/folder/onnx/model.onnx")
enc = tok(texts, padding=True, truncation=True, max_length={encoder.max_length}, return_tensors="np")
hidden = session.run(None, {{i.name: enc[i.name] for i in session.get_inputs()}})[0]   # (batch, tokens, {hidden})
{NUMPY_POOLING[encoder.pooling]}{_numpy_projection(encoder)}
{'v = v / np.linalg.norm(v, axis=1, keepdims=True)' if encoder.normalize else ''}
```

`gecko_lightning.onnx_encoder.OnnxEncoder(path, file).encode(texts, prompt_name="query")` does the same from the folder's files.
"""


def _numpy_projection(encoder: GeckoEncoder) -> str:
    if encoder.projection is None:
        return ""
    bias = ' + dense["linear.bias"]' if encoder.projection.bias is not None else ""
    return ('\nfrom safetensors.numpy import load_file\n'
            f'dense = load_file("path/to/this/folder/2_Dense/model.safetensors"); v = v @ dense["linear.weight"].T{bias}')


def _onnx_file_words(file: str, hidden: int) -> str:
    if file.endswith("/model.onnx"):
        return (f"the backbone in float32: `input_ids`, `attention_mask`(, `token_type_ids`) -> `last_hidden_state` "
                f"(batch, tokens, {hidden}), batch and sequence axes dynamic")
    arch = Path(file).stem.split("_", 2)[-1]  # model_qint8_avx512_vnni -> avx512_vnni
    return f"the same graph with MatMul and embedding weights in 8 bits (ONNX Runtime dynamic quantization) for {arch} CPUs"


def _py(text: str) -> str:
    """`text` as the inside of a double-quoted Python string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _format_words(template: Template, unrecorded: bool) -> str:
    source = ("The model records no training format; these are the paper's (Table 7)." if unrecorded
              else "The model was trained with this format.")
    return (f"{source} Queries are `{template.query}`; retrieval documents `{template.document}` (title "
            f"`{template.empty_title}` when absent); symmetric tasks (STS, classification, clustering) use the query "
            "format on both sides, with `{title} {text}` as the query.")
