"""Gated cross-attention (Flamingo / OpenFlamingo, IDEFICS v1, Llama 3.2 Vision): text rows attend to
image tokens within one key range per row, the result scaled by ``tanh(gate)``, with no dense
``[B, Lq, Lk]`` mask and no K/V expansion for grouped-query attention.

The visibility rules of the models become key ranges with the builders of ``vlmops.models`` (tensor
code on the inputs' device, no host sync): ``flamingo_kv_ranges`` (OpenFlamingo's
``MaskedCrossAttention``) and ``mllama_kv_ranges`` (transformers' Mllama ``cross_attention_mask``).
"""

import torch

from vlmops import _native, reference
from vlmops.ops._checks import check_int, check_same_device, check_tensor

__all__ = ["gated_cross_attention"]

_FN = "gated_cross_attention"


def _check_range_values(kv_start, kv_end, Lk: int) -> None:
    """Values of the key ranges (CPU only: reading them from a GPU would synchronize). Under
    torch.compile the CPU kernel's own check raises instead (a data-dependent branch would break the graph)."""
    if kv_start.device.type != "cpu" or torch.compiler.is_compiling():
        return
    bad = (kv_start < 0) | (kv_end > Lk) | (kv_start > kv_end)
    if bool(bad.any()):
        b, i = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(
            f"vlmops.{_FN}: row {i} of batch {b} has key range [kv_start, kv_end) = [{int(kv_start[b, i])}, "
            f"{int(kv_end[b, i])}), which must satisfy 0 <= kv_start <= kv_end <= Lk = {Lk}"
        )


def check_inputs(q, k, v, kv_start, kv_end, gate) -> None:
    """Every argument check of the op (shared with the Triton launchers); range values on CPU only."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(_FN, name, t, ndim=4)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"vlmops.{_FN}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if v.shape != k.shape:
        raise ValueError(f"vlmops.{_FN}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    B, Lq, H, D = q.shape
    Bk, Lk, Hk, Dk = k.shape
    if Bk != B:
        raise ValueError(f"vlmops.{_FN}: k has batch {Bk} but q has {B}")
    if Dk != D:
        raise ValueError(f"vlmops.{_FN}: k has head dim {Dk} but q has {D}")
    if not (8 <= D <= 256 and D % 8 == 0):
        raise ValueError(f"vlmops.{_FN}: head dim must be a multiple of 8 in [8, 256], got {D}")
    if Hk == 0 or H % Hk:
        raise ValueError(f"vlmops.{_FN}: q heads ({H}) must be a multiple of k/v heads ({Hk})")
    for name, r in (("kv_start", kv_start), ("kv_end", kv_end)):
        check_tensor(_FN, name, r, dtypes=(torch.int32,), ndim=2)
        if tuple(r.shape) != (B, Lq):
            raise ValueError(f"vlmops.{_FN}: {name} must be [B, Lq] = [{B}, {Lq}], got {tuple(r.shape)}")
    if gate is not None:
        check_tensor(_FN, "gate", gate)
        if gate.numel() != 1 or gate.dim() > 1:
            raise ValueError(f"vlmops.{_FN}: gate must be a scalar tensor (shape [] or [1]), got {tuple(gate.shape)}")
    check_same_device(_FN, "q", q, k=k, v=v, kv_start=kv_start, kv_end=kv_end, gate=gate)
    _check_range_values(kv_start, kv_end, Lk)


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
        q: ``[B, Lq, H, D]``; float32, float64, float16 or bfloat16; D a multiple of 8 up to 256.
            Read through its strides (e.g. a view of a projection) as long as D is unit-stride.
        k, v: ``[B, Lk, Hk, D]`` in q's dtype, ``H % Hk == 0`` (grouped-query attention, never
            expanded in memory). ``[B, Hk, Lk, D]`` caches (transformers' layout) pass as
            ``cache.transpose(1, 2)`` without a copy.
        kv_start, kv_end: int32 ``[B, Lq]`` on q's device, ``0 <= kv_start <= kv_end <= Lk``. Build
            them with :func:`flamingo_kv_ranges` or :func:`mllama_kv_ranges`.
        gate: optional scalar tensor ``alpha`` (shape ``[]`` or ``[1]``, any float dtype); the output is
            multiplied by ``tanh(alpha)`` in the kernel's epilogue, and autograd returns its gradient.
        softmax_scale: scale of ``q @ k^T``; default ``D ** -0.5``.
        return_lse: also return the log-sum-exp ``[B, H, Lq]`` of each softmax row (float32, float64
            for float64 inputs; ``-inf`` on empty rows). It carries no gradient.

    Returns:
        ``out [B, Lq, H, D]`` in q's dtype, or ``(out, lse)`` with ``return_lse=True``.
        Differentiable in q, k, v and gate.

    Errors: bad shapes, dtypes, devices, head dims and ``H % Hk != 0`` raise ``ValueError`` /
    ``TypeError``. On CPU the range values are checked eagerly; on CUDA they are not read on the
    host (that would synchronize) and must be valid.
    """
    check_inputs(q, k, v, kv_start, kv_end, gate)
    if softmax_scale is not None:
        if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
            raise TypeError(f"vlmops.{_FN}: softmax_scale must be a float or None, got {type(softmax_scale).__name__}")
        softmax_scale = float(softmax_scale)
    if _native.available():
        out, lse = torch.ops.vlmops.gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale)
    else:
        _native.warn_fallback(_FN)
        out, lse = reference.gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale)
    return (out, lse) if return_lse else out


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register() -> None:
    @torch.library.register_fake("vlmops::gated_cross_attention")
    def _(q, k, v, kv_start, kv_end, gate=None, softmax_scale=None):
        B, Lq, H, D = q.shape
        return q.new_empty(B, Lq, H, D), q.new_empty(B, H, Lq, dtype=_lse_dtype(q.dtype))

    @torch.library.register_fake("vlmops::gated_cross_attention_backward")
    def _(grad_out, q, k, v, out, lse, kv_start, kv_end, gate=None, softmax_scale=None):
        grad_gate = gate.new_empty(gate.shape) if gate is not None else q.new_empty(0, dtype=_lse_dtype(q.dtype))
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), grad_gate

    def setup_context(ctx, inputs, output):
        q, k, v, kv_start, kv_end, gate, softmax_scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, kv_start, kv_end, gate)
        ctx.softmax_scale = softmax_scale
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse, kv_start, kv_end, gate = ctx.saved_tensors
        grad_q, grad_k, grad_v, grad_gate = torch.ops.vlmops.gated_cross_attention_backward(
            grad_out, q, k, v, out, lse, kv_start, kv_end, gate, ctx.softmax_scale
        )
        return grad_q, grad_k, grad_v, None, None, grad_gate if gate is not None else None, None

    torch.library.register_autograd("vlmops::gated_cross_attention", backward, setup_context=setup_context)


if _native.available():
    _register()


