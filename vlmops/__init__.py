"""vlmops: fast kernels for the hot paths of vision-language models, as torch ops.

Every op is `torch.ops.vlmops.<name>` (one schema, a CPU kernel in C++, a CUDA kernel in CUDA C++
and/or Triton, a fake implementation for torch.compile, autograd), with a documented wrapper here
that validates its arguments. `vlmops.reference` holds the pure-PyTorch oracles.
"""

from vlmops import reference
from vlmops._native import build_info
from vlmops.cuda_graphs import cuda_graph_tower
from vlmops.models import (
    flamingo_kv_ranges,
    interleaved_mrope_tables,
    mllama_kv_ranges,
    mllama_kv_ranges_from_additive_mask,
    mrope_position_ids,
    mrope_tables,
    pixtral_rope_positions,
    pixtral_rope_tables,
    qwen2_5_vl_window_index,
    qwen_vision_rope_tables,
    vision_rope_positions,
)
from vlmops.ops import register_all as _register_all
from vlmops.ops.gated_cross_attention import gated_cross_attention
from vlmops.ops.patch_embed import patch_embed
from vlmops.ops.pixel_shuffle import pixel_shuffle, pixel_shuffle_layer_norm
from vlmops.ops.rms_norm import rms_norm
from vlmops.ops.rope import RopeTables, apply_rope, rope_1d_tables, rope_inv_freq
from vlmops.ops.silu_mul import silu_mul
from vlmops.ops.varlen_attention import varlen_attention, varlen_attention_backend
from vlmops.transformers import PatchReport, patch_model, register_attention, supported_transformers

_register_all()

__version__ = "0.1.0"

__all__ = [
    "PatchReport",
    "build_info",
    "cuda_graph_tower",
    "flamingo_kv_ranges",
    "gated_cross_attention",
    "mllama_kv_ranges",
    "mllama_kv_ranges_from_additive_mask",
    "patch_embed",
    "patch_model",
    "pixel_shuffle",
    "pixel_shuffle_layer_norm",
    "qwen2_5_vl_window_index",
    "reference",
    "register_attention",
    "rms_norm",
    "RopeTables",
    "apply_rope",
    "interleaved_mrope_tables",
    "mrope_position_ids",
    "mrope_tables",
    "pixtral_rope_positions",
    "pixtral_rope_tables",
    "qwen_vision_rope_tables",
    "rope_1d_tables",
    "rope_inv_freq",
    "silu_mul",
    "supported_transformers",
    "vision_rope_positions",
    "varlen_attention",
    "varlen_attention_backend",
]
