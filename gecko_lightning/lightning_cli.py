"""`gecko fit|validate|test` through LightningCLI: typed signatures are the config and the help."""

from __future__ import annotations

from lightning import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from gecko_lightning.module import GeckoModule


def _tokenizer_for_data(model_name_or_path: str, tokenizer: str | None) -> str:
    return tokenizer or model_name_or_path


class GeckoCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The DataModule tokenizes in its workers with the encoder's own tokenizer.
        parser.link_arguments(
            ("model.model_name_or_path", "model.tokenizer"), "data.init_args.tokenizer", compute_fn=_tokenizer_for_data
        )


def run_lightning_cli(argv: list[str]) -> GeckoCLI:
    return GeckoCLI(
        GeckoModule,
        LightningDataModule,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
    )
