"""Documents -> passages: cut by the embedder's tokenizer, titled by their heading path, deduplicated.

Each `Section` of a document (documents.py) is cut on its own, so a passage never spans a heading.
Inside a section semchunk cuts at the most structural break that fits `corpus.chunk_tokens`: blank
lines (paragraphs), then line breaks, then sentence ends, then clause marks, then spaces; only a
single word longer than the limit is ever cut inside. Tokens are counted by `retrieve.embedder`'s own
tokenizer (text only, no special tokens), the one that reads the passage at retrieval time.

A passage's id is `<relative path>#<n>`, n counting the file's chunks from 0 before any duplicate is
dropped: the ids of a file depend on that file's bytes and the chunk settings only, so editing one
file changes that file's ids and LLM cache keys and no other's. Files are read in sorted path order.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from gecko_lightning.errors import UserError
from gecko_lightning.paths import local_model_path, model_loading, resolve_path

from ..config import CorpusConfig
from .documents import FORMATS, Document, Unreadable, list_documents, read_document

log = logging.getLogger(__name__)
NUM_PERM, SHINGLE = 128, 3  # MinHash permutations; words per shingle


def token_counter(tokenizer: str) -> Callable[[str], int]:
    """Tokens of a text as `tokenizer` (a folder, Hub name or `package:` path) splits it, without special tokens."""
    from transformers import AutoTokenizer

    path = local_model_path(resolve_path(tokenizer), "tokenizer")
    with model_loading(path, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(path)
    return lambda text: len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])


def _check(cfg: CorpusConfig) -> None:
    if isinstance(cfg.chunk_tokens, bool) or not isinstance(cfg.chunk_tokens, int) or cfg.chunk_tokens < 8:
        raise UserError(f"corpus.chunk_tokens must be an integer of at least 8, got {cfg.chunk_tokens!r}")
    if not 0 <= cfg.chunk_overlap < cfg.chunk_tokens:
        raise UserError(f"corpus.chunk_overlap must be at least 0 and below corpus.chunk_tokens "
                        f"({cfg.chunk_tokens}), got {cfg.chunk_overlap!r}")
    if not 0 < cfg.near_duplicate_threshold <= 1:
        raise UserError(f"corpus.near_duplicate_threshold must be in (0, 1], got {cfg.near_duplicate_threshold!r}")


def document_chunks(doc: Document, chunker, overlap: int) -> list[tuple[str, str]]:
    """(title, text) per chunk: the heading path (`Install > GPU`), else the document's title, else its file name."""
    out = []
    for section in doc.sections:
        title = " > ".join(section.headings) or doc.title or doc.rel.rsplit("/", 1)[-1]
        out += [(title, text) for text in chunker(section.text, overlap=overlap or None)]
    return out


def document_passages(cfg: CorpusConfig, tokenizer: str, report: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows `{"id", "title", "text"}` of every document `cfg` names, in path order, duplicates dropped.

    `report` (when given) receives what the manifest records: files read, skipped by reason (each
    unreadable one with its path and reason), chunks, duplicates dropped and the token lengths.
    """
    import semchunk

    _check(cfg)
    listing = list_documents(cfg)
    if not listing.files:
        skipped = sum(listing.skipped.values())
        raise UserError(f"corpus.path {cfg.path!r} holds no file it reads ({_extensions()})"
                        + (f"; {skipped} other file(s) skipped: {dict(listing.skipped)}" if skipped else ""))
    count = token_counter(tokenizer)
    chunker = semchunk.chunkerify(count, cfg.chunk_tokens)
    rows, bad, empty = [], [], []
    for rel, path in tqdm(listing.files, desc="read documents", unit="file", disable=None):
        try:
            doc = read_document(rel, path)
        except Unreadable as e:
            if cfg.on_error == "raise":
                raise UserError(f"{path}: {e}; fix or remove the file, or set corpus.on_error=skip") from None
            log.warning("skipped %s: %s", path, e)
            bad.append({"path": rel, "reason": str(e)})
            continue
        chunks = document_chunks(doc, chunker, cfg.chunk_overlap)
        if not chunks:
            empty.append(rel)
        rows += [{"id": f"{rel}#{n}", "title": title, "text": text} for n, (title, text) in enumerate(chunks)]
    if not rows:
        raise UserError(f"corpus.path {cfg.path!r}: none of its {len(listing.files)} file(s) ({_extensions()}) "
                        f"holds readable text: {len(bad)} unreadable, {len(empty)} empty (e.g. "
                        f"{(bad[0]['path'] + ': ' + bad[0]['reason']) if bad else empty[0]})")
    kept, dropped = drop_duplicates(rows, cfg.near_duplicates, cfg.near_duplicate_threshold)
    if report is not None:
        report.update(_report(cfg, tokenizer, listing, bad, empty, len(rows), kept, dropped, count))
    return kept


def _extensions() -> str:
    return "extensions read: " + ", ".join(FORMATS)


def _shingles(text: str) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def drop_duplicates(rows: list[dict[str, Any]], near: bool, threshold: float) -> tuple[list[dict[str, Any]], dict]:
    """The rows without exact repeats of an earlier text and, when `near`, without near repeats (MinHash
    LSH finds candidates, their estimated Jaccard of word 3-grams decides); the first one is kept."""
    from datasketch import MinHash, MinHashLSH

    seen, kept, dropped = set(), [], Counter(exact=0, near=0)
    lsh, hashes = (MinHashLSH(threshold=threshold, num_perm=NUM_PERM), {}) if near else (None, {})
    for row in rows:
        if row["text"] in seen:
            dropped["exact"] += 1
            continue
        seen.add(row["text"])
        if lsh is not None:
            mh = MinHash(num_perm=NUM_PERM)  # fixed seed and hash (sha1): the same on every machine
            mh.update_batch([s.encode("utf-8") for s in _shingles(row["text"])])
            if any(mh.jaccard(hashes[key]) >= threshold for key in lsh.query(mh)):
                dropped["near"] += 1
                continue
            lsh.insert(row["id"], mh)
            hashes[row["id"]] = mh
        kept.append(row)
    return kept, dict(dropped)


def _report(cfg, tokenizer, listing, bad, empty, chunked, kept, dropped, count) -> dict[str, Any]:
    lengths = sorted(count(r["text"]) for r in kept)
    quantile = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    return {
        "files_read": len(listing.files) - len(bad),
        "files_skipped": {"unsupported_extension": listing.skipped["unsupported_extension"],
                          "excluded": listing.skipped["excluded"], "unreadable": len(bad), "empty": len(empty)},
        "other_extensions": dict(listing.other_extensions.most_common()),
        "unreadable_files": bad,
        "empty_files": empty,
        "chunks": len(kept),
        "chunks_before_dedup": chunked,
        "duplicates_dropped": dropped,
        "token_lengths": {"tokenizer": tokenizer, "limit": cfg.chunk_tokens, "overlap": cfg.chunk_overlap,
                          "min": lengths[0], "p50": quantile(0.5), "p90": quantile(0.9), "max": lengths[-1],
                          "mean": round(statistics.fmean(lengths), 1)},
    }
