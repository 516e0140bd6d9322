"""Triton kernels of gated cross-attention: the CUDA kernels of the public ops
``vlmops::gated_cross_attention`` and ``vlmops::gated_cross_attention_backward`` (Triton is the CUDA
owner; there is no CUDA C++ variant). The launchers take inputs that the op's C++ entry has checked
(csrc/triton/gated_cross_attention.cpp); vlmops.ops.registry registers them as the CUDA kernels of the
private ops ``vlmops::_gated_cross_attention_triton`` and ``_gated_cross_attention_backward_triton``.

Same semantics, shapes and outputs as the C++ kernels (csrc/cpu/gated_cross_attention.cpp), for
float32, float16 and bfloat16 (float64 is CPU-only).

Design:
- The tile math (loads, dots, online softmax, backward steps) is vlmops.triton.flash_core's, shared
  with varlen_attention; this module decides which keys each query row sees.
- A program owns BLOCK_M query rows of one (batch entry, q head) and reads their key ranges; it
  iterates over the keys of the union [min kv_start, max kv_end) of its rows. Rows of a tile nearly
  always share one range (all text after an image): then the key blocks wholly inside it are full
  and run with no mask (``range_schedule``, on the device); the last, partial block and every block
  of a tile whose rows' ranges differ mask each row to its own range. No [B, Lq, Lk] mask exists.
- Hopper (sm_90): q, k and v are read through TMA tensor descriptors where their strides allow
  (flash_core), with software pipelining and 128-row tiles of 8 warps. The k/v head is
  ``head // (H // Hk)``: grouped-query K/V are read in place, never expanded.
- Decode (few query tiles, long keys: 1 row against 4 x 1601 cached image tokens per image) splits
  the keys across SPLITS programs per tile (split-K); each writes its normalized partial output and
  log-sum-exp, and a combine kernel merges them. SPLITS comes from shapes only (no host sync).
- The tanh gate is read on the device and applied in the epilogue (forward and combine).
- Invalid ranges are not detected on the GPU (that would synchronize) but cannot read out of
  bounds: they are clamped to 0 <= kv_start <= kv_end <= Lk.
- Backward (flash-attention 2, probabilities recomputed from the saved log-sum-exp): one kernel for
  dQ per query tile, which also sums P * (dO @ V^T) per row for the gate's gradient, and one for
  dK/dV per key tile, which loops over the query heads of its k/v head, skips query tiles whose
  ranges miss it and runs unmasked those whose shared range covers the whole key tile. No atomics:
  deterministic.
"""

import torch
import triton
import triton.language as tl

from vlmops.triton import KERNEL_SPECS, device_guard, make_spec
from vlmops.triton import flash_core as core
from vlmops.triton.flash_core import LOG2E, head_dim_pieces, kernel_strides, unit_stride_d
from vlmops.triton.varlen_attention import _block_sizes as _varlen_block_sizes
from vlmops.triton.varlen_attention import capability


@triton.jit
def _tanh_gate(Gate, HAS_GATE: tl.constexpr):
    if HAS_GATE:
        x = tl.load(Gate).to(tl.float32)
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)  # tanh, saturating to +-1 without NaN
    else:
        return 1.0


@triton.jit
def _row_ranges(Start, End, b, rows, row_ok, Lq, Lk):
    """The rows' ranges clamped to 0 <= start <= end <= Lk (out-of-tile rows: empty), their union
    [lo, hi) and whether every row of the tile has the same range."""
    start = tl.load(Start + b * Lq + rows, mask=row_ok, other=0)
    end = tl.load(End + b * Lq + rows, mask=row_ok, other=0)
    start = tl.minimum(tl.maximum(start, 0), Lk)
    end = tl.minimum(tl.maximum(end, start), Lk)
    nonempty = end > start
    lo = tl.min(tl.where(nonempty, start, Lk), 0)
    hi = tl.max(tl.where(nonempty, end, 0), 0)
    uniform = (tl.min(tl.where(row_ok, start, Lk), 0) == tl.max(tl.where(row_ok, start, 0), 0)) & (
        tl.min(tl.where(row_ok, end, Lk), 0) == tl.max(tl.where(row_ok, end, 0), 0)
    )
    return start, end, lo, tl.maximum(hi, lo), uniform


@triton.jit
def range_schedule(lo, hi, uniform, BLOCK: tl.constexpr):
    """End of the full key blocks of [lo, hi): when every row of the tile shares the range, the
    blocks of BLOCK keys from lo that end inside it see every key; the rest are partial."""
    return lo + tl.where(uniform, (hi - lo) // BLOCK, 0) * BLOCK


@triton.jit
def _gated_xattn_fwd_kernel(
    Q,
    K,
    V,
    Out,
    Lse,
    Start,
    End,
    Gate,
    PartOut,
    PartLse,
    QD0,
    QD1,
    QD2,
    KD0,
    KD1,
    KD2,
    VD0,
    VD1,
    VD2,
    stride_qb,
    stride_ql,
    stride_qh,
    stride_kb,
    stride_kl,
    stride_kh,
    stride_vb,
    stride_vl,
    stride_vh,
    stride_ob,
    stride_ol,
    stride_oh,
    Lq,
    Lk,
    H,
    scale_log2,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SPLITS: tl.constexpr,
    HAS_GATE: tl.constexpr,
    TMA: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tiles = tl.cdiv(Lq, BLOCK_M)
    tile = tl.program_id(0) % tiles
    bh32 = tl.program_id(0) // tiles
    bh = bh32.to(tl.int64)  # int64 offsets: b * stride may pass 2^31
    split = tl.program_id(1)
    b = bh // H
    head = bh % H
    kv_head = head // GROUP
    b32 = bh32 // H
    head32 = bh32 % H
    kv_head32 = head32 // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Lq
    start, end, lo, hi, uniform = _row_ranges(Start, End, b, rows, row_ok, Lq, Lk)
    if SPLITS > 1:  # this program's share of the keys, whole blocks
        chunk = tl.cdiv(tl.cdiv(hi - lo, SPLITS), BLOCK_N) * BLOCK_N
        lo = lo + split * chunk
        hi = tl.minimum(hi, lo + chunk)
    full_end = range_schedule(lo, hi, uniform, BLOCK_N)
    q0, q1, q2 = core.load_tile(
        Q + b * stride_qb + head * stride_qh, rows, row_ok, stride_ql, QD0, QD1, QD2,
        (b32, tile * BLOCK_M, head32, 0), BLOCK_M, D, D0, D1, D2, TMA,
    )  # fmt: skip
    k_base = K + b * stride_kb + kv_head * stride_kh
    v_base = V + b * stride_vb + kv_head * stride_vh
    acc0, acc1, acc2 = core.zeros_pieces(BLOCK_M, D0, D1, D2)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for first in range(lo, full_end, BLOCK_N):  # full blocks: no mask
        cols = first + tl.arange(0, BLOCK_N)
        acc0, acc1, acc2, m_i, l_i = core.attend_block(
            acc0, acc1, acc2, m_i, l_i, q0, q1, q2,
            k_base, KD0, KD1, KD2, (b32, first, kv_head32, 0), stride_kl,
            v_base, VD0, VD1, VD2, (b32, first, kv_head32, 0), stride_vl,
            cols, cols < Lk, 0, scale_log2,
            False, BLOCK_N, D, D0, D1, D2, TMA, PRECISION,
        )  # fmt: skip
    for first in range(full_end, hi, BLOCK_N):  # partial blocks: each row masked to its range
        cols = first + tl.arange(0, BLOCK_N)
        visible = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
        acc0, acc1, acc2, m_i, l_i = core.attend_block(
            acc0, acc1, acc2, m_i, l_i, q0, q1, q2,
            k_base, KD0, KD1, KD2, (b32, first, kv_head32, 0), stride_kl,
            v_base, VD0, VD1, VD2, (b32, first, kv_head32, 0), stride_vl,
            cols, cols < hi, visible, scale_log2,
            True, BLOCK_N, D, D0, D1, D2, TMA, PRECISION,
        )  # fmt: skip
    inv, lse = core.softmax_epilogue(m_i, l_i)
    if SPLITS > 1:
        # Partials [SPLITS, B, H, Lq, (D)] float32, normalized: the combine kernel weighs them by lse.
        part = (split * (tl.num_programs(0) // tiles) + bh) * Lq
        tl.store(PartLse + part + rows, lse, mask=row_ok)
        core.store_pieces(
            PartOut + part * D,
            rows,
            row_ok,
            D,
            acc0 * inv[:, None],
            acc1 * inv[:, None],
            acc2 * inv[:, None],
            D,
            D0,
            D1,
            D2,
        )
    else:
        factor = inv * _tanh_gate(Gate, HAS_GATE)
        tl.store(Lse + bh * Lq + rows, lse, mask=row_ok)
        core.store_pieces(
            Out + b * stride_ob + head * stride_oh,
            rows,
            row_ok,
            stride_ol,
            acc0 * factor[:, None],
            acc1 * factor[:, None],
            acc2 * factor[:, None],
            D,
            D0,
            D1,
            D2,
        )


@triton.jit
def _gated_xattn_combine_kernel(
    PartOut,
    PartLse,
    Out,
    Lse,
    Gate,
    stride_ob,
    stride_ol,
    stride_oh,
    Lq,
    H,
    BH,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    SPLITS: tl.constexpr,
    HAS_GATE: tl.constexpr,
):
    tiles = tl.cdiv(Lq, BLOCK_M)
    tile = tl.program_id(0) % tiles
    bh = (tl.program_id(0) // tiles).to(tl.int64)  # int64 offsets: b * stride may pass 2^31
    b = bh // H
    head = bh % H
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Lq
    cols = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for s in range(SPLITS):
        m = tl.maximum(m, tl.load(PartLse + (s * BH + bh) * Lq + rows, mask=row_ok, other=float("-inf")))
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for s in range(SPLITS):
        part = (s * BH + bh) * Lq
        w = tl.exp(tl.load(PartLse + part + rows, mask=row_ok, other=float("-inf")) - m_safe)
        o = tl.load(
            PartOut + (part + rows[:, None]) * D + cols[None, :], mask=row_ok[:, None] & (cols < D)[None, :], other=0.0
        )
        acc += w[:, None] * o
        total += w
    has_keys = total > 0.0
    factor = tl.where(has_keys, 1.0 / tl.where(has_keys, total, 1.0), 0.0) * _tanh_gate(Gate, HAS_GATE)
    lse = tl.where(has_keys, m_safe + tl.log(tl.where(has_keys, total, 1.0)), float("-inf"))
    tl.store(Lse + bh * Lq + rows, lse, mask=row_ok)
    out = Out + b * stride_ob + head * stride_oh + rows.to(tl.int64)[:, None] * stride_ol + cols[None, :]
    tl.store(out, (acc * factor[:, None]).to(Out.dtype.element_ty), mask=row_ok[:, None] & (cols < D)[None, :])


@triton.jit
def _gated_xattn_bwd_dq_kernel(
    Q,
    K,
    V,
    GradOut,
    Lse,
    Delta,
    GradQ,
    RowDot,
    Start,
    End,
    Gate,
    stride_qb,
    stride_ql,
    stride_qh,
    stride_kb,
    stride_kl,
    stride_kh,
    stride_vb,
    stride_vl,
    stride_vh,
    stride_dob,
    stride_dol,
    stride_doh,
    stride_dqb,
    stride_dql,
    stride_dqh,
    Lq,
    Lk,
    H,
    scale,
    scale_log2,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_GATE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tiles = tl.cdiv(Lq, BLOCK_M)
    tile = tl.program_id(0) % tiles
    bh = (tl.program_id(0) // tiles).to(tl.int64)  # int64 offsets: b * stride may pass 2^31
    b = bh // H
    head = bh % H
    kv_head = head // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Lq
    start, end, lo, hi, uniform = _row_ranges(Start, End, b, rows, row_ok, Lq, Lk)
    full_end = range_schedule(lo, hi, uniform, BLOCK_N)
    gate = _tanh_gate(Gate, HAS_GATE)
    q0, q1, q2 = core.load_pieces(Q + b * stride_qb + head * stride_qh, rows, row_ok, stride_ql, D, D0, D1, D2)
    do0, do1, do2 = core.load_pieces(
        GradOut + b * stride_dob + head * stride_doh, rows, row_ok, stride_dol, D, D0, D1, D2
    )
    lse2, delta = core.load_row_stats(Lse, Delta, bh * Lq, rows, row_ok)
    k_base = K + b * stride_kb + kv_head * stride_kh
    v_base = V + b * stride_vb + kv_head * stride_vh
    dq0, dq1, dq2 = core.zeros_pieces(BLOCK_M, D0, D1, D2)
    row_dot = tl.zeros([BLOCK_M], tl.float32)
    for first in range(lo, full_end, BLOCK_N):  # full blocks: no mask
        cols = first + tl.arange(0, BLOCK_N)
        col_ok = cols < Lk
        k0, k1, k2 = core.load_pieces(k_base, cols, col_ok, stride_kl, D, D0, D1, D2)
        v0, v1, v2 = core.load_pieces(v_base, cols, col_ok, stride_vl, D, D0, D1, D2)
        dq0, dq1, dq2, row_dot = core.dq_block(
            dq0, dq1, dq2, row_dot, q0, q1, q2, do0, do1, do2, lse2, delta,
            k0, k1, k2, v0, v1, v2, 0, gate, scale_log2, False, HAS_GATE, D1, D2, PRECISION,
        )  # fmt: skip
    for first in range(full_end, hi, BLOCK_N):  # partial blocks: each row masked to its range
        cols = first + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        k0, k1, k2 = core.load_pieces(k_base, cols, col_ok, stride_kl, D, D0, D1, D2)
        v0, v1, v2 = core.load_pieces(v_base, cols, col_ok, stride_vl, D, D0, D1, D2)
        visible = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
        dq0, dq1, dq2, row_dot = core.dq_block(
            dq0, dq1, dq2, row_dot, q0, q1, q2, do0, do1, do2, lse2, delta,
            k0, k1, k2, v0, v1, v2, visible, gate, scale_log2, True, HAS_GATE, D1, D2, PRECISION,
        )  # fmt: skip
    if HAS_GATE:
        tl.store(RowDot + bh * Lq + rows, row_dot, mask=row_ok)
    core.store_pieces(
        GradQ + b * stride_dqb + head * stride_dqh,
        rows,
        row_ok,
        stride_dql,
        dq0 * scale,
        dq1 * scale,
        dq2 * scale,
        D,
        D0,
        D1,
        D2,
    )


@triton.jit
def _gated_xattn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    GradOut,
    Lse,
    Delta,
    GradK,
    GradV,
    Start,
    End,
    Gate,
    stride_qb,
    stride_ql,
    stride_qh,
    stride_kb,
    stride_kl,
    stride_kh,
    stride_vb,
    stride_vl,
    stride_vh,
    stride_dob,
    stride_dol,
    stride_doh,
    stride_dkb,
    stride_dkl,
    stride_dkh,
    stride_dvb,
    stride_dvl,
    stride_dvh,
    Lq,
    Lk,
    H,
    Hk,
    scale,
    scale_log2,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_GATE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tiles = tl.cdiv(Lk, BLOCK_N)
    tile = tl.program_id(0) % tiles
    bk = (tl.program_id(0) // tiles).to(tl.int64)
    b = bk // Hk
    kv_head = bk % Hk
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < Lk
    col_first = tile * BLOCK_N
    col_last = tl.minimum(col_first + BLOCK_N, Lk)
    gate = _tanh_gate(Gate, HAS_GATE)
    k0, k1, k2 = core.load_pieces(K + b * stride_kb + kv_head * stride_kh, cols, col_ok, stride_kl, D, D0, D1, D2)
    v0, v1, v2 = core.load_pieces(V + b * stride_vb + kv_head * stride_vh, cols, col_ok, stride_vl, D, D0, D1, D2)
    dk0, dk1, dk2 = core.zeros_pieces(BLOCK_N, D0, D1, D2)
    dv0, dv1, dv2 = core.zeros_pieces(BLOCK_N, D0, D1, D2)
    for row_first in range(0, Lq, BLOCK_M):
        rows = row_first + tl.arange(0, BLOCK_M)
        row_ok = rows < Lq
        start, end, lo, hi, uniform = _row_ranges(Start, End, b, rows, row_ok, Lq, Lk)
        if (lo < col_last) & (hi > col_first):  # some row of the tile sees some key of this block
            # Full when every row shares one range that holds every key of the tile.
            full = uniform & (lo <= col_first) & (col_last <= hi)
            for g in range(GROUP):
                head = kv_head * GROUP + g
                q0, q1, q2 = core.load_pieces(
                    Q + b * stride_qb + head * stride_qh, rows, row_ok, stride_ql, D, D0, D1, D2
                )
                do0, do1, do2 = core.load_pieces(
                    GradOut + b * stride_dob + head * stride_doh, rows, row_ok, stride_dol, D, D0, D1, D2
                )
                lse2, delta = core.load_row_stats(Lse, Delta, (b * H + head) * Lq, rows, row_ok)
                if full:
                    dk0, dk1, dk2, dv0, dv1, dv2, _ = core.dkdv_block(
                        dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2, q0, q1, q2, do0, do1, do2,
                        lse2, delta, 0, gate, scale_log2, False, D1, D2, PRECISION,
                    )  # fmt: skip
                else:
                    visible_t = (cols[:, None] >= start[None, :]) & (cols[:, None] < end[None, :])
                    dk0, dk1, dk2, dv0, dv1, dv2, _ = core.dkdv_block(
                        dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2, q0, q1, q2, do0, do1, do2,
                        lse2, delta, visible_t, gate, scale_log2, True, D1, D2, PRECISION,
                    )  # fmt: skip
    # The gated output's grad_out is gate * grad_out: dV takes the gate once here.
    core.store_pieces(
        GradK + b * stride_dkb + kv_head * stride_dkh,
        cols,
        col_ok,
        stride_dkl,
        dk0 * scale,
        dk1 * scale,
        dk2 * scale,
        D,
        D0,
        D1,
        D2,
    )
    core.store_pieces(
        GradV + b * stride_dvb + kv_head * stride_dvh,
        cols,
        col_ok,
        stride_dvl,
        dv0 * gate,
        dv1 * gate,
        dv2 * gate,
        D,
        D0,
        D1,
        D2,
    )


def _fwd_blocks(D: int, Lq: int, arch: int = 0) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages or None) of the forward; decode rows take the smallest
    tl.dot tile. Prefill on Hopper takes varlen_attention's Hopper tiles (TMA-fed, pipelined)."""
    if Lq <= 16:
        return 16, 64, 4, (3 if arch >= 90 else None)
    if arch >= 90:
        return _varlen_block_sizes(D, arch)
    if D <= 128:  # 8 warps for masked head dims, as varlen_attention's forward
        return 128, 64, 8 if D > 64 or D % 16 else 4, None
    return 64, 32, 8, None


# Backward tiles, the looping side kept small (varlen_attention's static report: 64 x 64 spilled).
BWD_DQ_BLOCKS = (64, 32)
BWD_DKDV_BLOCKS = (32, 64)


def _bwd_num_warps(D: int) -> int:
    return 4 if D <= 64 else 8


def num_splits(B: int, H: int, Lq: int, Lk: int, block_m: int, block_n: int) -> int:
    """Key splits per query tile: enough programs to fill a large GPU (about 256) when the query tiles
    alone are few (decode), never splits shorter than four key blocks. From shapes only."""
    programs = B * H * triton.cdiv(Lq, block_m)
    if programs >= 256:
        return 1
    return max(1, min(16, triton.cdiv(256, programs), triton.cdiv(Lk, 4 * block_n)))


def _combine_block_d(D: int) -> int:
    return max(16, triton.next_power_of_2(D))


def _strides(t):
    """(batch, row, head) strides of a [B, L, heads, D] tensor, as the kernels take them."""
    return kernel_strides(t)[:3]


def gated_cross_attention(
    q,
    k,
    v,
    kv_start,
    kv_end,
    gate=None,
    softmax_scale=None,
    *,
    block_m=None,
    block_n=None,
    splits=None,
    num_warps=None,
    num_stages=None,
    tma=None,
):
    """The forward launcher: (out [B, Lq, H, D], lse [B, H, Lq] float32). Block sizes, the number of
    key splits, warps, stages and TMA may be overridden (the interpreter tests use small blocks and
    force TMA). ``tma`` None reads through TMA descriptors on sm_90+ where q, k and v allow it."""
    q, k, v = unit_stride_d(q, k, v)
    B, Lq, H, D = q.shape
    Lk, Hk = k.shape[1], k.shape[2]
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(B, H, Lq, device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse.fill_(float("-inf"))
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    arch = capability(q)
    bm, bn, warps, stages = _fwd_blocks(D, Lq, arch)
    bm, bn, warps, stages = block_m or bm, block_n or bn, num_warps or warps, num_stages or stages
    n_splits = splits or num_splits(B, H, Lq, Lk, bm, bn)
    D0, D1, D2 = pieces = head_dim_pieces(D)
    use_tma = all(core.tma_capable(t) for t in (q, k, v)) and (arch >= 90 if tma is None else tma)
    if use_tma:
        descriptors = (
            core.piece_descriptors(q, bm, 1, pieces)
            + core.piece_descriptors(k, bn, 1, pieces)
            + core.piece_descriptors(v, bn, 1, pieces)
        )
    else:
        descriptors = (None,) * 9
    has_gate = gate is not None
    gate_arg = gate if has_gate else lse  # an unused pointer
    with device_guard(q):
        start, end = kv_start.contiguous(), kv_end.contiguous()
        if n_splits > 1:
            part_out = torch.empty(n_splits, B, H, Lq, D, device=q.device, dtype=torch.float32)
            part_lse = torch.empty(n_splits, B, H, Lq, device=q.device, dtype=torch.float32)
        else:
            part_out = part_lse = lse
        _gated_xattn_fwd_kernel[(triton.cdiv(Lq, bm) * B * H, n_splits)](
            q,
            k,
            v,
            out,
            lse,
            start,
            end,
            gate_arg,
            part_out,
            part_lse,
            *descriptors,
            *_strides(q),
            *_strides(k),
            *_strides(v),
            *_strides(out),
            Lq,
            Lk,
            H,
            scale * LOG2E,
            GROUP=H // Hk,
            D=D,
            D0=D0,
            D1=D1,
            D2=D2,
            BLOCK_M=bm,
            BLOCK_N=bn,
            SPLITS=n_splits,
            HAS_GATE=has_gate,
            TMA=use_tma,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
            num_warps=warps,
            **({} if stages is None else {"num_stages": stages}),
        )
        if n_splits > 1:
            _gated_xattn_combine_kernel[(triton.cdiv(Lq, 16) * B * H,)](
                part_out,
                part_lse,
                out,
                lse,
                gate_arg,
                *_strides(out),
                Lq,
                H,
                B * H,
                D=D,
                BLOCK_D=_combine_block_d(D),
                BLOCK_M=16,
                SPLITS=n_splits,
                HAS_GATE=has_gate,
                num_warps=4,
            )
    return out, lse


def gated_cross_attention_backward(
    grad_out,
    q,
    k,
    v,
    out,
    lse,
    kv_start,
    kv_end,
    gate=None,
    softmax_scale=None,
    *,
    block_m=None,
    block_n=None,
    num_warps=None,
    needs=(True, True, True, True),
):
    """The backward launcher: (grad_q, grad_k, grad_v, grad_gate), deterministic (no atomics).
    ``needs`` (which of grad_q, grad_k, grad_v, grad_gate are wanted, as ``ctx.needs_input_grad``)
    runs the dQ kernel only when grad_q or grad_gate is needed (it also sums the gate's gradient) and
    the dK/dV kernel only when grad_k or grad_v is; a skipped gradient comes back as zeros."""
    grad_out, q, k, v, out = unit_stride_d(grad_out, q, k, v, out)
    B, Lq, H, D = q.shape
    Lk, Hk = k.shape[1], k.shape[2]
    grad_q = torch.zeros_like(q, memory_format=torch.contiguous_format)
    grad_k = torch.zeros_like(k, memory_format=torch.contiguous_format)
    grad_v = torch.zeros_like(v, memory_format=torch.contiguous_format)
    has_gate = gate is not None
    row_dot = torch.zeros(B, H, Lq, device=q.device, dtype=torch.float32)
    need_dq = needs[0] or (has_gate and (len(needs) < 4 or needs[3]))
    need_kv = needs[1] or needs[2]
    if q.numel() and k.numel() and (need_dq or need_kv):
        scale = D**-0.5 if softmax_scale is None else softmax_scale
        dq_blocks = (block_m or BWD_DQ_BLOCKS[0], block_n or BWD_DQ_BLOCKS[1])
        dkdv_blocks = (block_m or BWD_DKDV_BLOCKS[0], block_n or BWD_DKDV_BLOCKS[1])
        D0, D1, D2 = head_dim_pieces(D)
        gate_arg = gate if has_gate else lse
        with device_guard(q):
            # delta [B, H, Lq] = rowsum(dO * O): the gated O carries the gate flash-attention 2's
            # correction needs (rowsum(gate * dO * ungated O)).
            delta = (grad_out.float() * out.float()).sum(-1).transpose(1, 2).contiguous()
            lse = lse.contiguous()
            start, end = kv_start.contiguous(), kv_end.contiguous()
            common = dict(
                GROUP=H // Hk,
                D=D,
                D0=D0,
                D1=D1,
                D2=D2,
                HAS_GATE=has_gate,
                PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
                num_warps=num_warps or _bwd_num_warps(D),
            )
            if need_dq:
                _gated_xattn_bwd_dq_kernel[(triton.cdiv(Lq, dq_blocks[0]) * B * H,)](
                    q,
                    k,
                    v,
                    grad_out,
                    lse,
                    delta,
                    grad_q,
                    row_dot,
                    start,
                    end,
                    gate_arg,
                    *_strides(q),
                    *_strides(k),
                    *_strides(v),
                    *_strides(grad_out),
                    *_strides(grad_q),
                    Lq,
                    Lk,
                    H,
                    scale,
                    scale * LOG2E,
                    BLOCK_M=dq_blocks[0],
                    BLOCK_N=dq_blocks[1],
                    **common,
                )
            if need_kv:
                _gated_xattn_bwd_dkdv_kernel[(triton.cdiv(Lk, dkdv_blocks[1]) * B * Hk,)](
                    q,
                    k,
                    v,
                    grad_out,
                    lse,
                    delta,
                    grad_k,
                    grad_v,
                    start,
                    end,
                    gate_arg,
                    *_strides(q),
                    *_strides(k),
                    *_strides(v),
                    *_strides(grad_out),
                    *_strides(grad_k),
                    *_strides(grad_v),
                    Lq,
                    Lk,
                    H,
                    Hk,
                    scale,
                    scale * LOG2E,
                    BLOCK_M=dkdv_blocks[0],
                    BLOCK_N=dkdv_blocks[1],
                    **common,
                )
    if has_gate:
        t = torch.tanh(gate.float())
        grad_gate = ((1 - t * t) * row_dot.sum()).to(gate.dtype)
    else:
        grad_gate = torch.zeros(0, device=q.device, dtype=torch.float32)
    return grad_q, grad_k, grad_v, grad_gate


def _specs():
    """Representative launches for the static kernel report: Llama 3.2 Vision 11B's cross-attention
    (H=32, Hk=8, D=128; prefill and decode against 4 x 1601 keys) and OpenFlamingo-9B's
    (MPT-7B: H=32, D=128 over 64 latents per image), and D=8 of the tiny test configurations (one
    masked 16-wide piece); bf16."""
    specs = []
    for config, H, Hk, D, Lq, Lk in (
        ("mllama-11b:prefill", 32, 8, 128, 2048, 6404),
        ("mllama-11b:decode", 32, 8, 128, 1, 6404),
        ("openflamingo-9b:prefill", 32, 32, 128, 2048, 5 * 64),
        ("tiny-test-config:prefill", 4, 2, 8, 64, 128),
    ):
        D0, D1, D2 = head_dim_pieces(D)
        bm, bn, warps, _ = _fwd_blocks(D, Lq)
        splits = num_splits(1, H, Lq, Lk, bm, bn)
        strides = dict(
            stride_qb=Lq * H * D,
            stride_ql=H * D,
            stride_qh=D,
            stride_kb=Lk * Hk * D,
            stride_kl=Hk * D,
            stride_kh=D,
            stride_vb=Lk * Hk * D,
            stride_vl=Hk * D,
            stride_vh=D,
        )
        pieces = dict(GROUP=H // Hk, D=D, D0=D0, D1=D1, D2=D2, HAS_GATE=True, PRECISION="tf32")
        # The Ampere configuration for both archs; the Hopper one (TMA, pipelined) for sm_90a.
        for label, arch, tma in (("", 80, False), (":hopper", 90, True)):
            bm, bn, warps, stages = _fwd_blocks(D, Lq, arch)
            descriptors = {
                f"{name}D{index}": core.descriptor_type(torch.bfloat16, rows, 1, 4, width) if tma else None
                for name, rows in (("Q", bm), ("K", bn), ("V", bn))
                for index, width in enumerate((D0, D1, D2))
            }
            specs.append(
                make_spec(
                    _gated_xattn_fwd_kernel,
                    config + label,
                    warps,
                    dict(pieces, BLOCK_M=bm, BLOCK_N=bn, SPLITS=num_splits(1, H, Lq, Lk, bm, bn), TMA=tma),
                    num_stages=stages,
                    archs=("sm_80", "sm_90a") if arch < 90 else ("sm_90a",),
                    Q=torch.bfloat16,
                    K=torch.bfloat16,
                    V=torch.bfloat16,
                    Out=torch.bfloat16,
                    Lse=torch.float32,
                    Start=torch.int32,
                    End=torch.int32,
                    Gate=torch.bfloat16,
                    PartOut=torch.float32,
                    PartLse=torch.float32,
                    **descriptors,
                    **strides,
                    stride_ob=Lq * H * D,
                    stride_ol=H * D,
                    stride_oh=D,
                    Lq=Lq,
                    Lk=Lk,
                    H=H,
                    scale_log2=D**-0.5 * LOG2E,
                )
            )
        if splits > 1:
            specs.append(
                make_spec(
                    _gated_xattn_combine_kernel,
                    config,
                    4,
                    dict(D=D, BLOCK_D=_combine_block_d(D), BLOCK_M=16, SPLITS=splits, HAS_GATE=True),
                    PartOut=torch.float32,
                    PartLse=torch.float32,
                    Out=torch.bfloat16,
                    Lse=torch.float32,
                    Gate=torch.bfloat16,
                    stride_ob=Lq * H * D,
                    stride_ol=H * D,
                    stride_oh=D,
                    Lq=Lq,
                    H=H,
                    BH=H,
                )
            )
            continue
        grads = dict(
            Q=torch.bfloat16,
            K=torch.bfloat16,
            V=torch.bfloat16,
            GradOut=torch.bfloat16,
            Lse=torch.float32,
            Delta=torch.float32,
            Start=torch.int32,
            End=torch.int32,
            Gate=torch.bfloat16,
        )
        specs.append(
            make_spec(
                _gated_xattn_bwd_dq_kernel,
                config,
                _bwd_num_warps(D),
                dict(pieces, BLOCK_M=BWD_DQ_BLOCKS[0], BLOCK_N=BWD_DQ_BLOCKS[1]),
                **grads,
                GradQ=torch.bfloat16,
                RowDot=torch.float32,
                **strides,
                stride_dob=Lq * H * D,
                stride_dol=H * D,
                stride_doh=D,
                stride_dqb=Lq * H * D,
                stride_dql=H * D,
                stride_dqh=D,
                Lq=Lq,
                Lk=Lk,
                H=H,
                scale=D**-0.5,
                scale_log2=D**-0.5 * LOG2E,
            )
        )
        specs.append(
            make_spec(
                _gated_xattn_bwd_dkdv_kernel,
                config,
                _bwd_num_warps(D),
                dict(pieces, BLOCK_M=BWD_DKDV_BLOCKS[0], BLOCK_N=BWD_DKDV_BLOCKS[1]),
                **grads,
                GradK=torch.bfloat16,
                GradV=torch.bfloat16,
                **strides,
                stride_dob=Lq * H * D,
                stride_dol=H * D,
                stride_doh=D,
                stride_dkb=Lk * Hk * D,
                stride_dkl=Hk * D,
                stride_dkh=D,
                stride_dvb=Lk * Hk * D,
                stride_dvl=Hk * D,
                stride_dvh=D,
                Lq=Lq,
                Lk=Lk,
                H=H,
                Hk=Hk,
                scale=D**-0.5,
                scale_log2=D**-0.5 * LOG2E,
            )
        )
    return specs


KERNEL_SPECS.extend(_specs())
