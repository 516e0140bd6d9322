"""Pixtral (and Mistral3's vision tower) semantics: the 2D RoPE tables and the row-major (h, w)
positions of its packed patches."""

import torch

from vlmops.models._common import check_grid, image_of_token
from vlmops.ops._checks import check_int
from vlmops.ops.rope import RopeTables, check_inv_freq

__all__ = ["pixtral_rope_positions", "pixtral_rope_tables"]


def pixtral_rope_tables(inv_freq: torch.Tensor) -> RopeTables:
    """Pixtral vision tower (`PixtralVisionRotaryEmbedding`): inv_freq is the module's buffer
    [head_dim/2] = cat(inv[0::2], inv[1::2]); its first half turns with h, its second with w.
    cos/sin are rounded to the activation dtype (fp32_math=False). Positions: [N, 2] (h, w), e.g.
    from :func:`pixtral_rope_positions`."""
    check_inv_freq("pixtral_rope_tables", inv_freq)
    n = inv_freq.shape[0]
    if n % 2:
        raise ValueError(f"vlmops.pixtral_rope_tables: inv_freq must have an even length (h and w halves), got {n}")
    axis = torch.arange(2, device=inv_freq.device).repeat_interleave(n // 2)
    return RopeTables(axis, inv_freq, False)


def pixtral_rope_positions(grid_hw: torch.Tensor, num_tokens=None) -> torch.Tensor:
    """(h, w) positions [N, 2] int64 of Pixtral's packed patches: per image, row-major over its patch
    grid (`PixtralTransformer` input order). grid_hw [n, 2] patch rows and columns per image
    (image_sizes // patch_size). num_tokens = sum(h*w) avoids reading it back from the device."""
    fn = "pixtral_rope_positions"
    check_grid(fn, "grid_hw", grid_hw, 2)
    if num_tokens is not None:
        check_int(fn, "num_tokens", num_tokens, minimum=0)
    grid = grid_hw.long()
    image, local = image_of_token(grid.prod(-1), num_tokens)
    w = grid[:, 1][image]
    return torch.stack((local // w, local % w), dim=-1)
