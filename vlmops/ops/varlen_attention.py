"""Block-diagonal packed (varlen) attention: every image, frame or window of a packed token sequence
attends only to itself, with no N x N mask and no Python loop over segments.

The vision towers of Qwen2-VL / Qwen2.5-VL / Qwen3-VL, Pixtral and NaViT-style SigLIP pack all
images of a batch into one sequence; Qwen2.5-VL's window layers do the same with 64-token windows.
The calling convention is flash-attn's ``flash_attn_varlen_func`` (non-causal), so callers can swap
it in.
"""

import torch

from vlmops import _native, reference
from vlmops.ops._checks import check_int, check_same_device, check_tensor

__all__ = ["varlen_attention"]

_FN = "varlen_attention"


def _check_cu_seqlens(name: str, cu: torch.Tensor, tokens: int, max_seqlen) -> None:
    """Values of cu_seqlens (CPU only: reading them from a GPU would synchronize). Under torch.compile
    they are not read here (a data-dependent branch breaks the graph); the CPU kernel checks them."""
    if cu.device.type != "cpu" or torch.compiler.is_compiling():
        return
    if cu[0].item() != 0:
        raise ValueError(f"vlmops.{_FN}: {name}[0] must be 0, got {cu[0].item()}")
    lengths = cu[1:] - cu[:-1]
    if lengths.numel() and lengths.min().item() < 0:
        b = int(torch.nonzero(lengths < 0)[0, 0])
        raise ValueError(
            f"vlmops.{_FN}: {name} must be non-decreasing, but {name}[{b + 1}] = {cu[b + 1].item()} < "
            f"{name}[{b}] = {cu[b].item()}"
        )
    if cu[-1].item() != tokens:
        raise ValueError(f"vlmops.{_FN}: {name}[-1] must equal the token count {tokens}, got {cu[-1].item()}")
    if max_seqlen is not None and lengths.numel() and lengths.max().item() > max_seqlen:
        raise ValueError(
            f"vlmops.{_FN}: max_seqlen for {name} is {max_seqlen} but its longest segment has {lengths.max().item()} tokens"
        )


def _check_max_seqlen(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"vlmops.{_FN}: {name} must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"vlmops.{_FN}: {name} must be >= 0, got {value}")


def check_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> None:
    """Every argument check of the op (shared with the Triton launchers); cu_seqlens values on CPU only."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(_FN, name, t, ndim=3)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"vlmops.{_FN}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if v.shape != k.shape:
        raise ValueError(f"vlmops.{_FN}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    Nq, H, D = q.shape
    Nk, Hk, Dk = k.shape
    if Dk != D:
        raise ValueError(f"vlmops.{_FN}: k has head dim {Dk} but q has {D}")
    if not (32 <= D <= 256 and D % 8 == 0):
        raise ValueError(f"vlmops.{_FN}: head dim must be a multiple of 8 in [32, 256], got {D}")
    if Hk == 0 or H % Hk:
        raise ValueError(f"vlmops.{_FN}: q heads ({H}) must be a multiple of k/v heads ({Hk})")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        check_tensor(_FN, name, cu, dtypes=(torch.int32,), ndim=1)
        if cu.numel() == 0:
            raise ValueError(f"vlmops.{_FN}: {name} must have B + 1 >= 1 entries, got none")
    if cu_seqlens_k.numel() != cu_seqlens_q.numel():
        raise ValueError(
            f"vlmops.{_FN}: cu_seqlens_q has {cu_seqlens_q.numel()} entries but cu_seqlens_k has {cu_seqlens_k.numel()}"
        )
    check_same_device(_FN, "q", q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    _check_max_seqlen("max_seqlen_q", max_seqlen_q)
    _check_max_seqlen("max_seqlen_k", max_seqlen_k)
    _check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, Nq, max_seqlen_q)
    _check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, Nk, max_seqlen_k)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    softmax_scale: float | None = None,
    return_lse: bool = False,
):
    """Non-causal softmax attention within each segment of a packed sequence.

    Segment ``b`` holds queries ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` and keys/values
    ``cu_seqlens_k[b]:cu_seqlens_k[b+1]``. Zero-length segments are legal and produce nothing;
    queries of a segment with no keys get a zero output (log-sum-exp ``-inf``).

    Args:
        q: ``[Nq, H, D]``; float32, float64, float16 or bfloat16. D a multiple of 8 in [32, 256]
            (64, 72, 80, 96, 128 ...). Read through its strides (e.g. a slice of a fused qkv
            projection) as long as D is unit-stride.
        k, v: ``[Nk, Hk, D]`` in q's dtype, ``H % Hk == 0`` (grouped-query / multi-query attention).
        cu_seqlens_q: int32 ``[B + 1]`` segment boundaries of q on q's device: starts at 0,
            non-decreasing, ends at Nq.
        cu_seqlens_k: int32 ``[B + 1]`` boundaries of k/v (ends at Nk); ``None`` means
            self-attention with q's boundaries.
        max_seqlen_q, max_seqlen_k: optional bounds on the segment lengths (flash-attn's arguments).
            Never required: without them nothing synchronizes with the host. When given they must
            bound every segment.
        softmax_scale: scale of ``q @ k^T`` before the softmax; default ``D ** -0.5``.
        return_lse: also return the log-sum-exp ``[H, Nq]`` of each softmax row (float32, float64
            for float64 inputs). It carries no gradient.

    Returns:
        ``out [Nq, H, D]`` in q's dtype, or ``(out, lse)`` with ``return_lse=True``. Differentiable
        in q, k and v.

    Errors: bad shapes, dtypes, devices and head dims raise ``ValueError``/``TypeError``. On CPU the
    cu_seqlens values are checked eagerly too; on CUDA they are not read on the host (that would
    synchronize) and must be valid.
    """
    for name, t in (("q", q), ("k", k)):
        check_tensor(_FN, name, t, ndim=3)
    if cu_seqlens_k is None:
        if k.shape[0] != q.shape[0]:
            raise ValueError(
                f"vlmops.{_FN}: cu_seqlens_k is required when k has {k.shape[0]} tokens and q has {q.shape[0]}"
            )
        cu_seqlens_k = cu_seqlens_q
    check_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    if softmax_scale is not None:
        if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
            raise TypeError(f"vlmops.{_FN}: softmax_scale must be a float or None, got {type(softmax_scale).__name__}")
        softmax_scale = float(softmax_scale)
    if _native.available():
        out, lse = torch.ops.vlmops.varlen_attention(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale
        )
    else:
        _native.warn_fallback(_FN)
        out, lse = reference.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale)
    return (out, lse) if return_lse else out


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register() -> None:
    @torch.library.register_fake("vlmops::varlen_attention")
    def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, softmax_scale=None):
        Nq, H, D = q.shape
        return q.new_empty(Nq, H, D), q.new_empty(H, Nq, dtype=_lse_dtype(q.dtype))

    @torch.library.register_fake("vlmops::varlen_attention_backward")
    def _(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
          softmax_scale=None):
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.max_seqlens = (max_seqlen_q, max_seqlen_k)
        ctx.softmax_scale = softmax_scale
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        grad_q, grad_k, grad_v = torch.ops.vlmops.varlen_attention_backward(
            grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, *ctx.max_seqlens, ctx.softmax_scale
        )
        return grad_q, grad_k, grad_v, None, None, None, None, None

    torch.library.register_autograd("vlmops::varlen_attention", backward, setup_context=setup_context)


if _native.available():
    _register()


