"""Uploads to the Hugging Face Hub: one function, so every `--push-to-hub` goes through the same call.

Tests replace `upload_folder` (or set `GECKO_HUB_STANDIN=DIR`, which copies the folder to
`DIR/<repo_type>/<repo>` instead of uploading), so nothing reaches the network in tests.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

from gecko_lightning.errors import UserError


def _check_repo(repo: str) -> None:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--push-to-hub {repo!r}: name the repository as OWNER/NAME, e.g. my-org/gecko-small")


def _standin_copy(folder: Path, dest: Path, allow_patterns: list[str] | None) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if allow_patterns is None or any(fnmatch.fnmatch(rel, pat) for pat in allow_patterns):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)


def upload_folder(folder: str | Path, repo: str, *, repo_type: str = "model", private: bool = False,
                  allow_patterns: list[str] | None = None, message: str = "Upload with gecko_lightning") -> str:
    """Create `repo` (if needed) and upload `folder` to it; returns the repository URL.

    `allow_patterns`: only the files matching these globs (relative to `folder`) are uploaded.
    Authentication is huggingface_hub's own (`HF_TOKEN` or `hf auth login`).
    """
    _check_repo(repo)
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"nothing to upload: {folder} is not a folder")
    standin = os.environ.get("GECKO_HUB_STANDIN")
    if standin:
        _standin_copy(folder, Path(standin) / repo_type / repo, allow_patterns)
        return f"file://{Path(standin).resolve() / repo_type / repo}"
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type=repo_type,
                      allow_patterns=allow_patterns, commit_message=message)
    return str(url)
