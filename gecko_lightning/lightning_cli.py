"""`gecko fit|validate|test` through LightningCLI: typed signatures are the config and the help.

Defaults added here: a `GeckoWandbLogger` (offline unless a W&B key is available; override with
`--trainer.logger=false` or any Lightning logger), the `Throughput` callback, and a config callback
that logs the resolved config, git commit and data manifests to the loggers. `normalize_argv`
makes the `--key=value` arguments of a W&B sweep agent read as LightningCLI overrides.
Lightning's "💡 Tip" lines that advertise litlogger and litmodels are dropped (`quiet_integration_tips`),
and DeepSpeed's log lines go to stderr (`gecko_lightning.console`), so stdout holds only what was asked for.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from jsonargparse import set_parsing_settings
from lightning import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from gecko_lightning.console import deepspeed_logs_to_stderr
from gecko_lightning.errors import exit_on_user_error, keep_on_os_error
from gecko_lightning.module import GeckoModule
from gecko_lightning.tracking import GeckoSaveConfig, Throughput
from gecko_lightning.user_files import check_yaml, load_torch_file

WANDB_LOGGER = "gecko_lightning.tracking.GeckoWandbLogger"
# Group-valued keys (a class or a YAML file for a whole section) must come before the dotted
# overrides of the same section, or they would reset them; W&B passes its args in any order.
_GROUP_KEYS = ("--data", "--model", "--trainer", "--trainer.logger")
FIT_KEPT = "checkpoints saved before it are whole (add --ckpt_path with the last one to resume from it)"


TIP_PREFIX = "💡 Tip:"
# The loggers Lightning's rank_zero_info writes through (lightning_utilities' `log`, re-pointed by each package).
TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoIntegrationTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def quiet_integration_tips() -> None:
    """Drop Lightning's "💡 Tip" lines (install litlogger, install litmodels): they say nothing about the run.

    Lightning 2.6 prints them at INFO through its `rank_zero_info` logger with no switch to turn them off
    (a later release adds `Trainer(suggest_integrations=False)`); its documented way to shape console
    output is that logging hierarchy. A filter on the logger drops these lines and keeps the others
    (devices, checkpoints). Idempotent.
    """
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoIntegrationTips) for f in logger.filters):
            logger.addFilter(_NoIntegrationTips())


def _tokenizer_for_data(model_name_or_path: str, tokenizer: str | None) -> str:
    return tokenizer or model_name_or_path


def normalize_argv(argv: list[str]) -> list[str]:
    """W&B agent args -> LightningCLI args: `=None` becomes `=null`; whole-section values go first.

    W&B writes every sweep value with Python's `str()`, so a None arrives as `--key=None`, which
    jsonargparse would read as the string "None"; True/False and `[32, 16]` already parse as YAML.
    """
    out = [a[: -len("None")] + "null" if a.startswith("--") and a.endswith("=None") else a for a in argv]
    end = _after_configs(out)
    head, rest = out[:end], out[end:]
    first = [a for a in rest if "=" in a and a.split("=", 1)[0] in _GROUP_KEYS]
    return head + first + [a for a in rest if a not in first]


def _after_configs(argv: list[str]) -> int:
    """Index just past the subcommand and the last `--config FILE`: the overrides start there."""
    end = 1 if argv and not argv[0].startswith("-") else 0
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c"):
            end = i + 2
        elif arg.startswith("--config="):
            end = i + 1
    return end


def config_files(argv: list[str]) -> list[str]:
    """The files of every `--config FILE`, `-c FILE` and `--config=FILE`, in order."""
    files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]
    return files + [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]


class GeckoCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The DataModule tokenizes in its workers with the encoder's own tokenizer.
        parser.link_arguments(
            ("model.model_name_or_path", "model.tokenizer"), "data.init_args.tokenizer", compute_fn=_tokenizer_for_data
        )

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads `ckpt_path` right after parsing (for its hyper-parameters): check it first, so a
        truncated file is one line naming it, not torch's zip error 20 frames down."""
        command = self.config.get("subcommand")
        ckpt_path = self.config[command].get("ckpt_path") if command else None
        if ckpt_path and Path(ckpt_path).is_file():
            load_torch_file(ckpt_path, "Lightning checkpoint for --ckpt_path")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """Put W&B run folders under trainer.default_root_dir unless the logger names its own."""
        config = self.config.get(str(self.subcommand), self.config)
        trainer = config.get("trainer")
        logger = trainer.get("logger") if trainer is not None else None
        if getattr(logger, "class_path", None) == WANDB_LOGGER and logger.init_args.get("save_dir") is None:
            logger.init_args.save_dir = trainer.get("default_root_dir") or "."


def run_lightning_cli(argv: list[str]) -> GeckoCLI:
    """Run LightningCLI on `argv`; a user error raised in an __init__ or in fit (which jsonargparse
    may wrap) ends as one line and exit code 2, see `gecko_lightning.errors`."""
    args = normalize_argv(argv)
    # LightningCLI warns when given args while sys.argv also holds them (the console-script case):
    # there, hand it the normalised order through sys.argv instead.
    if argv == sys.argv[1:]:
        sys.argv[1:], args = args, None
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    quiet_integration_tips()
    deepspeed_logs_to_stderr()
    # Lightning writes each checkpoint to a temp file and renames it (fsspec transaction), so a full disk
    # never leaves half of one under its name.
    kept = FIT_KEPT if argv and argv[0] == "fit" else None
    with exit_on_user_error(f"gecko {argv[0] if argv else 'fit'}"), keep_on_os_error(kept):
        for path in config_files(argv):  # jsonargparse would print the YAML parser's whole trace
            check_yaml(path)
        return GeckoCLI(
            GeckoModule,
            LightningDataModule,
            subclass_mode_data=True,
            args=args,
            save_config_callback=GeckoSaveConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": {"class_path": WANDB_LOGGER}, "callbacks": [Throughput()]},
            # omegaconf+ resolves `${model.max_length}` after every config file and flag is merged, so
            # `--model.max_length=128` reaches the values derived from it; the paths stay absolute in YAML.
            parser_kwargs={"parser_mode": "omegaconf+", "allow_abbrev": False},
        )
