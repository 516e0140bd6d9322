"""Multi-axis rotary position embedding: 2D vision RoPE (Qwen2/2.5/3-VL, Pixtral), 3D M-RoPE
(Qwen2/2.5-VL sections, Qwen3-VL interleaved) and 1D RoPE, as one op.

Every variant is a pair of per-pair tables of length P = rotary_dim / 2: `axis[i]` (which column of
the integer positions pair i reads) and `inv_freq[i]`. Pair i of each head, the half-split pair
(x[i], x[i + P]) of transformers' `rotate_half`, turns by `positions[token, axis[i]] * inv_freq[i]`.
The kernels compute cos/sin in registers from that product and rotate q and k in the same pass; no
cos/sin table is ever written. The tables and positions of each model family are built in
``vlmops.models`` (``qwen_vl``, ``pixtral``), as device tensor code.

The contract (shapes, dtypes, devices, axis values on CPU, the memory rope_ writes) is
csrc/include/vlmops/rope_checks.h.
"""

from typing import NamedTuple

import torch

from vlmops.ops import registry
from vlmops.ops._checks import check_int, check_tensor
from vlmops.reference.rope import rope as _reference_rope
from vlmops.reference.rope import rope_ as _reference_rope_

__all__ = ["RopeTables", "apply_rope", "rope_1d_tables", "rope_inv_freq"]

# The shapes of q (and k) and of positions in each layout.
_LAYOUTS = {
    "nhd": ("[N, H, D]", "[N, A]"),
    "bshd": ("[B, S, H, D]", "[B, S, A]"),
    "bhsd": ("[B, H, S, D]", "[B, S, A]"),
}


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


def _as_bshd(name: str, x, layout: str, shape: str):
    """x of the given layout shape as the ops take it: q and k [B, S, H, D] or packed [N, H, D],
    positions [B, S, A] or packed [N, A]. A non-tensor passes through (the op raises TypeError naming
    it)."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.dim() != shape.count(",") + 1:
        raise ValueError(f"vlmops.apply_rope: {name} must be {shape} for layout {layout!r}, got shape {tuple(x.shape)}")
    return x.transpose(1, 2) if shape == "[B, H, S, D]" else x


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
            ``[B, H, S, D]`` ("bhsd"); float32, float64, float16 or bfloat16; any strides (read in place,
            stride 0 included).
        k: like q with H_kv heads (GQA: H_kv may differ from H), same dtype, device and head_dim D.
        positions: integer positions, int64 or int32: ``[N, A]`` for "nhd", ``[B, S, A]`` otherwise
            (any strides: transformers' ``position_ids [3, B, S]`` is ``position_ids.permute(1, 2, 0)``).
            Any values (negative ones too): the angle is ``float(position) * inv_freq``, as in transformers.
        axis: ``[P]`` int64, the positions column of each rotary pair, values in ``[0, A)``. On CPU a
            value outside raises; on CUDA the table is not read on the host (that would synchronize): the
            kernels clamp a value outside to the nearest column.
        inv_freq: ``[P]`` float32. ``rotary_dim = 2*P <= D``; dims ``[2P, D)`` pass through unchanged.
        fp32_math: True rotates in float32 and rounds once (Qwen vision); False rounds cos/sin and the
            products to the activation dtype as eager bf16/fp16 PyTorch does (Pixtral, text M-RoPE).
            Identical for float32; float64 always computes in float64.
        layout: "nhd", "bshd" or "bhsd" (how q and k are laid out).
        inplace: write the result into q and k, for inference: with grad mode on, q or k requiring grad
            raises ``RuntimeError`` (the in-place op has no derivative). q and k must then not share
            memory and each element must have its own (no expanded tensor); disjoint views of one buffer,
            e.g. ``qkv[:, 0]`` and ``qkv[:, 1]`` of a ``[N, 3, H, D]`` projection, are fine.

    Returns:
        ``(q_out, k_out)`` shaped like q and k (q and k themselves when inplace). Out of place, the outputs
        have q's and k's memory layout when those are dense, else they are contiguous. Differentiable in
        q and k, to any order (the backward is the rotation by the negated angle).

    Errors: ``ValueError`` naming the argument for a shape, dtype, device, axis value (CPU) or layout
    mistake and for in-place q and k that may share memory; ``TypeError`` for an argument of the wrong
    type; ``RuntimeError`` for inplace=True on tensors that require grad.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"vlmops.apply_rope: layout must be one of {tuple(_LAYOUTS)}, got {layout!r}")
    qk_shape, positions_shape = _LAYOUTS[layout]
    q4, k4 = _as_bshd("q", q, layout, qk_shape), _as_bshd("k", k, layout, qk_shape)
    pos3 = _as_bshd("positions", positions, layout, positions_shape)
    if inplace:
        _rope_(q4, k4, pos3, axis, inv_freq, fp32_math)
        return q, k
    q_out, k_out = _rope(q4, k4, pos3, axis, inv_freq, fp32_math)
    if layout == "bhsd":
        return q_out.transpose(1, 2), k_out.transpose(1, 2)
    return q_out, k_out


def _check_shapes(op, q, k, positions, axis, inv_freq):
    """The shape rules of csrc/include/vlmops/rope_checks.h, for fake tensors."""
    if q.dim() == 3:  # packed tokens: one batch of N
        torch._check(k.dim() == 3, lambda: f"vlmops.{op}: k must be [N, H_kv, D] like the packed q [N, H, D]")
        torch._check(positions.dim() == 2, lambda: f"vlmops.{op}: positions must be [N, A] like the packed q [N, H, D]")
        q, k, positions = q.unsqueeze(0), k.unsqueeze(0), positions.unsqueeze(0)
    torch._check(q.dim() == 4, lambda: f"vlmops.{op}: q must be [B, S, H, D] or packed [N, H, D]")
    torch._check(
        k.dim() == 4 and k.shape[0] == q.shape[0] and k.shape[1] == q.shape[1] and k.shape[3] == q.shape[3],
        lambda: f"vlmops.{op}: k must be [B, S, H_kv, D] like q {tuple(q.shape)}, got {tuple(k.shape)}",
    )
    torch._check(
        positions.dim() == 3
        and positions.shape[0] == q.shape[0]
        and positions.shape[1] == q.shape[1]
        and positions.shape[2] >= 1,
        lambda: f"vlmops.{op}: positions must be [B, S, A] like q",
    )
    torch._check(axis.dim() == 1 and axis.shape[0] >= 1, lambda: f"vlmops.{op}: axis must be [P] with P >= 1")
    torch._check(
        inv_freq.dim() == 1 and inv_freq.shape[0] == axis.shape[0],
        lambda: f"vlmops.{op}: inv_freq must be [P] like axis",
    )
    torch._check(2 * axis.shape[0] <= q.shape[3], lambda: f"vlmops.{op}: rotary_dim = 2 * len(axis) exceeds head_dim")


def _fake(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
    _check_shapes("rope", q, k, positions, axis, inv_freq)
    return torch.empty_like(q), torch.empty_like(k)


def _fake_inplace(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
    _check_shapes("rope_", q, k, positions, axis, inv_freq)


def _setup_context(ctx, inputs, output):
    _q, _k, positions, axis, inv_freq, fp32_math, inverse = inputs
    ctx.save_for_backward(positions, axis, inv_freq)
    ctx.fp32_math = fp32_math
    ctx.inverse = inverse


def _backward(ctx, grad_q, grad_k):
    """A rotation's adjoint is the rotation by the negated angle: the same op, itself differentiable."""
    positions, axis, inv_freq = ctx.saved_tensors
    inverse = not ctx.inverse
    grad_q, grad_k = torch.ops.vlmops.rope(grad_q, grad_k, positions, axis, inv_freq, ctx.fp32_math, inverse)
    return (
        grad_q if ctx.needs_input_grad[0] else None,
        grad_k if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
        None,
        None,
    )


registry.define(
    registry.OpDef(
        "rope",
        _fake,
        _reference_rope,
        _backward,
        _setup_context,
        triton="vlmops.triton.rope:rope_triton",
    )
)
# rope_ writes its inputs: its autograd kernel (csrc/cpu/rope.cpp) raises for inputs that require grad.
registry.define(
    registry.OpDef(
        "rope_",
        _fake_inplace,
        _reference_rope_,
        triton="vlmops.triton.rope:rope_triton_",
    )
)
_rope = registry.op("rope")
_rope_ = registry.op("rope_")
