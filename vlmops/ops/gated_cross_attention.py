"""Gated cross-attention (Flamingo / OpenFlamingo, IDEFICS v1, Llama 3.2 Vision): text rows attend to
image tokens within one key range per row, the result scaled by ``tanh(gate)``, with no dense
``[B, Lq, Lk]`` mask and no K/V expansion for grouped-query attention.

The visibility rules of the models become key ranges with the builders of ``vlmops.models`` (tensor
code on the inputs' device, no host sync): ``flamingo_kv_ranges`` (OpenFlamingo's
``MaskedCrossAttention``) and ``mllama_kv_ranges`` (transformers' Mllama ``cross_attention_mask``).

The contract (shapes, dtypes, devices, head dims, range values on CPU) is
csrc/include/vlmops/gated_cross_attention_checks.h.
"""

import torch

from vlmops.ops import registry
from vlmops.ops.varlen_attention import MAX_HEAD_DIM, MAX_TOKENS
from vlmops.reference.gated_cross_attention import gated_cross_attention as _reference
from vlmops.reference.gated_cross_attention import gated_cross_attention_backward as _reference_backward

__all__ = ["gated_cross_attention"]


def gated_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_start: torch.Tensor,
    kv_end: torch.Tensor,
    gate: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    return_lse: bool = False,
):
    """Cross-attention where query row ``i`` of batch entry ``b`` sees keys ``[kv_start[b, i], kv_end[b, i])``,
    the output multiplied by ``tanh(gate)``.

    ``out[b, i, h] = tanh(gate) * softmax(q[b, i, h] @ k[b, s:e, h // (H // Hk)]^T * scale) @ v[b, s:e, ...]``
    with ``s, e = kv_start[b, i], kv_end[b, i]``. A row with an empty range (``s == e``: text before
    any image) gets an all-zero output and zero gradients, never NaN.

    Args:
        q: ``[B, Lq, H, D]``; float32, float64 (CPU), float16 or bfloat16; any head dim D from 1 to
            256. Read through its strides (e.g. a view of a projection) as long as D is unit-stride.
        k, v: ``[B, Lk, Hk, D]`` in q's dtype, ``H % Hk == 0`` (grouped-query attention, never
            expanded in memory). ``[B, Hk, Lk, D]`` caches (transformers' layout) pass as
            ``cache.transpose(1, 2)`` without a copy.
        kv_start, kv_end: int32 ``[B, Lq]`` on q's device, ``0 <= kv_start <= kv_end <= Lk``. Build
            them with :func:`flamingo_kv_ranges` or :func:`mllama_kv_ranges`.
        gate: optional one-element tensor ``alpha`` (shape ``[]`` or ``[1]``; float32, float64,
            float16 or bfloat16); the output is multiplied by ``tanh(alpha)`` in the kernel's
            epilogue, and autograd returns its gradient.
        softmax_scale: scale of ``q @ k^T``; default ``D ** -0.5``.
        return_lse: also return the log-sum-exp ``[B, H, Lq]`` of each softmax row (float32, float64
            for float64 inputs; ``-inf`` on empty rows). It carries no gradient.

    Returns:
        ``out [B, Lq, H, D]`` in q's dtype, or ``(out, lse)`` with ``return_lse=True``.
        Differentiable in q, k, v and gate; not twice.

    Errors: ``ValueError`` naming the argument for a shape, dtype, device or head dim mismatch and
    ``H % Hk != 0``; on CPU also for range values. On CUDA the ranges are not read on the host (that
    would synchronize) and must be valid: the kernels clamp them, so bad ones never read out of
    bounds. ``TypeError`` for an argument of the wrong type.
    """
    out, lse = _gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale)
    return (out, lse) if return_lse else out


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_shapes(op, q, k, v, kv_start, kv_end, gate):
    """The contract's shape rules (gated_cross_attention_checks.h), for the fakes."""
    torch._check(q.dim() == 4 and k.dim() == 4, lambda: f"vlmops.{op}: q must be [B, Lq, H, D] and k [B, Lk, Hk, D]")
    torch._check(v.shape == k.shape, lambda: f"vlmops.{op}: v must have k's shape {tuple(k.shape)}")
    B, Lq, H, D = q.shape
    Hk = k.shape[2]
    torch._check(k.shape[0] == B, lambda: f"vlmops.{op}: k's batch must equal q's")
    torch._check(1 <= D <= MAX_HEAD_DIM, lambda: f"vlmops.{op}: q's head dim must be in [1, {MAX_HEAD_DIM}]")
    torch._check(k.shape[3] == D, lambda: f"vlmops.{op}: k's head dim must equal q's")
    torch._check(Hk >= 1 and H % Hk == 0, lambda: f"vlmops.{op}: k's heads must divide q's heads")
    torch._check(H * D < 2**31, lambda: f"vlmops.{op}: q's heads * head dim must be < 2^31")
    torch._check(
        Lq <= MAX_TOKENS and k.shape[1] <= MAX_TOKENS, lambda: f"vlmops.{op}: q and k take at most {MAX_TOKENS} tokens"
    )
    torch._check(
        kv_start.shape == (B, Lq) and kv_end.shape == (B, Lq),
        lambda: f"vlmops.{op}: kv_start and kv_end must be [B, Lq]",
    )
    if gate is not None:
        torch._check(gate.numel() == 1 and gate.dim() <= 1, lambda: f"vlmops.{op}: gate must be a one-element tensor")


def _fake(q, k, v, kv_start, kv_end, gate=None, softmax_scale=None):
    _check_shapes("gated_cross_attention", q, k, v, kv_start, kv_end, gate)
    B, Lq, H, D = q.shape
    return q.new_empty(B, Lq, H, D), q.new_empty(B, H, Lq, dtype=_lse_dtype(q.dtype))


def _backward_fake(grad_out, q, k, v, out, lse, kv_start, kv_end, gate=None, softmax_scale=None):
    op = "gated_cross_attention_backward"
    _check_shapes(op, q, k, v, kv_start, kv_end, gate)
    torch._check(
        grad_out.shape == q.shape and out.shape == q.shape, lambda: f"vlmops.{op}: grad_out and out must have q's shape"
    )
    torch._check(lse.shape == (q.shape[0], q.shape[2], q.shape[1]), lambda: f"vlmops.{op}: lse must be [B, H, Lq]")
    grad_gate = gate.new_empty(gate.shape) if gate is not None else q.new_empty(0, dtype=_lse_dtype(q.dtype))
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), grad_gate


def _setup_context(ctx, inputs, output):
    q, k, v, kv_start, kv_end, gate, softmax_scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kv_start, kv_end, gate)
    ctx.softmax_scale = softmax_scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, kv_start, kv_end, gate = ctx.saved_tensors
    grad_q, grad_k, grad_v, grad_gate = torch.ops.vlmops.gated_cross_attention_backward(
        grad_out, q, k, v, out, lse, kv_start, kv_end, gate, ctx.softmax_scale
    )
    needed = ctx.needs_input_grad
    return (
        grad_q if needed[0] else None,
        grad_k if needed[1] else None,
        grad_v if needed[2] else None,
        None,
        None,
        grad_gate if gate is not None and needed[5] else None,
        None,
    )


registry.define(
    registry.OpDef(
        "gated_cross_attention",
        _fake,
        _reference,
        _backward,
        _setup_context,
        triton="vlmops.triton.gated_cross_attention:gated_cross_attention",
    )
)
registry.define(
    registry.OpDef(
        "gated_cross_attention_backward",
        _backward_fake,
        _reference_backward,
        triton="vlmops.triton.gated_cross_attention:gated_cross_attention_backward",
        not_differentiable="double backward of gated_cross_attention is not implemented",
    )
)
_gated_cross_attention = registry.op("gated_cross_attention")
