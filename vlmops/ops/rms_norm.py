"""RMSNorm over the last dim, the convention of Qwen2.5-VL's vision tower and of Qwen2/Llama/T5
(transformers' `Qwen2_5_VLRMSNorm`, `Qwen2RMSNorm`, `LlamaRMSNorm`, `T5LayerNorm`): statistics in
float32, the normalized value rounded to x's dtype, then times the weight in the promoted dtype. One
pass over x forward (no float32 copy of the activations), two passes over x and grad_out backward.

The contract (shapes, dtypes, devices, eps) is csrc/include/vlmops/rms_norm_checks.h.
"""

import torch

from vlmops.ops import registry
from vlmops.reference.rms_norm import rms_norm as _reference_rms_norm
from vlmops.reference.rms_norm import rms_norm_backward as _reference_rms_norm_backward

__all__ = ["rms_norm"]


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _out_dtype(x: torch.Tensor, weight) -> torch.dtype:
    return x.dtype if weight is None else torch.promote_types(x.dtype, weight.dtype)


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
        atomics, deterministic); not twice.

    Errors: ``ValueError`` naming the argument for a shape, dtype or device mismatch and for an eps
    that is negative or not finite; ``TypeError`` for an argument of the wrong type.
    """
    return _rms_norm(x, weight, eps)[0]


def _fake(x, weight, eps):
    torch._check(x.dim() >= 1, lambda: "vlmops.rms_norm: x must be [..., C] with at least 1 dim")
    if weight is not None:
        torch._check(
            weight.dim() == 1 and weight.shape[0] == x.shape[-1],
            lambda: f"vlmops.rms_norm: weight must be [C] = [{x.shape[-1]}]",
        )
    out = x.new_empty(x.shape, dtype=_out_dtype(x, weight))
    return out, x.new_empty(x.shape[:-1], dtype=_stats_dtype(x.dtype))


def _backward_fake(grad_out, x, weight, rstd):
    torch._check(grad_out.shape == x.shape, lambda: "vlmops.rms_norm_backward: grad_out must have x's shape")
    torch._check(rstd.shape == x.shape[:-1], lambda: "vlmops.rms_norm_backward: rstd must be x.shape[:-1]")
    grad_weight = x.new_empty(0) if weight is None else weight.new_empty(weight.shape)
    return x.new_empty(x.shape), grad_weight


def _setup_context(ctx, inputs, output):
    x, weight, _eps = inputs
    _out, rstd = output
    ctx.save_for_backward(x, weight, rstd)
    ctx.mark_non_differentiable(rstd)


def _backward(ctx, grad_out, _grad_rstd):
    x, weight, rstd = ctx.saved_tensors
    grad_x, grad_weight = torch.ops.vlmops.rms_norm_backward(grad_out, x, weight, rstd)
    return (
        grad_x if ctx.needs_input_grad[0] else None,
        grad_weight if weight is not None and ctx.needs_input_grad[1] else None,
        None,
    )


registry.define(
    registry.OpDef(
        "rms_norm",
        _fake,
        _reference_rms_norm,
        _backward,
        _setup_context,
        triton="vlmops.triton.rms_norm:rms_norm",
    )
)
registry.define(
    registry.OpDef(
        "rms_norm_backward",
        _backward_fake,
        _reference_rms_norm_backward,
        triton="vlmops.triton.rms_norm:rms_norm_backward",
        not_differentiable="double backward of rms_norm is not implemented",
    )
)
_rms_norm = registry.op("rms_norm")
