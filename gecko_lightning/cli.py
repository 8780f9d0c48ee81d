"""The `gecko` command.

    gecko fit|validate|test --config X.yaml [--model.temperature=0.02 ...]   (LightningCLI)
    gecko data validate|convert ...     gecko build fret ...
    gecko eval ...                      gecko export CKPT OUT_DIR
    gecko sweep sweep.yaml ...          gecko report RUNS_DIR

Each non-Lightning subcommand lives beside the code it drives and is imported lazily,
so `gecko data validate` never pays for importing torch's trainer stack. Bad input ends as one
line, `gecko <command>: error: ...`, with exit code 2; `GECKO_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys

from gecko_lightning.errors import exit_on_user_error

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
SUBCOMMANDS = {
    "data": "gecko_lightning.data.cli:main",
    "build": "data_builders.cli:main",
    "eval": "gecko_lightning.evaluation.cli:main",
    "export": "gecko_lightning.export:main",
    "sweep": "gecko_lightning.sweep:main",
    "report": "gecko_lightning.report:main",
    "sync": "gecko_lightning.sync:main",
}
USAGE = "usage: gecko {" + ",".join(LIGHTNING_COMMANDS + tuple(SUBCOMMANDS)) + "} ... (gecko <command> --help)"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in LIGHTNING_COMMANDS and command not in SUBCOMMANDS:
        print(f"gecko: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    # A user error anywhere below is one line on stderr and exit code 2 (GECKO_DEBUG=1: the traceback).
    with exit_on_user_error(f"gecko {command}"):
        if command in LIGHTNING_COMMANDS:
            from gecko_lightning.lightning_cli import run_lightning_cli

            run_lightning_cli(argv)
            return
        module, func = SUBCOMMANDS[command].split(":")
        code = getattr(importlib.import_module(module), func)(rest)
    sys.exit(code or 0)
