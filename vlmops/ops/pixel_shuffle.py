"""Pixel shuffle (token merging) and fused pixel shuffle + LayerNorm.

The token merging of InternVL (`InternVLModel.pixel_shuffle`, ps_version v2, downsample_ratio 0.5
means scale 2), Idefics3 (scale 2) and SmolVLM (scale 3 or 4): a grid of H x W tokens of C channels
becomes (H/s) x (W/s) tokens of s*s*C channels, output token (i, j) concatenating the inputs
(s*i + dy, s*j + dx) over (dy, dx) in row-major order (channel (dy*s + dx)*C + c).

The contract (shapes, dtypes, devices, scale, eps, size arithmetic) is
csrc/include/vlmops/pixel_shuffle_checks.h; the wrappers add only the ``grid`` of ``[B, H*W, C]`` input.
On CUDA, VLMOPS_CUDA_BACKEND=triton runs the Triton variant (vlmops/triton/pixel_shuffle.py) instead
of the CUDA C++ kernels.
"""

import math

import torch

from vlmops.ops import registry
from vlmops.reference.pixel_shuffle import pixel_shuffle as _reference_shuffle
from vlmops.reference.pixel_shuffle import pixel_shuffle_backward as _reference_shuffle_backward
from vlmops.reference.pixel_shuffle import pixel_shuffle_layer_norm_backward as _reference_layer_norm_backward
from vlmops.reference.pixel_shuffle import pixel_shuffle_layer_norm_stats as _reference_layer_norm

__all__ = ["pixel_shuffle", "pixel_shuffle_layer_norm"]


def _as_grid(fn: str, x, grid):
    """x as ``[B, H, W, C]`` (a view, never a copy) and whether it came as ``[B, H*W, C]``. Other
    inputs go to the op as they are: its contract names what is wrong with them."""
    if grid is not None and not (
        isinstance(grid, (tuple, list))
        and len(grid) == 2
        and all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in grid)
    ):
        raise ValueError(f"vlmops.{fn}: grid must be (H, W) with non-negative ints, got {grid!r}")
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        return x, False
    if x.dim() == 4:
        if grid is not None and tuple(grid) != tuple(x.shape[1:3]):
            raise ValueError(
                f"vlmops.{fn}: grid {tuple(grid)} does not match x of shape {tuple(x.shape)} ([B, H, W, C])"
            )
        return x, False
    tokens = x.shape[1]
    if grid is None:
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(
                f"vlmops.{fn}: x has {tokens} tokens, which is not a square grid; pass grid=(H, W) with H*W == {tokens}"
            )
        grid = (side, side)
    if grid[0] * grid[1] != tokens:
        raise ValueError(f"vlmops.{fn}: grid {tuple(grid)} holds {grid[0] * grid[1]} tokens but x has {tokens}")
    return x.unflatten(1, tuple(grid)), True


def pixel_shuffle(x: torch.Tensor, scale: int, grid=None) -> torch.Tensor:
    """Merge each s x s block of tokens into one token of s*s times the channels.

    Args:
        x: ``[B, H, W, C]``, or ``[B, H*W, C]`` with ``grid=(H, W)`` (a square grid is inferred when
            ``grid`` is omitted). float32, float64, float16 or bfloat16; any strides (a view such as
            ``tokens[:, 1:, :]`` that drops a CLS token is read in place, not copied).
        scale: the merge factor s >= 1 (InternVL: 2, Idefics3: 2, SmolVLM: 3 or 4); H and W must be
            divisible by it.
        grid: ``(H, W)`` for a ``[B, H*W, C]`` input.

    Returns:
        ``[B, H/s, W/s, s*s*C]`` for a 4-D input, ``[B, (H/s)*(W/s), s*s*C]`` for a 3-D one,
        contiguous, in x's dtype; channel ``(dy*s + dx)*C + c`` of token ``(i, j)`` is
        ``x[:, s*i + dy, s*j + dx, c]``. Differentiable any number of times (a permutation).

    Errors: ``ValueError`` naming the argument (shape, dtype, a scale below 1 or one that does not
    divide the grid, or whose ``s*s*C`` overflows int64); ``TypeError`` for an argument of the wrong type.
    """
    x4, flat = _as_grid("pixel_shuffle", x, grid)
    out = _pixel_shuffle(x4, scale)
    return out.flatten(1, 2) if flat else out


def pixel_shuffle_layer_norm(
    x: torch.Tensor, scale: int, weight=None, bias=None, eps: float = 1e-5, grid=None
) -> torch.Tensor:
    """``LayerNorm(s*s*C)(pixel_shuffle(x, scale))`` in one pass: the shuffled tensor is never written.

    InternVL's multi-modal projector starts with exactly this (``nn.LayerNorm(C * s * s)`` on the
    shuffled tokens). Statistics are accumulated in float32 (float64 for float64 inputs), as
    ``nn.LayerNorm`` does.

    Args:
        x: as in :func:`pixel_shuffle`.
        scale: the merge factor s.
        weight, bias: optional ``[s*s*C]`` affine parameters in x's dtype and on x's device.
        eps: added to the variance; finite and ``>= 0``.
        grid: ``(H, W)`` for a ``[B, H*W, C]`` input.

    Returns:
        The normalized shuffled tokens, shaped as :func:`pixel_shuffle` returns them, in x's dtype.
        Differentiable in x, weight and bias; not twice.

    Errors: as :func:`pixel_shuffle`, and ``ValueError`` for a weight or bias of the wrong shape,
    dtype or device or an eps that is negative or not finite.
    """
    x4, flat = _as_grid("pixel_shuffle_layer_norm", x, grid)
    out = _pixel_shuffle_layer_norm(x4, scale, weight, bias, eps)[0]
    return out.flatten(1, 2) if flat else out


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shuffled_shape(fn: str, x, scale):
    """[B, H/s, W/s, s*s*C] of x [B, H, W, C], after the shape rules."""
    torch._check(x.dim() == 4, lambda: f"vlmops.{fn}: x must be [B, H, W, C] (4 dims)")
    torch._check(scale >= 1, lambda: f"vlmops.{fn}: scale must be >= 1, got {scale}")
    B, H, W, C = x.shape
    torch._check(H % scale == 0 and W % scale == 0, lambda: f"vlmops.{fn}: grid (H, W) of x is not divisible by scale")
    return B, H // scale, W // scale, C * scale * scale


def _shuffle_fake(x, scale):
    return x.new_empty(_shuffled_shape("pixel_shuffle", x, scale))


def _shuffle_backward_fake(grad_out, scale):
    fn = "pixel_shuffle_backward"
    torch._check(grad_out.dim() == 4, lambda: f"vlmops.{fn}: grad_out must be [B, H/s, W/s, s*s*C] (4 dims)")
    torch._check(scale >= 1, lambda: f"vlmops.{fn}: scale must be >= 1, got {scale}")
    B, Ho, Wo, n = grad_out.shape
    torch._check(n % (scale * scale) == 0, lambda: f"vlmops.{fn}: grad_out channels must be a multiple of scale**2")
    return grad_out.new_empty(B, Ho * scale, Wo * scale, n // (scale * scale))


def _layer_norm_fake(x, scale, weight, bias, eps):
    fn = "pixel_shuffle_layer_norm"
    shape = _shuffled_shape(fn, x, scale)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            torch._check(
                t.dim() == 1 and t.shape[0] == shape[3], lambda name=name: f"vlmops.{fn}: {name} must be [s*s*C]"
            )
    stats = x.new_empty(shape[:3], dtype=_stats_dtype(x.dtype))
    return x.new_empty(shape), stats, torch.empty_like(stats)


def _layer_norm_backward_fake(grad_out, x, mean, rstd, weight, scale):
    fn = "pixel_shuffle_layer_norm_backward"
    shape = _shuffled_shape(fn, x, scale)
    torch._check(grad_out.shape == shape, lambda: f"vlmops.{fn}: grad_out must be the shuffled shape of x")
    for name, stat in (("mean", mean), ("rstd", rstd)):
        torch._check(stat.shape == shape[:3], lambda name=name: f"vlmops.{fn}: {name} must be [B, H/s, W/s]")
    return x.new_empty(x.shape), x.new_empty(shape[3]), x.new_empty(shape[3])


def _scale_context(ctx, inputs, output):
    ctx.scale = inputs[1]


def _shuffle_backward(ctx, grad):
    return torch.ops.vlmops.pixel_shuffle_backward(grad, ctx.scale) if ctx.needs_input_grad[0] else None, None


def _unshuffle_backward(ctx, grad):
    # pixel_shuffle_backward is the inverse permutation: its own gradient is the forward shuffle.
    return torch.ops.vlmops.pixel_shuffle(grad, ctx.scale) if ctx.needs_input_grad[0] else None, None


def _layer_norm_context(ctx, inputs, output):
    x, scale, weight, bias, _eps = inputs
    _out, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.scale = scale
    ctx.mark_non_differentiable(mean, rstd)


def _layer_norm_backward(ctx, grad_out, _grad_mean, _grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_x, grad_weight, grad_bias = torch.ops.vlmops.pixel_shuffle_layer_norm_backward(
        grad_out, x, mean, rstd, weight, ctx.scale
    )
    return grad_x if needs[0] else None, None, grad_weight if needs[2] else None, grad_bias if needs[3] else None, None


_TRITON = "vlmops.triton.pixel_shuffle:"
registry.define(
    registry.OpDef(
        "pixel_shuffle",
        _shuffle_fake,
        _reference_shuffle,
        _shuffle_backward,
        _scale_context,
        triton=_TRITON + "pixel_shuffle",
    )
)
registry.define(
    registry.OpDef(
        "pixel_shuffle_backward",
        _shuffle_backward_fake,
        _reference_shuffle_backward,
        _unshuffle_backward,
        _scale_context,
        triton=_TRITON + "pixel_shuffle_backward",
    )
)
registry.define(
    registry.OpDef(
        "pixel_shuffle_layer_norm",
        _layer_norm_fake,
        _reference_layer_norm,
        _layer_norm_backward,
        _layer_norm_context,
        triton=_TRITON + "pixel_shuffle_layer_norm",
    )
)
registry.define(
    registry.OpDef(
        "pixel_shuffle_layer_norm_backward",
        _layer_norm_backward_fake,
        _reference_layer_norm_backward,
        triton=_TRITON + "pixel_shuffle_layer_norm_backward",
        not_differentiable="double backward of pixel_shuffle_layer_norm is not implemented",
    )
)
_pixel_shuffle = registry.op("pixel_shuffle")
_pixel_shuffle_layer_norm = registry.op("pixel_shuffle_layer_norm")
