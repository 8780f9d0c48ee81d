"""Offline evaluation of a GeckoEncoder on local BEIR, STS and classification files.

Each `evaluate_*` embeds once at full width and scores every requested Matryoshka dim by truncating
and re-normalising, so `--dims 768 256` costs one encoding pass. Scores are on a 0-100 scale.
The in-training callback (callback.py) reuses these functions on tiny sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.evaluation import metrics
from gecko_lightning.evaluation.loaders import BeirSet, LabelSet, PairSet
from gecko_lightning.evaluation.prompts import PromptMap
from gecko_lightning.text_format import TASK_TYPES, InputFormat, Template, resolve_format

TOP_K = 100  # deepest cut any reported metric needs (Recall@100)


def truncate(emb: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Keep the first `dim` features and re-normalise: (N, D) -> (N, dim). None keeps all."""
    if dim is not None and not 0 < dim <= emb.shape[1]:
        raise ValueError(f"dim {dim} is outside 1..{emb.shape[1]} (the model's embedding width); fix --dims")
    return F.normalize(emb[:, :dim] if dim else emb, dim=-1)


def embed(encoder: GeckoEncoder, texts: Sequence[str], batch_size: int = 64, device: str | None = None,
          show_progress: bool = True) -> torch.Tensor:
    """(N, D) float32 embeddings; half precision autocast on GPU (bf16 where supported, else fp16)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = None
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    encoder.to(device)
    return encoder.encode(list(texts), batch_size=batch_size, max_length=token_limit(encoder), device=device, dtype=dtype,
                          show_progress=show_progress)


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return f"{len(texts)}:{h.hexdigest()}"


def token_limit(encoder: GeckoEncoder) -> int:
    """encoder.max_length, capped by the backbone's position table (e.g. a 128-position tiny BERT at the 512 default)."""
    positions = getattr(encoder.backbone.config, "max_position_embeddings", None)
    return min(encoder.max_length, positions) if positions else encoder.max_length


def search(queries: torch.Tensor, docs: torch.Tensor, k: int = TOP_K, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (Q, D) x (N, D) -> scores (Q, k), indices (Q, k).

    faiss (a GPU index when faiss-gpu and CUDA are present) when installed, else chunked torch matmul
    (on GPU when available) so the (Q, N) score matrix never has to fit in memory at once.
    """
    k = min(k, docs.shape[0])
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatIP(docs.shape[1])
        if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources"):
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(docs.numpy().astype(np.float32))
        return index.search(queries.numpy().astype(np.float32), k)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    d = docs.to(device)
    parts = [torch.topk(q.to(device) @ d.T, k, dim=1) for q in queries.split(chunk)]  # (chunk, N) -> (chunk, k)
    return torch.cat([p.values for p in parts]).cpu().numpy(), torch.cat([p.indices for p in parts]).cpu().numpy()


Prompts = str | Template | InputFormat  # a style of text_format.PROMPT_STYLES, or a format to use as is


def input_format(prompts: Prompts, encoder: GeckoEncoder | None = None) -> InputFormat:
    """What the encoder reads under a prompt style: "model" asks the encoder (the format it records, else
    the prompts it declares, else raw text; `text_format.resolve_format`), "gecko" / "none" force one."""
    return resolve_format(prompts, getattr(encoder, "text_format", None), getattr(encoder, "declared_prompts", None))


def beir_texts(data: BeirSet, prompts: Prompts, prompt_map: PromptMap) -> tuple[list[str], list[str]]:
    """Query and document strings in the chosen format (dict order of data.queries / data.corpus).

    The dataset's name is its task name for declared prompts (a "SciFact-query" prompt), its task string
    (prompt_map) is what our templates write, unless a query carries the task it was written for
    (`data.tasks`: a FRet build's test split), as it was in training.
    """
    fmt, name = input_format(prompts), data.name
    task = prompt_map.retrieval_task(name)
    queries = [fmt.query(data.tasks.get(i, task), q, task_name=name) for i, q in data.queries.items()]
    if prompt_map.is_symmetric(name):  # duplicate-question search: documents are queries too
        return queries, [fmt.symmetric_document(task, t, x, task_name=name) for t, x in data.corpus.values()]
    return queries, [fmt.document(t, x, task_name=name) for t, x in data.corpus.values()]


def _formatter(fmt: InputFormat, task: str, task_name: str, task_type: str):
    """text -> model input for either side of a symmetric set (STS, classification)."""
    return lambda s: fmt.symmetric(task, s, task_name=task_name, task_type=task_type)


def evaluate_beir(encoder: GeckoEncoder, data: BeirSet, dims: Sequence[int | None] = (None,), prompts: Prompts = "model",
                  prompt_map: PromptMap | None = None, batch_size: int = 64, show_progress: bool = True,
                  ignore_identical_ids: bool = False, device: str | None = None,
                  doc_cache: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, float]]:
    """{dim: {ndcg_at_10, recall_at_100, mrr_at_10}} on a 0-100 scale.

    ignore_identical_ids: drop a retrieved document whose id equals the query id, as MTEB does for
    ArguAna/Quora-style sets where queries are also in the corpus (MTEB's default is False too).
    doc_cache: the document embeddings of earlier calls with the same encoder, keyed by a digest of the
    exact document strings, so two sets whose corpora format to the same strings encode them once (a
    build's test split holds passages cut to its max_passage_tokens, so it shares none with the human set).
    """
    q_texts, d_texts = beir_texts(data, input_format(prompts, encoder), prompt_map or PromptMap.load())
    q_emb = embed(encoder, q_texts, batch_size, device, show_progress)
    if doc_cache is None:  # the in-training callback: one set, nothing to share
        d_emb = embed(encoder, d_texts, batch_size, device, show_progress)
    else:
        key = _texts_digest(d_texts)
        if key not in doc_cache:
            doc_cache[key] = embed(encoder, d_texts, batch_size, device, show_progress)
        d_emb = doc_cache[key]
    q_ids, d_ids = list(data.queries), list(data.corpus)
    out = {}
    for dim in dims:
        _, idx = search(truncate(q_emb, dim), truncate(d_emb, dim), TOP_K + 1)
        run = {q: [d_ids[j] for j in row if j >= 0 and not (ignore_identical_ids and d_ids[j] == q)][:TOP_K]
               for q, row in zip(q_ids, idx)}
        out[dim] = {k: 100 * v for k, v in metrics.retrieval_metrics(run, data.qrels).items()}
    return out


def evaluate_sts(encoder: GeckoEncoder, data: PairSet, dims: Sequence[int | None] = (None,), prompts: Prompts = "model",
                 task: str = TASK_TYPES["STS"], batch_size: int = 64, show_progress: bool = True,
                 device: str | None = None) -> dict[str, dict[str, float]]:
    """{dim: {spearman}}: Spearman (x100) of cosine similarity against the gold scores."""
    fmt = _formatter(input_format(prompts, encoder), task, data.name, "STS")
    uniq = list(dict.fromkeys(data.s1 + data.s2))  # each sentence once
    emb = embed(encoder, [fmt(s) for s in uniq], batch_size, device, show_progress)
    pos = {s: i for i, s in enumerate(uniq)}
    a, b = [pos[s] for s in data.s1], [pos[s] for s in data.s2]
    out = {}
    for dim in dims:
        e = truncate(emb, dim)
        cos = (e[a] * e[b]).sum(-1)  # (P,)
        out[dim] = {"spearman": 100 * metrics.spearman(cos.tolist(), data.scores)}
    return out


def evaluate_classification(encoder: GeckoEncoder, train: LabelSet, test: LabelSet, dims: Sequence[int | None] = (None,),
                            prompts: Prompts = "model", task: str = TASK_TYPES["Classification"], samples_per_label: int | None = 8,
                            n_experiments: int = 10, batch_size: int = 64, show_progress: bool = True) -> dict[str, dict[str, float]]:
    """{dim: {accuracy}}: MTEB-style logistic regression on frozen embeddings (see metrics.classification_accuracy)."""
    fmt = _formatter(input_format(prompts, encoder), task, "", "Classification")
    tr = embed(encoder, [fmt(t) for t in train.texts], batch_size, show_progress=show_progress)
    te = embed(encoder, [fmt(t) for t in test.texts], batch_size, show_progress=show_progress)
    return {
        dim: {"accuracy": 100 * metrics.classification_accuracy(truncate(tr, dim).numpy(), train.labels, truncate(te, dim).numpy(),
                                                               test.labels, samples_per_label, n_experiments)}
        for dim in dims
    }
