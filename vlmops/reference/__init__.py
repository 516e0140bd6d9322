"""Pure-PyTorch references: the oracles of the tests, written from the models' published semantics."""

from vlmops.reference.gated_cross_attention import gated_cross_attention
from vlmops.reference.patch_embed import patch_embed
from vlmops.reference.pixel_shuffle import pixel_shuffle, pixel_shuffle_layer_norm
from vlmops.reference.rms_norm import rms_norm
from vlmops.reference.rope import rope
from vlmops.reference.silu_mul import silu_mul
from vlmops.reference.varlen_attention import varlen_attention

__all__ = [
    "gated_cross_attention",
    "patch_embed",
    "pixel_shuffle",
    "pixel_shuffle_layer_norm",
    "rms_norm",
    "rope",
    "silu_mul",
    "varlen_attention",
]
