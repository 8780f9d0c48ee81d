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

import difflib
import importlib
import sys

from gecko_lightning.console import deepspeed_logs_to_stderr
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
# `gecko --help`: one line per command, in the order of a project's life. A new command adds its line here.
SUMMARIES = {
    "data": "check, convert or chunk datasets (validate | convert | chunk)",
    "build": "build FRet training data from a corpus with an LLM (gecko build fret)",
    "fit": "fine-tune an embedder from YAML configs (LightningCLI)",
    "validate": "run a config's validation loop once, e.g. on --ckpt_path",
    "test": "run a config's test loop once, e.g. on --ckpt_path",
    "predict": "run a config's predict loop (LightningCLI)",
    "eval": "score a model on BEIR, STS, classification or MTEB (eval rerank: a build's LLM)",
    "export": "write a checkpoint as a sentence-transformers folder (ONNX, Hub upload, averaging with the base)",
    "sweep": "run sweep.yaml's ablations without a W&B server, or as a Slurm job array",
    "report": "compare finished runs or eval results in a table and a plot",
    "sync": "upload offline W&B runs, then declare their build -> fit -> eval inputs",
}


def commands() -> tuple[str, ...]:
    """Every command, in SUMMARIES order; one missing from SUMMARIES comes last (and fails a test)."""
    known = LIGHTNING_COMMANDS + tuple(SUBCOMMANDS)
    return tuple(c for c in SUMMARIES if c in known) + tuple(c for c in known if c not in SUMMARIES)


def help_text() -> str:
    """What `gecko --help` prints: the usage, then each command with its line, as `git --help` does."""
    width = max(map(len, commands()))
    rows = [f"   {name:<{width}}   {SUMMARIES.get(name, '')}".rstrip() for name in commands()]
    return "\n".join(["usage: gecko <command> [<args>]", "",
                      "Train Gecko-style text embedders: LLM-distilled training data (FRet), fine-tuning, evaluation, export.",
                      "", "commands:", *rows, "", "`gecko <command> --help` lists a command's flags."])


def unknown_command(command: str) -> str:
    """One line naming the nearest command (difflib), or all of them when none is near."""
    near = difflib.get_close_matches(command, commands(), n=1)
    hint = f"did you mean {near[0]!r}?" if near else "the commands are " + ", ".join(commands())
    return f"gecko: error: unknown command {command!r}; {hint} (gecko --help says what each does)"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in LIGHTNING_COMMANDS and command not in SUBCOMMANDS:
        print(unknown_command(command), file=sys.stderr)
        sys.exit(2)
    deepspeed_logs_to_stderr()  # any command may import DeepSpeed (a preset, a ZeRO folder): its log lines are not output
    # A user error anywhere below is one line on stderr and exit code 2 (GECKO_DEBUG=1: the traceback).
    with exit_on_user_error(f"gecko {command}"):
        if command in LIGHTNING_COMMANDS:
            from gecko_lightning.lightning_cli import run_lightning_cli

            run_lightning_cli(argv)
            return
        module, func = SUBCOMMANDS[command].split(":")
        code = getattr(importlib.import_module(module), func)(rest)
    sys.exit(code or 0)
