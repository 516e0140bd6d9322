"""Drop-in modules: same parameters and state_dict keys as the transformers modules they replace."""

from vlmops.nn.attention import PackedVisionAttention, vision_cu_seqlens
from vlmops.nn.gated_cross_attention import GatedCrossAttentionBlock, MaskedCrossAttention, MllamaCrossAttention
from vlmops.nn.mlp import GatedMLP, RowAlignedLinear
from vlmops.nn.norm import RMSNorm
from vlmops.nn.patch_embed import PatchEmbed
from vlmops.nn.patch_merger import PatchMerger
from vlmops.nn.pixel_shuffle import PixelShuffleConnector, PixelShuffleProjector
from vlmops.nn.rope import MRope, MRotaryEmbedding, VisionRope, VisionRotaryEmbedding
from vlmops.nn.vision_embeddings import CLIPVisionEmbeddings, SiglipVisionEmbeddings

__all__ = [
    "CLIPVisionEmbeddings",
    "GatedCrossAttentionBlock",
    "GatedMLP",
    "MRope",
    "MRotaryEmbedding",
    "MaskedCrossAttention",
    "MllamaCrossAttention",
    "PackedVisionAttention",
    "PatchEmbed",
    "PatchMerger",
    "PixelShuffleConnector",
    "PixelShuffleProjector",
    "RMSNorm",
    "RowAlignedLinear",
    "SiglipVisionEmbeddings",
    "VisionRope",
    "VisionRotaryEmbedding",
    "vision_cu_seqlens",
]
