"""Pixtral (and Mistral3's vision tower) semantics: the 2D RoPE tables and the row-major (h, w)
positions of its packed patches."""

import torch

from vlmops.models._common import check_grid, grid_token_count, image_of_token
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


def pixtral_rope_positions(
    grid_hw: torch.Tensor, num_tokens: int | None = None, *, check_values: bool = True
) -> torch.Tensor:
    """(h, w) positions of Pixtral's packed patches: per image, row-major over its patch grid (the
    order in which ``PixtralTransformer`` receives them).

    Args:
        grid_hw: ``[n, 2]`` int32/int64 patch rows and columns per image (image_sizes // patch_size),
            on any device.
        num_tokens: ``sum(h*w)``, the packed sequence length (e.g. ``patch_embeds.shape[1]``). Without
            it the sum is read back from grid_hw's device (a host sync on a GPU).
        check_values: check grid_hw's values (see below); False skips them for hot paths whose grids
            are known good.

    Returns:
        ``[num_tokens, 2]`` int64 on grid_hw's device.

    Checks: shapes, dtypes and argument types always (``ValueError``/``TypeError``). Values, with
    ``check_values``: entries >= 0, ``sum(h*w)`` below 2**63 and equal to num_tokens; on CPU a
    ``ValueError``, on other devices and under torch.compile a ``torch._assert_async`` (no sync).
    """
    fn = "pixtral_rope_positions"
    check_grid(fn, "grid_hw", grid_hw, 2)
    num_tokens = grid_token_count(fn, "grid_hw", grid_hw, "hw", 1, "", "num_tokens", num_tokens, check_values)
    grid = grid_hw.long()
    image, local = image_of_token(grid.prod(-1), num_tokens)
    w = grid[:, 1][image]
    return torch.stack((local // w, local % w), dim=-1)
