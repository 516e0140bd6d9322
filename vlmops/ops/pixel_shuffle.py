"""Pixel shuffle (token merging) and fused pixel shuffle + LayerNorm.

The token merging of InternVL (`InternVLModel.pixel_shuffle`, ps_version v2, downsample_ratio 0.5
means scale 2), Idefics3 (scale 2) and SmolVLM (scale 3 or 4): a grid of H x W tokens of C channels
becomes (H/s) x (W/s) tokens of s*s*C channels, output token (i, j) concatenating the inputs
(s*i + dy, s*j + dx) over (dy, dx) in row-major order (channel (dy*s + dx)*C + c).
"""

import math

import torch

from vlmops import _native, reference
from vlmops.ops import KERNEL_OWNERS, cuda_backend
from vlmops.ops._checks import check_int, check_same_device, check_tensor

__all__ = ["pixel_shuffle", "pixel_shuffle_layer_norm"]


def _as_grid(fn: str, x, scale, grid):
    """The [B, H, W, C] view of x (never a copy) and whether x came as [B, H*W, C]."""
    check_tensor(fn, "x", x, ndim=(3, 4))
    check_int(fn, "scale", scale, minimum=1)
    if x.dim() == 4:
        if grid is not None and tuple(grid) != tuple(x.shape[1:3]):
            raise ValueError(f"vlmops.{fn}: grid {tuple(grid)} does not match x of shape {tuple(x.shape)} ([B, H, W, C])")
        x4 = x
    else:
        tokens = x.shape[1]
        if grid is None:
            side = math.isqrt(tokens)
            if side * side != tokens:
                raise ValueError(
                    f"vlmops.{fn}: x has {tokens} tokens, which is not a square grid; pass grid=(H, W) with H*W == {tokens}"
                )
            grid = (side, side)
        if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in grid):
            raise ValueError(f"vlmops.{fn}: grid must be (H, W) with non-negative ints, got {grid!r}")
        if grid[0] * grid[1] != tokens:
            raise ValueError(f"vlmops.{fn}: grid {tuple(grid)} holds {grid[0] * grid[1]} tokens but x has {tokens}")
        x4 = x.unflatten(1, tuple(grid))
    H, W = x4.shape[1], x4.shape[2]
    if H % scale or W % scale:
        raise ValueError(f"vlmops.{fn}: grid (H, W) = ({H}, {W}) is not divisible by scale {scale}")
    return x4, x.dim() == 3


def _op(name: str, x: torch.Tensor):
    """The op that runs on x's device: the public op, or its Triton variant on CUDA when chosen."""
    if x.device.type == "cuda" and cuda_backend() == "triton":
        return getattr(torch.ops.vlmops, KERNEL_OWNERS[name]["triton"])
    return getattr(torch.ops.vlmops, name)


def pixel_shuffle(x: torch.Tensor, scale: int, grid=None) -> torch.Tensor:
    """Merge each s x s block of tokens into one token of s*s times the channels.

    Args:
        x: ``[B, H, W, C]``, or ``[B, H*W, C]`` with ``grid=(H, W)`` (a square grid is inferred when
            ``grid`` is omitted). float32, float64, float16 or bfloat16; any strides (a view such as
            ``tokens[:, 1:, :]`` that drops a CLS token is read in place, not copied).
        scale: the merge factor s (InternVL: 2, Idefics3: 2, SmolVLM: 3 or 4); H and W must be
            divisible by it.
        grid: ``(H, W)`` for a ``[B, H*W, C]`` input.

    Returns:
        ``[B, H/s, W/s, s*s*C]`` for a 4-D input, ``[B, (H/s)*(W/s), s*s*C]`` for a 3-D one,
        contiguous, in x's dtype; channel ``(dy*s + dx)*C + c`` of token ``(i, j)`` is
        ``x[:, s*i + dy, s*j + dx, c]``.
    """
    x4, flat = _as_grid("pixel_shuffle", x, scale, grid)
    if _native.available():
        out = _op("pixel_shuffle", x4)(x4, scale)
    else:
        _native.warn_fallback("pixel_shuffle")
        out = reference.pixel_shuffle(x4, scale)
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
        eps: added to the variance, ``>= 0``.
        grid: ``(H, W)`` for a ``[B, H*W, C]`` input.

    Returns:
        The normalized shuffled tokens, shaped as :func:`pixel_shuffle` returns them, in x's dtype.
    """
    fn = "pixel_shuffle_layer_norm"
    x4, flat = _as_grid(fn, x, scale, grid)
    features = x4.shape[3] * scale * scale
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        check_tensor(fn, name, t, ndim=1)
        if t.shape[0] != features:
            raise ValueError(f"vlmops.{fn}: {name} must be [{features}] (s*s*C), got shape {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"vlmops.{fn}: {name} dtype {t.dtype} must match x dtype {x.dtype}")
    check_same_device(fn, "x", x, weight=weight, bias=bias)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"vlmops.{fn}: eps must be a float >= 0, got {eps!r}")
    if _native.available():
        out = _op(fn, x4)(x4, scale, weight, bias, float(eps))[0]
    else:
        _native.warn_fallback(fn)
        out = reference.pixel_shuffle_layer_norm(x4, scale, weight, bias, eps)
    return out.flatten(1, 2) if flat else out


def _register(shuffle: str, shuffle_bwd: str, ln: str, ln_bwd: str) -> None:
    """Fake implementations and autograd of one kernel family (the public ops or their Triton twins)."""
    ops = torch.ops.vlmops

    @torch.library.register_fake(f"vlmops::{shuffle}")
    def _(x, scale):
        B, H, W, C = x.shape
        return x.new_empty(B, H // scale, W // scale, C * scale * scale)

    @torch.library.register_fake(f"vlmops::{shuffle_bwd}")
    def _(grad_out, scale):
        B, Ho, Wo, n = grad_out.shape
        return grad_out.new_empty(B, Ho * scale, Wo * scale, n // (scale * scale))

    @torch.library.register_fake(f"vlmops::{ln}")
    def _(x, scale, weight, bias, eps):
        B, H, W, C = x.shape
        stats = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = x.new_empty(B, H // scale, W // scale, C * scale * scale)
        return out, x.new_empty(B, H // scale, W // scale, dtype=stats), x.new_empty(B, H // scale, W // scale, dtype=stats)

    @torch.library.register_fake(f"vlmops::{ln_bwd}")
    def _(grad_out, x, mean, rstd, weight, scale):
        n = grad_out.shape[3]
        return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(n), x.new_empty(n)

    def shuffle_setup(ctx, inputs, output):
        ctx.scale = inputs[1]

    torch.library.register_autograd(
        f"vlmops::{shuffle}",
        lambda ctx, grad: (getattr(ops, shuffle_bwd)(grad, ctx.scale), None),
        setup_context=shuffle_setup,
    )
    # The backward is the inverse permutation, so its own gradient is the forward op.
    torch.library.register_autograd(
        f"vlmops::{shuffle_bwd}",
        lambda ctx, grad: (getattr(ops, shuffle)(grad, ctx.scale), None),
        setup_context=shuffle_setup,
    )

    def ln_setup(ctx, inputs, output):
        x, scale, weight, bias, _eps = inputs
        _out, mean, rstd = output
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.scale = scale
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, rstd)

    def ln_backward(ctx, grad_out, _grad_mean, _grad_rstd):
        x, weight, mean, rstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = getattr(ops, ln_bwd)(grad_out, x, mean, rstd, weight, ctx.scale)
        return (
            grad_x,
            None,
            grad_weight if weight is not None else None,
            grad_bias if ctx.has_bias else None,
            None,
        )

    torch.library.register_autograd(f"vlmops::{ln}", ln_backward, setup_context=ln_setup)


if _native.available():
    _register("pixel_shuffle", "pixel_shuffle_backward", "pixel_shuffle_layer_norm", "pixel_shuffle_layer_norm_backward")
    _register(
        *(KERNEL_OWNERS[name]["triton"] for name in
          ("pixel_shuffle", "pixel_shuffle_backward", "pixel_shuffle_layer_norm", "pixel_shuffle_layer_norm_backward"))
    )
