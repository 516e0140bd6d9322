"""Multi-axis rotary position embedding: 2D vision RoPE (Qwen2/2.5/3-VL, Pixtral), 3D M-RoPE
(Qwen2/2.5-VL sections, Qwen3-VL interleaved) and 1D RoPE, as one op.

Every variant is a pair of per-pair tables of length P = rotary_dim / 2: `axis[i]` (which column of
the integer positions pair i reads) and `inv_freq[i]`. Pair i of each head, the half-split pair
(x[i], x[i + P]) of transformers' `rotate_half`, turns by `positions[token, axis[i]] * inv_freq[i]`.
The kernels compute cos/sin in registers from that product and rotate q and k in the same pass; no
cos/sin table is ever written. The tables and positions of each model family are built in
``vlmops.models`` (``qwen_vl``, ``pixtral``), as device tensor code.
"""

from typing import NamedTuple

import torch

from vlmops import _native, reference
from vlmops.ops import KERNEL_OWNERS, cuda_backend
from vlmops.ops._checks import check_int, check_same_device, check_tensor

__all__ = ["RopeTables", "apply_rope", "rope_1d_tables", "rope_inv_freq"]

_LAYOUTS = ("nhd", "bshd", "bhsd")
_INT_DTYPES = (torch.int64, torch.int32)


class RopeTables(NamedTuple):
    """The per-pair tables of one RoPE convention: `apply_rope(q, k, positions, *tables)`."""

    axis: torch.Tensor  # [P] int64, which positions column each pair reads
    inv_freq: torch.Tensor  # [P] float32
    fp32_math: bool  # float32 math (Qwen vision) or activation-dtype cos/sin (Pixtral, text M-RoPE)


def rope_inv_freq(dim: int, theta: float, device=None) -> torch.Tensor:
    """``1 / theta**(arange(0, dim, 2) / dim)`` in float32, the expression transformers' default and
    axial rope initializers evaluate (so the values are bit-identical). [dim // 2]."""
    check_int("rope_inv_freq", "dim", dim, minimum=2)
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))


def check_inv_freq(fn: str, inv_freq) -> None:
    check_tensor(fn, "inv_freq", inv_freq, dtypes=(torch.float32,), ndim=1)
    if inv_freq.shape[0] < 1:
        raise ValueError(f"vlmops.{fn}: inv_freq must not be empty")


def rope_1d_tables(inv_freq: torch.Tensor, fp32_math: bool = False) -> RopeTables:
    """Plain 1D RoPE (Llama's `apply_rotary_pos_emb`): every pair reads axis 0. inv_freq [rotary_dim/2]."""
    check_inv_freq("rope_1d_tables", inv_freq)
    axis = torch.zeros(inv_freq.shape[0], dtype=torch.long, device=inv_freq.device)
    return RopeTables(axis, inv_freq, fp32_math)


def _as_bshd(fn: str, name: str, x, layout: str):
    if layout == "nhd":
        check_tensor(fn, name, x, ndim=3)
        return x.unsqueeze(0)
    check_tensor(fn, name, x, ndim=4)
    return x if layout == "bshd" else x.transpose(1, 2)


def _op(name: str, x: torch.Tensor):
    """The op that runs on x's device: the public op, or its Triton variant on CUDA when chosen."""
    if x.device.type == "cuda" and cuda_backend() == "triton":
        return getattr(torch.ops.vlmops, KERNEL_OWNERS[name]["triton"])
    return getattr(torch.ops.vlmops, name)


def apply_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    axis: torch.Tensor,
    inv_freq: torch.Tensor,
    fp32_math: bool,
    *,
    layout: str = "nhd",
    inplace: bool = False,
):
    """Rotate q and k by multi-axis RoPE in one pass; cos/sin are computed from positions * inv_freq
    inside the kernel, never stored.

    Args:
        q: ``[N, H, D]`` (layout "nhd", packed vision tokens), ``[B, S, H, D]`` ("bshd") or
            ``[B, H, S, D]`` ("bhsd"); float32, float64, float16 or bfloat16; any strides (read in place).
        k: like q with H_kv heads (GQA: H_kv may differ from H), same dtype, device and head_dim D.
        positions: integer positions, int64 or int32: ``[N, A]`` for "nhd", ``[B, S, A]`` otherwise
            (any strides: transformers' ``position_ids [3, B, S]`` is ``position_ids.permute(1, 2, 0)``).
        axis: ``[P]`` int64, the positions column of each rotary pair, values in ``[0, A)``.
        inv_freq: ``[P]`` float32. ``rotary_dim = 2*P <= D``; dims ``[2P, D)`` pass through unchanged.
        fp32_math: True rotates in float32 and rounds once (Qwen vision); False rounds cos/sin and the
            products to the activation dtype as eager bf16/fp16 PyTorch does (Pixtral, text M-RoPE).
            Identical for float32; float64 always computes in float64.
        layout: "nhd", "bshd" or "bhsd" (how q and k are laid out).
        inplace: write the result into q and k (inference only: q and k must not require grad).

    Returns:
        ``(q_out, k_out)`` shaped like q and k (q and k themselves when inplace).
    """
    fn = "apply_rope"
    if layout not in _LAYOUTS:
        raise ValueError(f"vlmops.{fn}: layout must be one of {_LAYOUTS}, got {layout!r}")
    q4, k4 = _as_bshd(fn, "q", q, layout), _as_bshd(fn, "k", k, layout)
    check_tensor(fn, "positions", positions, dtypes=_INT_DTYPES, ndim=2 if layout == "nhd" else 3)
    pos3 = positions.unsqueeze(0) if layout == "nhd" else positions
    check_tensor(fn, "axis", axis, dtypes=(torch.int64,), ndim=1)
    check_tensor(fn, "inv_freq", inv_freq, dtypes=(torch.float32,), ndim=1)
    if not isinstance(fp32_math, bool):
        raise TypeError(f"vlmops.{fn}: fp32_math must be a bool, got {type(fp32_math).__name__}")
    if k.dtype != q.dtype:
        raise ValueError(f"vlmops.{fn}: k dtype {k.dtype} must match q dtype {q.dtype}")
    check_same_device(fn, "q", q, k=k, positions=positions, axis=axis, inv_freq=inv_freq)
    B, S, _, D = q4.shape
    if k4.shape[0] != B or k4.shape[1] != S or k4.shape[3] != D:
        raise ValueError(f"vlmops.{fn}: k of shape {tuple(k.shape)} must match q {tuple(q.shape)} in tokens and head_dim")
    if pos3.shape[0] != B or pos3.shape[1] != S or pos3.shape[2] < 1:
        expected = f"[{S}, A]" if layout == "nhd" else f"[{B}, {S}, A]"
        raise ValueError(f"vlmops.{fn}: positions must be {expected}, got shape {tuple(positions.shape)}")
    P = axis.shape[0]
    if P < 1 or inv_freq.shape[0] != P:
        raise ValueError(f"vlmops.{fn}: axis and inv_freq must both be [rotary_dim/2] >= 1, got {P} and {inv_freq.shape[0]}")
    if 2 * P > D:
        raise ValueError(f"vlmops.{fn}: rotary_dim = 2*len(axis) = {2 * P} exceeds head_dim {D}")
    if inplace and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise ValueError(f"vlmops.{fn}: inplace=True is for inference, but q or k requires grad; use inplace=False")
    if not _native.available():
        _native.warn_fallback(fn)
        q_out, k_out = reference.rope(q4, k4, pos3, axis, inv_freq, fp32_math)
        if inplace:
            q4.copy_(q_out)
            k4.copy_(k_out)
            return q, k
    elif inplace:
        _op("rope_", q)(q4, k4, pos3, axis, inv_freq, fp32_math)
        return q, k
    else:
        q_out, k_out = _op("rope", q)(q4, k4, pos3, axis, inv_freq, fp32_math)
    if layout == "nhd":
        return q_out.squeeze(0), k_out.squeeze(0)
    if layout == "bhsd":
        return q_out.transpose(1, 2), k_out.transpose(1, 2)
    return q_out, k_out


def _register(rope: str, rope_inplace: str) -> None:
    """Fake implementations and autograd of one kernel family (the public ops or their Triton twins)."""
    op = getattr(torch.ops.vlmops, rope)

    @torch.library.register_fake(f"vlmops::{rope}")
    def _(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
        return torch.empty_like(q), torch.empty_like(k)

    @torch.library.register_fake(f"vlmops::{rope_inplace}")
    def _(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
        return None

    def setup_context(ctx, inputs, output):
        _q, _k, positions, axis, inv_freq, fp32_math, inverse = inputs
        ctx.save_for_backward(positions, axis, inv_freq)
        ctx.fp32_math = fp32_math
        ctx.inverse = inverse

    # A rotation's adjoint is the rotation by the negated angle: the backward is the same op.
    def backward(ctx, grad_q, grad_k):
        positions, axis, inv_freq = ctx.saved_tensors
        grad_q, grad_k = op(grad_q, grad_k, positions, axis, inv_freq, ctx.fp32_math, not ctx.inverse)
        return grad_q, grad_k, None, None, None, None, None

    torch.library.register_autograd(f"vlmops::{rope}", backward, setup_context=setup_context)


if _native.available():
    _register("rope", "rope_")
    _register(KERNEL_OWNERS["rope"]["triton"], KERNEL_OWNERS["rope_"]["triton"])
