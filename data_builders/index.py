"""Neighbour retrieval: the corpus index (embedded once, in slices if need be) and the top-N search.

Index choice: faiss on GPU when faiss-gpu and a GPU are present; exact torch matmul on GPU when the GPU
is there but faiss-gpu is not; faiss on CPU otherwise. `flat` is exact, `ivf` / `hnsw` are for corpora
too large for exact search.

The corpus index lives in `retrieve.index_dir` (default `<output_dir>/index`):

    slice-I-of-M.npy    float32 (rows, D): passages [start, stop) in corpus order, L2-normalised
    slice-I-of-M.json   the slice's range, ids, passage sha256 and the embedder settings (written last)
    index.json          written by the index step once every slice is there: what a build checks
    faiss.index         the trained ivf / hnsw index (flat needs none: the matrix is the index)

Passages are embedded in blocks of `BLOCK_BATCHES` batches, length-sorted within a block, and slices
are whole blocks, so a passage's embedding never depends on how the corpus was sliced. A build opens
the index only if it holds exactly its own (truncated) passages with its own embedder settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gecko_lightning.data.schema import atomic_write
from gecko_lightning.errors import UserError
from gecko_lightning.paths import resolve_path
from gecko_lightning.text_format import InputFormat, resolve_format

from .config import BuildConfig, RetrieveConfig
from .corpus import block_range, corpus_fingerprint, write_json

log = logging.getLogger(__name__)
BLOCK_BATCHES = 16
INDEX_FILE, FAISS_FILE = "index.json", "faiss.index"


def load_embedder(cfg: RetrieveConfig, seed: int = 0):
    """A `GeckoEncoder` from a folder or name, pooled and normalised as its modules.json declares.

    A config-only folder (random_init) declares nothing and gets mean pooling + L2 norm.
    """
    from gecko_lightning.encoder import GeckoEncoder

    if cfg.random_init:  # tiny smoke-test embedder from a config: weights from a fixed seed
        torch.manual_seed(seed)
    enc = GeckoEncoder.from_pretrained(resolve_path(cfg.embedder), random_init=cfg.random_init, max_length=cfg.max_length)
    return enc.to(_device(cfg.device)).eval()


def embedder_format(rc: RetrieveConfig) -> InputFormat:
    """What the embedder reads: `retrieve.prompts` resolved, by the rule `gecko eval` follows
    (`text_format.resolve_format`), against what the embedder's folder records or declares.

    Read from the folder's files, without loading the model, so an index can be checked before it is.
    """
    from gecko_lightning.encoder import declared_inputs, declaring_folder

    folder = declaring_folder(resolve_path(rc.embedder)) if rc.prompts == "model" else None
    return resolve_format(rc.prompts, *declared_inputs(folder))


def query_texts(rows: list[dict[str, Any]], rc: RetrieveConfig, fmt: InputFormat | None = None) -> list[str]:
    """The text the embedder reads for each row's `task` and `query`; raw, that is `retrieve.query_format`."""
    fmt = fmt or embedder_format(rc)
    return [fmt.query(r["task"], r["query"], raw=rc.query_format.format(task=r["task"], query=r["query"])) for r in rows]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def embed(encoder, texts: list[str], cfg: RetrieveConfig, show_progress: bool = True) -> np.ndarray:
    """(N, D) float32, L2-normalised by the encoder."""
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    emb = encoder.encode(texts, batch_size=cfg.batch_size, max_length=cfg.max_length, show_progress=show_progress)
    return np.ascontiguousarray(emb.numpy(), dtype=np.float32)


# ---- search


def _has_faiss_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources")


def _cpu_index(docs: np.ndarray, cfg: RetrieveConfig):
    """A faiss CPU index of `docs` (N, D), trained when ivf."""
    import faiss

    dim = docs.shape[1]
    if cfg.index == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.index == "ivf":
        nlist = max(1, min(cfg.nlist, len(docs) // 39))  # faiss wants ~39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(docs)
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(docs)
    return index


class Searcher:
    """Top-k inner-product search over a fixed (N, D) passage matrix, or over a trained faiss index."""

    def __init__(self, docs: np.ndarray | None, cfg: RetrieveConfig, trained=None) -> None:
        self.cfg, self.size = cfg, trained.ntotal if trained is not None else len(docs)
        device = _device(cfg.device)
        self.torch_docs = None
        if trained is None and cfg.index == "flat" and device.type == "cuda" and not _has_faiss_gpu():
            self.torch_docs = torch.from_numpy(docs).to(device)  # GPU without faiss-gpu: exact torch search
            return
        index = trained if trained is not None else _cpu_index(docs, cfg)
        if cfg.index == "ivf":
            index.nprobe = min(cfg.nprobe, index.nlist)
        if device.type == "cuda" and _has_faiss_gpu() and cfg.index != "hnsw":
            import faiss

            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, indices), each (Q, k), best first."""
        k = min(k, self.size)
        if self.torch_docs is not None:
            sims = torch.from_numpy(queries).to(self.torch_docs.device) @ self.torch_docs.T  # (Q, N)
            scores, idx = sims.topk(k, dim=1)
            return scores.cpu().numpy(), idx.cpu().numpy()
        return self.index.search(queries, k)


def search(queries: np.ndarray, docs: np.ndarray, k: int, cfg: RetrieveConfig) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, indices), each (Q, k), best first: a one-off `Searcher`."""
    return Searcher(docs, cfg).search(queries, k)


def candidates_with_seed(ranked: list[str], seed_id: str, top_n: int) -> tuple[list[str], int | None]:
    """The top `top_n` ids with the seed guaranteed among them (it replaces the N-th when retrieval missed it).

    Returns (candidates, 1-based retrieval rank of the seed or None when it was not retrieved at all).
    """
    rank = ranked.index(seed_id) + 1 if seed_id in ranked else None
    cands = ranked[:top_n]
    if seed_id not in cands:
        cands = cands[: top_n - 1] + [seed_id]
    return cands, rank


# ---- the corpus index


def index_dir(cfg: BuildConfig) -> Path:
    return Path(cfg.retrieve.index_dir) if cfg.retrieve.index_dir else Path(cfg.output_dir) / "index"


def identity(cfg: BuildConfig) -> dict[str, Any]:
    """The settings an index was built with that change its vectors or its faiss structure."""
    rc = cfg.retrieve
    # The document format as the embedder reads it ("{title} {text}" for raw text, as before the rule).
    doc_format = embedder_format(rc).document("{title}", "{text}", raw=rc.doc_format)
    out = {"embedder": rc.embedder, "random_init": rc.random_init, "max_length": rc.max_length,
           "doc_format": doc_format, "index": rc.index}
    if rc.random_init:
        out["seed"] = cfg.corpus.seed  # the embedder's random weights come from it
    out.update({"ivf": {"nlist": rc.nlist}, "hnsw": {"hnsw_m": rc.hnsw_m}}.get(rc.index, {}))
    return out


def doc_texts(rows: list[dict[str, Any]], rc: RetrieveConfig, fmt: InputFormat | None = None) -> list[str]:
    """The text the embedder reads for each passage; raw, that is `retrieve.doc_format`."""
    fmt = fmt or embedder_format(rc)
    return [fmt.document(r["title"] or None, r["text"], raw=rc.doc_format.format(title=r["title"] or "", text=r["text"]).strip())
            for r in rows]


def passages_sha256(rows: list[dict[str, Any]], rc: RetrieveConfig) -> str:
    """sha256 over (id, embedded text) per passage, in order: what an index must have embedded."""
    digest = hashlib.sha256()
    for row, text in zip(rows, doc_texts(rows, rc)):
        digest.update(json.dumps([row["id"], text], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def slice_name(index: int, count: int) -> str:
    return f"slice-{index}-of-{count}"


def embed_slice(cfg: BuildConfig, rows: list[dict[str, Any]], index: int, count: int, encoder=None) -> dict[str, Any]:
    """Embed slice `index` of `count` of the (truncated) corpus `rows` into `index_dir`; returns its meta."""
    rc, out = cfg.retrieve, index_dir(cfg)
    block = rc.batch_size * BLOCK_BATCHES
    lo, hi = block_range(len(rows), block, index, count)
    encoder = load_embedder(rc, seed=cfg.corpus.seed) if encoder is None else encoder
    texts, parts = doc_texts(rows[lo:hi], rc), []
    for start in tqdm(range(0, len(texts), block), desc=f"embed {slice_name(index, count)}", unit="block"):
        parts.append(embed(encoder, texts[start : start + block], rc, show_progress=False))  # (block, D)
    matrix = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)  # (hi - lo, D)
    name = slice_name(index, count)
    for stale in (out / INDEX_FILE, out / FAISS_FILE):
        stale.unlink(missing_ok=True)  # the index is incomplete until the index step has seen this slice
    atomic_write(out / f"{name}.npy", lambda tmp: _save(tmp, matrix))
    meta = {"slice": index, "slices": count, "start": lo, "stop": hi, "passages_total": len(rows),
            "dim": int(matrix.shape[1]), "identity": identity(cfg), "passages_sha256": passages_sha256(rows[lo:hi], rc),
            "ids": [r["id"] for r in rows[lo:hi]]}
    write_json(out / f"{name}.json", meta)  # last: its presence means the slice is complete
    return meta


def _save(path: Path, matrix: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temp name
        np.save(f, matrix)


def _slices(out: Path) -> list[dict[str, Any]]:
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("slice-*-of-*.json"))]
    if not metas:
        raise UserError(f"{out}: no embedded corpus slices; run `gecko build fret --config ... --stage embed` first")
    counts = sorted({m["slices"] for m in metas})
    if len(counts) > 1:
        raise UserError(f"{out}: holds slices of {counts} slices each (a stale embedding beside a new one); delete the "
                        f"slice-*-of-N files of the old count and run --stage index again")
    metas.sort(key=lambda m: m["slice"])
    missing = sorted(set(range(counts[0])) - {m["slice"] for m in metas})
    if missing:
        raise UserError(f"{out}: slice(s) {missing} of {counts[0]} are not embedded yet; run --stage embed "
                        f"--shard.index I --shard.count {counts[0]} for each, then --stage index")
    return metas


def finish_index(cfg: BuildConfig, corpus_sha256: str | None = None) -> dict[str, Any]:
    """Check that the slices in `index_dir` cover the corpus once, build faiss for ivf/hnsw, write `index.json`."""
    out, want = index_dir(cfg), identity(cfg)
    metas = _slices(out)
    for m in metas:
        if m["identity"] != want:
            raise UserError(f"{out / slice_name(m['slice'], m['slices'])}.json was embedded with {m['identity']}, this "
                            f"config says {want}; embed it again (--stage embed)")
    stops = [0] + [m["stop"] for m in metas]
    if [m["start"] for m in metas] != stops[:-1] or stops[-1] != metas[0]["passages_total"]:
        raise UserError(f"{out}: the slices' passage ranges {[(m['start'], m['stop']) for m in metas]} do not tile the "
                        f"corpus of {metas[0]['passages_total']} passages; embed every slice with one config")
    files = []
    for m in metas:
        name = slice_name(m["slice"], m["slices"])
        files.append({"file": f"{name}.npy", "start": m["start"], "stop": m["stop"], "passages_sha256": m["passages_sha256"]})
    faiss_file = None
    if cfg.retrieve.index != "flat":  # trained once here, so every shard searches the same structure
        import faiss

        faiss.write_index(_cpu_index(_load_matrix(out, files, metas[0]["dim"]), cfg.retrieve), str(out / FAISS_FILE))
        faiss_file = FAISS_FILE
    whole = hashlib.sha256("".join(f["passages_sha256"] for f in files).encode()).hexdigest()
    manifest = {"identity": want, "passages": stops[-1], "dim": metas[0]["dim"], "passages_sha256": whole,
                "corpus_sha256": corpus_sha256, "slices": files, "faiss": faiss_file}
    write_json(out / INDEX_FILE, manifest)
    return manifest


def _load_matrix(out: Path, files: list[dict[str, Any]], dim: int) -> np.ndarray:
    parts = []
    for f in files:
        path = out / f["file"]
        matrix = np.load(path) if path.is_file() else None
        if matrix is None or matrix.shape != (f["stop"] - f["start"], dim) or matrix.dtype != np.float32:
            raise UserError(f"{path}: missing or not a float32 ({f['stop'] - f['start']}, {dim}) matrix; "
                            f"embed that slice again (--stage embed) and run --stage index")
        parts.append(matrix)
    return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)  # (N, D)


def index_problem(cfg: BuildConfig, rows: list[dict[str, Any]] | None = None) -> str | None:
    """Why `index_dir` can't serve a build of `cfg` over `rows` (None when it can); without rows, settings only."""
    out = index_dir(cfg)
    if not (out / INDEX_FILE).is_file():
        return f"{out} holds no finished corpus index ({INDEX_FILE} is missing)"
    manifest = json.loads((out / INDEX_FILE).read_text())
    if manifest["identity"] != identity(cfg):
        diff = {k: (manifest["identity"].get(k), v) for k, v in identity(cfg).items() if manifest["identity"].get(k) != v}
        return f"the index in {out} was built with other retrieve settings (index vs this build: {diff})"
    if rows is None:
        return None
    if manifest["passages"] != len(rows):
        return f"the index in {out} holds {manifest['passages']} passages, this build's corpus {len(rows)}"
    for f in manifest["slices"]:
        if passages_sha256(rows[f["start"] : f["stop"]], cfg.retrieve) != f["passages_sha256"]:
            return (f"passages {f['start']}..{f['stop'] - 1} of this build differ from those embedded in {out / f['file']} "
                    f"(corpus, corpus.limit, corpus.max_passage_tokens or the LLM tokenizer changed)")
    return None


def check_index(cfg: BuildConfig, rows: list[dict[str, Any]] | None = None) -> None:
    """Raise, saying how to build it, unless `index_dir` serves `cfg` (and `rows`, when given)."""
    if problem := index_problem(cfg, rows):
        where = f"shard {cfg.shard.index} of {cfg.shard.count}: " if cfg.shard.count is not None else ""
        raise UserError(f"{where}{problem}. Build the index for this config first: gecko build fret --config ... "
                        f"--stage embed (then --stage index after embedding slices), or point retrieve.index_dir at "
                        f"a matching one")


def open_index(cfg: BuildConfig, rows: list[dict[str, Any]], encoder=None) -> tuple[Searcher, dict[str, Any]]:
    """A searcher over the index of exactly `rows`; with an `encoder`, a missing or stale index is built first.

    Shards pass no encoder: they never write the shared index, they refuse one that does not match.
    Only the build's own default folder is (re)built here; a `retrieve.index_dir` set by hand is shared,
    and only `--stage embed` / `--stage index` write it.
    """
    out = index_dir(cfg)
    if encoder is None or cfg.retrieve.index_dir:
        check_index(cfg, rows)
    elif problem := index_problem(cfg, rows):
        log.info("embedding the corpus into %s: %s", out, problem)
        for old in [*out.glob("slice-*-of-*.*"), out / INDEX_FILE, out / FAISS_FILE]:
            old.unlink(missing_ok=True)  # this build's own derived files: the new slice replaces them
        embed_slice(cfg, rows, 0, 1, encoder)
        finish_index(cfg, corpus_fingerprint(cfg.corpus))
    manifest = json.loads((out / INDEX_FILE).read_text())
    trained = None
    if manifest["faiss"]:
        import faiss

        trained = faiss.read_index(str(out / manifest["faiss"]))
    docs = _load_matrix(out, manifest["slices"], manifest["dim"]) if trained is None else None
    summary = {"dir": str(out), "passages": manifest["passages"], "passages_sha256": manifest["passages_sha256"]}
    return Searcher(docs, cfg.retrieve, trained), summary


def embed_corpus(cfg: BuildConfig, rows: list[dict[str, Any]], corpus_sha256: str | None) -> dict[str, Any]:
    """The embed step: slice `shard.index` of `shard.count` (the whole corpus when unsharded), then, when
    that was the only slice, the index step too. Returns its statistics."""
    index, count = (cfg.shard.index, cfg.shard.count) if cfg.shard.count is not None else (0, 1)
    meta = embed_slice(cfg, rows, index, count)
    stats = {"slice": index, "slices": count, "passages": meta["stop"] - meta["start"], "passages_total": len(rows),
             "index_dir": str(index_dir(cfg))}
    if count == 1:
        stats["passages_sha256"] = finish_index(cfg, corpus_sha256)["passages_sha256"]
    return stats
