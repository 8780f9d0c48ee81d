"""How long to wait before retrying an LLM server: its `Retry-After`, else jittered exponential backoff.

Hosted endpoints answer 429 (too many requests) or 503 (overloaded) as a matter of course, often with
`Retry-After` in seconds or as an HTTP date (RFC 9110 §10.2.3). Waiting what the server asks is both
polite and the fastest way through; retrying sooner only earns another 429. Without the header, the
waits double from `llm.backoff_s` and are jittered, so the calls of one submission that were refused
together do not all come back together. The date is parsed with the standard library's
`email.utils.parsedate_to_datetime`, the same parser urllib3 uses for this header.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

RATE_LIMIT_STATUS = (429, 503)  # the statuses whose Retry-After we honour


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value ("120" or "Wed, 21 Oct 2026 07:28:00 GMT"); None if unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff_s(base_s: float, attempt: int) -> float:
    """The wait before retry `attempt` (1, 2, ...): base * 2^(attempt-1), times a jitter in [0.5, 1.5)."""
    return base_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)


def retry_delay(status: int | None, headers: dict | None, base_s: float, attempt: int) -> tuple[float, bool]:
    """(seconds to wait before retry `attempt`, whether the server set it) for a failed try."""
    if status in RATE_LIMIT_STATUS and headers is not None:
        asked = parse_retry_after(headers.get("retry-after"))
        if asked is not None:
            return asked, True
    return backoff_s(base_s, attempt), False
