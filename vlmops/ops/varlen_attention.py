"""Block-diagonal packed (varlen) attention: every image, frame or window of a packed token sequence
attends only to itself, with no N x N mask and no Python loop over segments.

The vision towers of Qwen2-VL / Qwen2.5-VL / Qwen3-VL, Pixtral and NaViT-style SigLIP pack all
images of a batch into one sequence; Qwen2.5-VL's window layers do the same with 64-token windows.
The calling convention is flash-attn's ``flash_attn_varlen_func`` (non-causal), so callers can swap
it in.

The contract (shapes, dtypes, devices, head dims, cu_seqlens values on CPU) is
csrc/include/vlmops/varlen_attention_checks.h.
"""

import dataclasses
import functools
import inspect

import torch

from vlmops.ops import registry
from vlmops.reference.varlen_attention import varlen_attention as _reference
from vlmops.reference.varlen_attention import varlen_attention_backward as _reference_backward

__all__ = [
    "BACKENDS",
    "MAX_HEAD_DIM",
    "TORCH_ROUTES",
    "TorchRoute",
    "torch_route",
    "varlen_attention",
    "varlen_attention_backend",
]

# Head dims the kernels take, on every device: 1 to MAX_HEAD_DIM; tokens of q and of k: at most MAX_TOKENS.
MAX_HEAD_DIM = 256
MAX_TOKENS = 2**31 - 2**16

BACKENDS = ("auto", "vlmops", "torch")


@dataclasses.dataclass(frozen=True)
class TorchRoute:
    """A shape class that ``backend="auto"`` sends to ``torch.nn.attention.varlen.varlen_attn``,
    because a committed GPU measurement (``source``) shows vlmops' kernel slower there."""

    capability: int  # CUDA compute capability major (9: H100/H200)
    dtypes: tuple[torch.dtype, ...]
    head_dims: tuple[int, ...]
    min_seqlen_q: int  # the caller's max_seqlen_q bound must be at least this
    source: str


# benchmarks/results/cuda-h200-2026-11-26 (varlen.json): vlmops' forward 0.37x and backward 0.32x
# SDPA's flash backend looped per image (the FA2 kernel varlen_attn runs without cuDNN) on 4 images
# of 1024-4096 tokens at head dim 80, 0.66x on 8 images of 1024, 0.73x at head dim 128 on tiles of
# 1025 tokens; faster on 256-token frames (4.9x) and 64-token windows (22x), so those stay ours.
TORCH_ROUTES = (
    TorchRoute(
        capability=9,
        dtypes=(torch.bfloat16,),
        head_dims=(80, 128),
        min_seqlen_q=1024,
        source="benchmarks/results/cuda-h200-2026-11-26",
    ),
)


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
    backend: str = "auto",
):
    """Non-causal softmax attention within each segment of a packed sequence.

    Segment ``b`` holds queries ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` and keys/values
    ``cu_seqlens_k[b]:cu_seqlens_k[b+1]``. Zero-length segments are legal and produce nothing;
    queries of a segment with no keys get a zero output (log-sum-exp ``-inf``).

    Args:
        q: ``[Nq, H, D]``; float32, float64 (CPU), float16 or bfloat16; any head dim D from 1 to 256.
            Read through its strides (e.g. a slice of a fused qkv projection) without a copy as long
            as D is unit-stride and tokens do not overlap.
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
        backend: ``"vlmops"`` runs vlmops' kernels (the ``torch.ops.vlmops.varlen_attention`` op).
            ``"torch"`` runs ``torch.nn.attention.varlen.varlen_attn`` (CUDA, float16/bfloat16, head
            dim a multiple of 8 up to 256, ``max_seqlen_q``/``max_seqlen_k`` given by the caller as
            bounds: torch needs them as Python ints and vlmops never reads them from the device).
            ``"auto"`` (default) runs vlmops' kernels except for the shape classes of
            :data:`TORCH_ROUTES`, where a committed GPU measurement shows torch's faster; a class is
            recognised from the caller's ``max_seqlen_q`` bound, so without it ``"auto"`` is
            ``"vlmops"``. :func:`varlen_attention_backend` says which one runs.

    Returns:
        ``out [Nq, H, D]`` in q's dtype, or ``(out, lse)`` with ``return_lse=True``. Differentiable
        in q, k and v; not twice.

    Errors: ``ValueError`` naming the argument for a shape, dtype, device or head dim mismatch; on
    CPU also for cu_seqlens values (start, order, end, max_seqlen bounds). On CUDA the cu_seqlens
    values are not read on the host (that would synchronize) and must be valid: the kernels clamp
    them, so bad ones never read out of bounds. ``TypeError`` for an argument of the wrong type.
    """
    if cu_seqlens_k is None:
        if (
            isinstance(q, torch.Tensor)
            and isinstance(k, torch.Tensor)
            and q.dim()
            and k.dim()
            and (k.shape[0] != q.shape[0])
        ):
            raise ValueError(
                f"vlmops.varlen_attention: cu_seqlens_k is required when k has {k.shape[0]} tokens and q has "
                f"{q.shape[0]}"
            )
        cu_seqlens_k = cu_seqlens_q
        if max_seqlen_k is None:
            max_seqlen_k = max_seqlen_q
    if varlen_attention_backend(q, k, max_seqlen_q, max_seqlen_k, backend) == "torch":
        out, lse = _torch_varlen_attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale)
    else:
        out, lse = _varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale)
    return (out, lse) if return_lse else out


def varlen_attention_backend(
    q: torch.Tensor, k: torch.Tensor, max_seqlen_q: int | None, max_seqlen_k: int | None, backend: str = "auto"
) -> str:
    """``"vlmops"`` or ``"torch"``: the kernels :func:`varlen_attention` runs for these arguments
    (``max_seqlen_k``: k's bound, also for self-attention). Reads no tensor values. ``ValueError``
    for ``backend="torch"`` with arguments torch's ``varlen_attn`` cannot take."""
    if backend not in BACKENDS:
        raise ValueError(f"vlmops.varlen_attention: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "vlmops":
        return "vlmops"
    refusal = _torch_refusal(q, k, max_seqlen_q, max_seqlen_k)
    if backend == "torch":
        if refusal:
            raise ValueError(f"vlmops.varlen_attention: backend='torch' {refusal}")
        return "torch"
    if refusal:
        return "vlmops"
    return "torch" if torch_route(_capability(q.device.index), q.dtype, q.shape[-1], max_seqlen_q) else "vlmops"


def torch_route(capability: int, dtype: torch.dtype, head_dim: int, max_seqlen_q: int) -> TorchRoute | None:
    """The entry of :data:`TORCH_ROUTES` that sends this shape class to torch under ``"auto"``, if any
    (``capability``: the CUDA compute capability's major)."""
    for route in TORCH_ROUTES:
        if (
            route.capability == capability
            and dtype in route.dtypes
            and head_dim in route.head_dims
            and max_seqlen_q >= route.min_seqlen_q
        ):
            return route
    return None


@functools.cache
def _capability(device_index: int | None) -> int:
    return torch.cuda.get_device_capability(device_index)[0]


# (varlen_attn, AuxRequest, takes enable_gqa), or None before torch 2.10; () until first needed:
# torch.nn.attention.varlen imports torch._dynamo, which would double the time of `import vlmops`.
_TORCH_VARLEN_ATTN = ()


def _torch_varlen_attn_api():
    """torch's ``varlen_attn``, ``AuxRequest`` and whether it takes ``enable_gqa``; None before torch
    2.10. Imported on the first call that may run it."""
    global _TORCH_VARLEN_ATTN
    if _TORCH_VARLEN_ATTN == ():
        try:
            from torch.nn.attention.varlen import AuxRequest, varlen_attn
        except ImportError:
            _TORCH_VARLEN_ATTN = None
        else:
            _TORCH_VARLEN_ATTN = varlen_attn, AuxRequest, "enable_gqa" in inspect.signature(varlen_attn).parameters
    return _TORCH_VARLEN_ATTN


def _torch_refusal(q, k, max_seqlen_q, max_seqlen_k) -> str | None:
    """Why torch's ``varlen_attn`` cannot take these arguments, or None. Tensors off CUDA are refused
    before torch's module is imported."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and q.dim() == 3 and k.dim() == 3):
        return "needs q [Nq, H, D] and k [Nk, Hk, D]"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"takes float16 or bfloat16 only; q is {q.dtype}"
    D = q.shape[-1]
    if D % 8 or D > 256:
        return f"takes head dims that are multiples of 8 up to 256; q's head dim is {D}"
    for name, bound in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if not isinstance(bound, int) or isinstance(bound, bool):
            return f"needs {name}, the caller's bound on the segment lengths, as an int; got {bound!r}"
    if q.device.type != "cuda":
        return f"runs on CUDA only; q is on {q.device}"
    api = _torch_varlen_attn_api()
    if api is None:
        return f"needs torch.nn.attention.varlen.varlen_attn (torch 2.10 or newer; this is {torch.__version__})"
    if q.shape[1] != k.shape[1] and not api[2]:
        heads = f"{q.shape[1]} q heads, {k.shape[1]} k heads"
        return f"cannot take grouped-query attention ({heads}) on torch {torch.__version__}"
    return None


def _torch_varlen_attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale):
    varlen_attn, AuxRequest, takes_gqa = _torch_varlen_attn_api()
    if not isinstance(max_seqlen_k, int):
        raise ValueError(
            "vlmops.varlen_attention: backend='torch' needs max_seqlen_k, the bound on k's segment lengths"
        )
    gqa = {"enable_gqa": True} if takes_gqa and q.shape[1] != k.shape[1] else {}
    out, lse = varlen_attn(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        return_aux=AuxRequest(lse=True),
        scale=softmax_scale,
        **gqa,
    )
    return out, lse.detach()


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_shapes(op, q, k, v, cu_seqlens_q, cu_seqlens_k):
    """The contract's shape rules (varlen_attention_checks.h), for the fakes."""
    torch._check(q.dim() == 3 and k.dim() == 3, lambda: f"vlmops.{op}: q must be [Nq, H, D] and k [Nk, Hk, D]")
    torch._check(v.shape == k.shape, lambda: f"vlmops.{op}: v must have k's shape {tuple(k.shape)}")
    D, H, Hk = q.shape[2], q.shape[1], k.shape[1]
    torch._check(1 <= D <= MAX_HEAD_DIM, lambda: f"vlmops.{op}: q's head dim must be in [1, {MAX_HEAD_DIM}]")
    torch._check(k.shape[2] == D, lambda: f"vlmops.{op}: k's head dim must equal q's")
    torch._check(Hk >= 1 and H % Hk == 0, lambda: f"vlmops.{op}: k's heads must divide q's heads")
    torch._check(H * D < 2**31, lambda: f"vlmops.{op}: q's heads * head dim must be < 2^31")
    # One check per size: `and` would ask for the truth of a token count the graph may not know
    # (packed lengths computed on the device), where torch._check records it as an assumption.
    for name, t in (("q", q), ("k", k)):
        torch._check(
            t.shape[0] <= MAX_TOKENS, lambda name=name: f"vlmops.{op}: {name} takes at most {MAX_TOKENS} tokens"
        )
    torch._check(
        cu_seqlens_q.dim() == 1 and cu_seqlens_q.shape[0] >= 1, lambda: f"vlmops.{op}: cu_seqlens_q must be [B + 1]"
    )
    torch._check(
        cu_seqlens_k.shape == cu_seqlens_q.shape, lambda: f"vlmops.{op}: cu_seqlens_k must have cu_seqlens_q's shape"
    )


def _fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, softmax_scale=None):
    _check_shapes("varlen_attention", q, k, v, cu_seqlens_q, cu_seqlens_k)
    Nq, H, D = q.shape
    return q.new_empty(Nq, H, D), q.new_empty(H, Nq, dtype=_lse_dtype(q.dtype))


def _backward_fake(
    grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, softmax_scale=None
):
    op = "varlen_attention_backward"
    _check_shapes(op, q, k, v, cu_seqlens_q, cu_seqlens_k)
    torch._check(
        grad_out.shape == q.shape and out.shape == q.shape, lambda: f"vlmops.{op}: grad_out and out must have q's shape"
    )
    torch._check(lse.shape == (q.shape[1], q.shape[0]), lambda: f"vlmops.{op}: lse must be [H, Nq]")
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
    ctx.max_seqlens = (max_seqlen_q, max_seqlen_k)
    ctx.softmax_scale = softmax_scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    grads = torch.ops.vlmops.varlen_attention_backward(
        grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, *ctx.max_seqlens, ctx.softmax_scale
    )
    return (*(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad)), None, None, None, None, None)


registry.define(
    registry.OpDef(
        "varlen_attention",
        _fake,
        _reference,
        _backward,
        _setup_context,
        triton="vlmops.triton.varlen_attention:varlen_attention",
    )
)
registry.define(
    registry.OpDef(
        "varlen_attention_backward",
        _backward_fake,
        _reference_backward,
        triton="vlmops.triton.varlen_attention:varlen_attention_backward",
        not_differentiable="double backward of varlen_attention is not implemented",
    )
)
_varlen_attention = registry.op("varlen_attention")
