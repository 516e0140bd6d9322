"""Reference pixel shuffle (token merging) of InternVL (ps_version v2), Idefics3 and SmolVLM.

Output token (i, j) of a [H, W] grid merged by scale s is the concatenation, over (dy, dx) in
row-major order, of the input tokens (s*i + dy, s*j + dx): channel (dy*s + dx)*C + c.
"""

import torch
import torch.nn.functional as F


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """x [B, H, W, C] -> [B, H/s, W/s, s*s*C]."""
    B, H, W, C = x.shape
    s = scale
    return x.reshape(B, H // s, s, W // s, s, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H // s, W // s, s * s * C)


def pixel_shuffle_layer_norm(x, scale, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the s*s*C channels of pixel_shuffle(x, scale) (InternVL's projector start)."""
    y = pixel_shuffle(x, scale)
    return F.layer_norm(y, (y.shape[-1],), weight, bias, eps)
