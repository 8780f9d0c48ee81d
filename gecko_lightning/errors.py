"""User errors: bad input that `gecko` reports as one line on stderr, with exit code 2 and no traceback.

A traceback is for a bug in this code. A wrong flag, path or record is the user's to fix, and the
message alone must say how: it names the file and line, or the flag and the bad value, and the fix.
Libraries raise these classes; only the command entry points turn them into an exit, through
`exit_on_user_error`. `GECKO_DEBUG=1` shows the traceback anyway.

A full disk, a quota, a read-only or forbidden folder is not a bug either: `exit_on_user_error` turns
those OS errors into one line that names the path, what was kept (`keep_on_os_error` lets a command
say so) and the fix. Any other OSError stays a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# errno -> (what happened, what to do); these are the user's to fix, so they never print a traceback.
OS_ERRORS = {
    errno.ENOSPC: ("no space left on device writing", "free space and run the same command again"),
    getattr(errno, "EDQUOT", 122): ("disk quota exceeded writing", "free space within the quota and run the same command again"),
    errno.EROFS: ("read-only file system: cannot write", "write to another folder or remount it read-write"),
    errno.EACCES: ("permission denied on", "fix its permissions or use another folder, then run the same command again"),
}
KEPT = "gecko_kept"  # attribute on an OSError: what the failing command left intact


class UserError(ValueError):
    """Bad input from the user; the message is one line with the location or flag, the value and the fix."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


def debug() -> bool:
    """GECKO_DEBUG=1: let user errors raise with their traceback."""
    return os.environ.get("GECKO_DEBUG", "") not in ("", "0")


def is_os_user_error(error: BaseException) -> bool:
    """A full disk, quota, read-only or forbidden path: an OSError of OS_ERRORS."""
    return isinstance(error, OSError) and error.errno in OS_ERRORS


def os_error_message(error: OSError) -> str:
    """`no space left on device writing PATH; <kept>: <fix>` for an OSError of OS_ERRORS."""
    what, fix = OS_ERRORS[error.errno]
    path = error.filename if error.filename is not None else "a file (the OS did not say which)"
    kept = getattr(error, KEPT, None)
    return f"{what} {os.fsdecode(path)}; " + (f"{kept}: {fix}" if kept else fix)


@contextmanager
def keep_on_os_error(kept: str | None) -> Iterator[None]:
    """Say what was kept when an OSError of OS_ERRORS ends the block (the innermost block wins; None: nothing to say)."""
    try:
        yield
    except OSError as e:
        if kept and is_os_user_error(e) and not hasattr(e, KEPT):
            setattr(e, KEPT, kept)
        raise


def find_user_error(error: BaseException | None) -> BaseException | None:
    """`error` itself or the UserError (or OS_ERRORS OSError) it was raised from: jsonargparse wraps the
    errors of __init__."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError) or is_os_user_error(error):
            return error
        seen.add(id(error))
        error = error.__cause__  # only explicit causes: a bug raised while handling a user error stays a bug
    return None


def _close_progress_bars() -> None:
    """A tqdm bar left open by the failed stage ends with a carriage return, not a newline: the message
    would land on the bar's line and be overwritten when the bar closes later. Close them first."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Print `prog: error: <message>` and exit 2 on a UserError or an OS_ERRORS OSError; anything else
    raises as usual."""
    try:
        yield
    except Exception as e:
        error = find_user_error(e)
        if error is None or debug():
            raise
        message = os_error_message(error) if isinstance(error, OSError) and not isinstance(error, UserError) else str(error)
        _close_progress_bars()
        print(f"{prog}: error: " + " ".join(message.splitlines()), file=sys.stderr)
        raise SystemExit(2) from None
