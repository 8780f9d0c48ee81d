"""Neighbour retrieval: embed `task + query` and the corpus, then exact or approximate inner-product search.

Index choice: faiss on GPU when faiss-gpu and a GPU are present; exact torch matmul on GPU when the GPU
is there but faiss-gpu is not; faiss on CPU otherwise. `flat` is exact, `ivf` / `hnsw` are for corpora
too large for exact search.
"""

from __future__ import annotations

import numpy as np
import torch

from gecko_lightning.paths import resolve_path

from .config import RetrieveConfig


def load_embedder(cfg: RetrieveConfig, seed: int = 0):
    """A `GeckoEncoder` from a folder or name, pooled and normalised as its modules.json declares.

    A config-only folder (random_init) declares nothing and gets mean pooling + L2 norm.
    """
    from gecko_lightning.encoder import GeckoEncoder

    if cfg.random_init:  # tiny smoke-test embedder from a config: weights from a fixed seed
        torch.manual_seed(seed)
    enc = GeckoEncoder.from_pretrained(resolve_path(cfg.embedder), random_init=cfg.random_init, max_length=cfg.max_length)
    return enc.to(_device(cfg.device)).eval()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def embed(encoder, texts: list[str], cfg: RetrieveConfig) -> np.ndarray:
    """(N, D) float32, L2-normalised by the encoder."""
    emb = encoder.encode(texts, batch_size=cfg.batch_size, max_length=cfg.max_length, show_progress=True)
    return np.ascontiguousarray(emb.numpy(), dtype=np.float32)


def _faiss_index(docs: np.ndarray, cfg: RetrieveConfig):
    import faiss

    dim = docs.shape[1]
    if cfg.index == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.index == "ivf":
        nlist = max(1, min(cfg.nlist, len(docs) // 39))  # faiss wants ~39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(docs)
        index.nprobe = min(cfg.nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if _device(cfg.device).type == "cuda" and hasattr(faiss, "StandardGpuResources") and cfg.index != "hnsw":
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(docs)
    return index


def search(queries: np.ndarray, docs: np.ndarray, k: int, cfg: RetrieveConfig) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, indices), each (Q, k), best first."""
    k = min(k, len(docs))
    device = _device(cfg.device)
    if cfg.index == "flat" and device.type == "cuda":
        import faiss

        if not hasattr(faiss, "StandardGpuResources"):  # GPU without faiss-gpu: exact torch search
            sims = torch.from_numpy(queries).to(device) @ torch.from_numpy(docs).to(device).T  # (Q, N)
            scores, idx = sims.topk(k, dim=1)
            return scores.cpu().numpy(), idx.cpu().numpy()
    scores, idx = _faiss_index(docs, cfg).search(queries, k)
    return scores, idx


def candidates_with_seed(ranked: list[str], seed_id: str, top_n: int) -> tuple[list[str], int | None]:
    """The top `top_n` ids with the seed guaranteed among them (it replaces the N-th when retrieval missed it).

    Returns (candidates, 1-based retrieval rank of the seed or None when it was not retrieved at all).
    """
    rank = ranked.index(seed_id) + 1 if seed_id in ranked else None
    cands = ranked[:top_n]
    if seed_id not in cands:
        cands = cands[: top_n - 1] + [seed_id]
    return cands, rank
