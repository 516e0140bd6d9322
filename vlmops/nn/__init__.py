"""Drop-in modules: same parameters and state_dict keys as the transformers modules they replace."""

from vlmops.nn.gated_cross_attention import GatedCrossAttentionBlock, MaskedCrossAttention, MllamaCrossAttention
from vlmops.nn.pixel_shuffle import PixelShuffleConnector, PixelShuffleProjector
from vlmops.nn.vision_embeddings import CLIPVisionEmbeddings, SiglipVisionEmbeddings

__all__ = [
    "CLIPVisionEmbeddings",
    "GatedCrossAttentionBlock",
    "MaskedCrossAttention",
    "MllamaCrossAttention",
    "PixelShuffleConnector",
    "PixelShuffleProjector",
    "SiglipVisionEmbeddings",
]
