"""Drop-in modules: same parameters and state_dict keys as the transformers modules they replace."""

from vlmops.nn.pixel_shuffle import PixelShuffleConnector, PixelShuffleProjector

__all__ = ["PixelShuffleConnector", "PixelShuffleProjector"]
