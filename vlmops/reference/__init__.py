"""Pure-PyTorch references: the oracles of the tests, written from the models' published semantics."""

from vlmops.reference.pixel_shuffle import pixel_shuffle, pixel_shuffle_layer_norm
from vlmops.reference.varlen_attention import varlen_attention

__all__ = ["pixel_shuffle", "pixel_shuffle_layer_norm", "varlen_attention"]
