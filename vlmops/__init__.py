"""vlmops: fast kernels for the hot paths of vision-language models, as torch ops.

Every op is `torch.ops.vlmops.<name>` (one schema, a CPU kernel in C++, a CUDA kernel in CUDA C++
and/or Triton, a fake implementation for torch.compile, autograd), with a documented wrapper here
that validates its arguments. `vlmops.reference` holds the pure-PyTorch oracles.
"""

from vlmops import reference
from vlmops._native import build_info
from vlmops.ops.pixel_shuffle import pixel_shuffle, pixel_shuffle_layer_norm
from vlmops.ops.varlen_attention import qwen2_5_vl_window_index, varlen_attention
from vlmops.transformers import PatchReport, patch_model

__version__ = "0.1.0"

__all__ = [
    "PatchReport",
    "build_info",
    "patch_model",
    "pixel_shuffle",
    "pixel_shuffle_layer_norm",
    "qwen2_5_vl_window_index",
    "reference",
    "varlen_attention",
]
