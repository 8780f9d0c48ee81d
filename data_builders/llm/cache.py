"""A persistent cache of every LLM call, so a killed or repeated build never pays for a call twice.

SQLite in WAL mode: each batch of results is one transaction, so after `kill -9` the file holds
every batch that finished and nothing half-written. The key hashes the backend's model id, the
prompt version, the call kind and the exact input; changing any of them misses the cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gecko_lightning.errors import UserError

from .base import BackendError, CallFailed


# SQLite's result codes for a full disk and a file it may not write, as the OS errors they are.
SQLITE_OS_ERRORS = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_READONLY: errno.EACCES}


def cache_key(model_id: str, prompt_version: str, kind: str, payload: Any) -> str:
    blob = json.dumps([model_id, prompt_version, kind, payload], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class LLMCache:
    """key -> JSON value, in one SQLite file that several processes may open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives a killed process (not a power cut) and keeps commits cheap.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("SELECT key, value FROM calls ORDER BY key LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None

    def _corrupt(self, e: Exception) -> UserError:
        """The cache holds paid LLM calls, so it is never deleted here: the user decides."""
        return UserError(f"LLM cache {self.path} is not a readable SQLite database ({e}); it is left as it is. "
                         f"Move it aside (mv {self.path} {self.path}.bad) to start an empty cache, or set cache.path")

    def _failed(self, e: sqlite3.DatabaseError) -> Exception:
        """A full disk or a read-only cache is an OSError naming the file (the stored calls are intact)."""
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
        if code in SQLITE_OS_ERRORS:
            return OSError(SQLITE_OS_ERRORS[code], str(e), str(self.path))
        return self._corrupt(e)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):  # SQLite limits bound parameters per statement
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            try:
                for key, value in self._db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
            except sqlite3.DatabaseError as e:
                raise self._corrupt(e) from None
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store a batch in one transaction: all of it lands, or none of it."""
        rows = [(k, json.dumps(v)) for k, v in items.items()]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back itself on a full disk; a second ROLLBACK would mask why
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            raise self._failed(e) from None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CallCounter:
    """Per-stage counts of calls sent to the LLM, calls answered by the cache, and calls that failed."""

    def __init__(self) -> None:
        self.llm_calls: Counter = Counter()
        self.cache_hits: Counter = Counter()
        self.llm_failures: Counter = Counter()


def cached_batch(
    cache: LLMCache,
    counter: CallCounter,
    stage: str,
    keys: Sequence[str],
    compute: Callable[[list[int]], list[Any]],
    max_failures: int | None = None,
) -> list[Any]:
    """Values for `keys`, computing only the misses (by index) and storing them in one transaction.

    Callers pass fixed batches in a fixed order, so a resumed run recomputes exactly the batches that
    had not finished, with the same batch composition: the output is identical to an uninterrupted run.
    A value the backend could not get comes back as `CallFailed`: it is counted, never stored, and
    the next run asks again. When every call of a batch failed, or the stage's failures pass
    `max_failures`, the build stops here (what finished is already stored).
    """
    found = cache.get_many(keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    counter.cache_hits[stage] += len(keys) - len(missing)
    if missing:
        values = compute(missing)
        if len(values) != len(missing):
            raise RuntimeError(f"backend returned {len(values)} results for {len(missing)} inputs")
        counter.llm_calls[stage] += len(missing)
        new = {keys[i]: v for i, v in zip(missing, values) if not isinstance(v, CallFailed)}
        if new:
            cache.put_many(new)
        failed_at = {keys[i]: v for i, v in zip(missing, values) if isinstance(v, CallFailed)}
        failed = list(failed_at.values())
        counter.llm_failures[stage] += len(failed)
        if failed and (not new or (max_failures is not None and counter.llm_failures[stage] > max_failures)):
            why = "every call of a batch failed" if not new else f"more than llm.max_failures={max_failures} calls failed"
            raise BackendError(f"{stage}: {why}; last error: {failed[-1].error}. "
                               f"Finished calls are cached: run the same command again to resume")
        found.update(new)
        return [found[k] if k in found else failed_at[k] for k in keys]
    return [found[k] for k in keys]
