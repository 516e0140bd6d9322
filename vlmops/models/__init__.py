"""Model semantics shared by ``vlmops.nn`` and the patch rules: position ids, RoPE tables, window
index and key ranges per model family, as tensor code on the inputs' device (no host sync when the
caller passes the sizes it knows). One module per family; the ops they feed live in ``vlmops.ops``.

The builders reject what transformers rejects. Shapes and sizes are checked everywhere; the values of
index arguments (grids, token types, masks) are checked on CPU tensors with a ``ValueError`` naming the
argument, elsewhere and under torch.compile with a ``torch._assert_async`` that does not synchronize,
and not at all with ``check_values=False`` (hot paths whose inputs are known good).
"""

from vlmops.models.flamingo import flamingo_kv_ranges
from vlmops.models.mllama import mllama_kv_ranges, mllama_kv_ranges_from_additive_mask
from vlmops.models.pixtral import pixtral_rope_positions, pixtral_rope_tables
from vlmops.models.qwen_vl import (
    interleaved_mrope_tables,
    mrope_position_ids,
    mrope_tables,
    qwen2_5_vl_window_index,
    qwen_vision_rope_tables,
    vision_rope_positions,
)

__all__ = [
    "flamingo_kv_ranges",
    "interleaved_mrope_tables",
    "mllama_kv_ranges",
    "mllama_kv_ranges_from_additive_mask",
    "mrope_position_ids",
    "mrope_tables",
    "pixtral_rope_positions",
    "pixtral_rope_tables",
    "qwen2_5_vl_window_index",
    "qwen_vision_rope_tables",
    "vision_rope_positions",
]
