"""Whether a corpus or a written file changed: sha256 fingerprints that manifests record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gecko_lightning.paths import resolve_path

from ..config import CorpusConfig
from .documents import list_documents, reads_documents


def update_from_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes to a hashlib digest in 1 MiB blocks."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def corpus_fingerprint(cfg: CorpusConfig) -> str | None:
    """What a build manifest records to tell whether the corpus changed since.

    A folder or glob of documents: a sha256 over the chunk settings and the files it reads.
    A file: its sha256. A Hub-layout folder: a sha256 over its files (relative paths and bytes, hidden
    ones such as .git left out) and the config, split and column map that pick rows from them. A Hub
    name: the revision `main` resolved to in the local Hub cache, or None when the cache can't tell.
    """
    if reads_documents(cfg):
        return _documents_fingerprint(cfg)
    path = Path(resolve_path(cfg.path)).expanduser()
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256(json.dumps([cfg.config, cfg.split, cfg.columns], sort_keys=True).encode())
        files = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file()}
        for rel in sorted(r for r in files if not any(part.startswith(".") for part in r.split("/"))):
            digest.update(f"\0{rel}\0{files[rel].stat().st_size}\0".encode())
            update_from_file(digest, files[rel])
        return digest.hexdigest()
    return _hub_revision(cfg.path)


def _documents_fingerprint(cfg: CorpusConfig) -> str:
    """A sha256 over the chunk settings and the files a documents corpus reads (relative paths and bytes)."""
    keys = ("include", "exclude", "chunk_tokens", "chunk_overlap", "near_duplicates", "near_duplicate_threshold")
    digest = hashlib.sha256(json.dumps(["documents", *(getattr(cfg, k) for k in keys)]).encode())
    for rel, path in list_documents(cfg).files:
        digest.update(f"\0{rel}\0{path.stat().st_size}\0".encode())
        update_from_file(digest, path)
    return digest.hexdigest()


def _hub_revision(name: str) -> str | None:
    """The commit sha the Hub cache's `refs/main` holds for dataset `name` (written by any online load)."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}" / "refs" / "main"
    return (ref.read_text().strip() or None) if ref.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()
