"""gecko_lightning: train Gecko-style text embedders distilled from LLMs."""

from gecko_lightning.encoder import GeckoEncoder

__all__ = ["GeckoEncoder"]
__version__ = "0.1.0"
