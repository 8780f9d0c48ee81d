"""What reaches the console: stdout holds only what a command was asked to print.

DeepSpeed's logger writes to stdout, and importing DeepSpeed on a machine without a GPU logs a warning
("Setting accelerator to CPU"). `gecko fit --print_config > run.yaml` (the DeepSpeed presets import it
while the config is parsed) and `gecko export` / `gecko eval` of a ZeRO checkpoint folder (its converter
imports it) would print that line among their own output. `gecko` calls `deepspeed_logs_to_stderr`
before any command runs. Logging only: importing this module costs nothing.
"""

from __future__ import annotations

import logging
import sys

# DeepSpeed's logger (deepspeed.utils.logging): named "DeepSpeed", it writes to sys.stdout with this format.
DEEPSPEED_LOGGER = "DeepSpeed"
DEEPSPEED_FORMAT = "[%(asctime)s] [%(levelname)s] [%(filename)s:%(lineno)d:%(funcName)s] %(message)s"


class _ToStderr(logging.Filter):
    """Writes each record to the current sys.stderr and keeps it from the logger's own handlers."""

    formatter = logging.Formatter(DEEPSPEED_FORMAT)

    def filter(self, record: logging.LogRecord) -> bool:
        print(self.formatter.format(record), file=sys.stderr, flush=True)
        return False


def deepspeed_logs_to_stderr() -> None:
    """Send DeepSpeed's log lines to stderr, where Lightning's and ours go.

    A filter on the logger (created here if DeepSpeed is not imported yet: it adds its handler to the same
    object) writes each record to stderr and drops it from the stdout handler. Idempotent.
    """
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    if not any(isinstance(f, _ToStderr) for f in logger.filters):
        logger.addFilter(_ToStderr())
