"""RMSNorm over the last dim, the convention of Qwen2.5-VL's vision tower and of Qwen2/Llama/T5
(transformers' `Qwen2_5_VLRMSNorm`, `Qwen2RMSNorm`, `LlamaRMSNorm`, `T5LayerNorm`): statistics in
float32, the normalized value rounded to x's dtype, then times the weight in the promoted dtype. One
pass over x forward (no float32 copy of the activations), two passes over x and grad_out backward.
"""

import math

import torch

from vlmops import _native
from vlmops.ops._checks import check_same_device, check_tensor
from vlmops.reference.rms_norm import rms_norm as _reference_rms_norm

__all__ = ["rms_norm"]

_FN = "rms_norm"


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _out_dtype(x: torch.Tensor, weight) -> torch.dtype:
    return x.dtype if weight is None else torch.promote_types(x.dtype, weight.dtype)


def check_inputs(x, weight, eps) -> None:
    """Every argument check of the op (shared with the Triton launchers)."""
    check_tensor(_FN, "x", x)
    if x.dim() < 1:
        raise ValueError(f"vlmops.{_FN}: x must be [..., C] with at least 1 dim, got a 0-dim tensor")
    if weight is not None:
        check_tensor(_FN, "weight", weight, ndim=1)
        if weight.shape[0] != x.shape[-1]:
            raise ValueError(f"vlmops.{_FN}: weight must be [C] = [{x.shape[-1]}], got shape {tuple(weight.shape)}")
        check_same_device(_FN, "x", x, weight=weight)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"vlmops.{_FN}: eps must be a float, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"vlmops.{_FN}: eps must be finite and >= 0, got {eps}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm of the last dim: ``weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)``.

    Bit-for-bit the rounding of transformers' ``Qwen2_5_VLRMSNorm`` (mean and rsqrt in float32, the
    normalized value rounded to x's dtype, the product with the weight computed in float32 and
    rounded once); results equal it exactly up to the summation order of the mean.

    Args:
        x: ``[..., C]``, float32, float64, float16 or bfloat16, any strides: rows are read in place
            (e.g. ``buf[:, :C]`` of a padded buffer, a transposed batch) with no copy. float64 x
            computes its statistics in float64.
        weight: ``[C]`` on x's device, any float dtype, or None (no scale).
        eps: added to the mean square; finite and >= 0. Qwen2.5-VL uses 1e-6.

    Returns:
        ``out [..., C]``, contiguous, in ``torch.promote_types(x.dtype, weight.dtype)`` (x's dtype
        without a weight): all-bfloat16 gives bfloat16, bfloat16 x with a float32 weight float32.
        Differentiable in x and weight (grad_weight is reduced per block of rows, then summed: no
        atomics, deterministic).
    """
    check_inputs(x, weight, eps)
    if not _native.available():
        _native.warn_fallback(_FN)
        return _reference_rms_norm(x, weight, float(eps))[0]
    return torch.ops.vlmops.rms_norm(x, weight, float(eps))[0]


def _register() -> None:
    @torch.library.register_fake("vlmops::rms_norm")
    def _(x, weight, eps):
        out = x.new_empty(x.shape, dtype=_out_dtype(x, weight))
        return out, x.new_empty(x.shape[:-1], dtype=_stats_dtype(x.dtype))

    @torch.library.register_fake("vlmops::rms_norm_backward")
    def _(grad_out, x, weight, rstd):
        grad_weight = x.new_empty(0) if weight is None else weight.new_empty(weight.shape)
        return x.new_empty(x.shape), grad_weight

    def setup_context(ctx, inputs, output):
        x, weight, _eps = inputs
        _out, rstd = output
        ctx.save_for_backward(x, weight, rstd)
        ctx.mark_non_differentiable(rstd)

    def backward(ctx, grad_out, _grad_rstd):
        x, weight, rstd = ctx.saved_tensors
        grad_x, grad_weight = torch.ops.vlmops.rms_norm_backward(grad_out, x, weight, rstd)
        return grad_x, (grad_weight if weight is not None else None), None

    torch.library.register_autograd("vlmops::rms_norm", backward, setup_context=setup_context)


if _native.available():
    _register()
