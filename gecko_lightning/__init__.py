"""gecko_lightning: train Gecko-style text embedders distilled from LLMs.

Evaluation and export never import the LightningModule (`module`); `losses`, `distributed`,
`text_format` and `data.schema` import no Lightning; `encoder` is below `checkpoint`; nothing imports
the `gecko` command (`cli`) or `data_builders`. The contracts are in pyproject.toml (import-linter).
"""

from gecko_lightning.encoder import GeckoEncoder

__all__ = ["GeckoEncoder"]
__version__ = "0.1.0"
