"""User errors: bad input that `gecko` reports as one line on stderr, with exit code 2 and no traceback.

A traceback is for a bug in this code. A wrong flag, path or record is the user's to fix, and the
message alone must say how: it names the file and line, or the flag and the bad value, and the fix.
Libraries raise these classes; only the command entry points turn them into an exit, through
`exit_on_user_error`. `GECKO_DEBUG=1` shows the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(ValueError):
    """Bad input from the user; the message is one line with the location or flag, the value and the fix."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


def debug() -> bool:
    """GECKO_DEBUG=1: let user errors raise with their traceback."""
    return os.environ.get("GECKO_DEBUG", "") not in ("", "0")


def find_user_error(error: BaseException | None) -> UserError | None:
    """`error` itself or the UserError it was raised from: jsonargparse wraps the errors of __init__."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__  # only explicit causes: a bug raised while handling a user error stays a bug
    return None


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Print `prog: error: <message>` and exit 2 on a UserError; anything else raises as usual."""
    try:
        yield
    except Exception as e:
        error = find_user_error(e)
        if error is None or debug():
            raise
        print(f"{prog}: error: " + str(error).replace("\n", " "), file=sys.stderr)
        raise SystemExit(2) from None
