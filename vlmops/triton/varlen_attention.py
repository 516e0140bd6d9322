"""Triton kernels of block-diagonal packed (varlen) attention: the CUDA kernels of the public ops
``vlmops::varlen_attention`` and ``vlmops::varlen_attention_backward`` (attention's CUDA owner is
Triton; there is no CUDA C++ variant). The launchers take inputs that the op's C++ entry has checked
(csrc/triton/varlen_attention.cpp); they are registered as the CUDA kernels of the private ops
``vlmops::_varlen_attention_triton`` and ``_varlen_attention_backward_triton`` by vlmops.ops.registry.

Same semantics, shapes and outputs as the C++ kernels (csrc/cpu/varlen_attention.cpp), for float32,
float16 and bfloat16 (float64 is CPU-only). The tile math (loads, dots, online softmax, backward
steps) is vlmops.triton.flash_core's; this module decides which keys each query row sees.

Design:
- Tiles are BLOCK_M consecutive rows of the packed sequence, whatever the segments: the grid is
  ``cdiv(Nq, BLOCK_M) x H``, known from shapes, so nothing reads cu_seqlens on the host (no sync,
  max_seqlen never needed). Each tile reads the segment ids of its rows (``segment_ids``, built on
  the device with searchsorted) and iterates over the keys of its first to last segment. Short
  segments (Qwen2.5-VL's 64-token windows, 64-256-token video frames) are therefore packed several
  per tile instead of wasting a padded tile each; a long segment costs at most one partial tile at
  each of its ends.
- Full and partial key blocks (``tile_schedule``, worked out on the device from the tile's segment
  ids and cu_seqlens): when every row of a tile lies in one segment, the key blocks wholly inside
  that segment's keys are full and run with no mask, no per-element compare and no key segment-id
  load; only the last, partial block and every block of a tile that straddles segments compare
  query and key segment ids. ``block_schedule`` mirrors the classification in PyTorch.
- Hopper (sm_90): Q, K and V are read through TMA tensor descriptors (flash_core) whenever their
  strides allow, with software pipelining (``num_stages``) and 128-row tiles of 8 warps (64-row tiles
  of one warpgroup when the caller bounds every segment by 64 rows through ``max_seqlen_q``: window
  layers); other GPUs and operands whose strides do not allow TMA take masked pointer loads.
- Any head dim from 1 to 256 (flash_core's head-dim pieces: D is padded only to a multiple of 16).
- Strides are honoured as given (a copy only for a D that is not unit-stride); a size-1 dim's stride
  is replaced by its contiguous value (``kernel_strides``). Batch and head offsets are int64, row
  offsets are int64 products: views whose offsets pass 2^31 elements index correctly.
- Invalid cu_seqlens are not detected on the GPU (that would synchronize) but cannot cause
  out-of-bounds reads: segment ids are clamped to [0, B), key and query ranges to [0, N].
- Backward (flash-attention 2, probabilities recomputed from the saved log-sum-exp): one kernel for
  dQ per query tile and one for dK/dV per key tile, which loops over the query heads of its k/v
  head; both use the same full/partial schedule and, on Hopper, read the operands they loop over
  through TMA (K and V for dQ, Q and dO for dK/dV). The default is deterministic (no atomics);
  ``atomic_dq=True`` instead adds each dK/dV program's dQ share atomically into a float32 buffer and
  skips the dQ kernel. Gradients that are not needed are not computed (``needs``).
"""

import functools

import torch
import triton
import triton.language as tl

from vlmops.triton import KERNEL_SPECS, device_guard, make_spec
from vlmops.triton import flash_core as core
from vlmops.triton.flash_core import LOG2E, head_dim_pieces, kernel_strides, unit_stride_d

__all__ = [
    "block_schedule",
    "head_dim_pieces",
    "kernel_strides",
    "segment_ids",
    "tile_schedules",
    "unit_stride_d",
    "varlen_attention",
    "varlen_attention_backward",
]


@triton.jit
def tile_schedule(Segments, Cu, index, index_ok, limit, BLOCK: tl.constexpr):
    """The schedule of one tile (rows ``index``) over the other side's blocks of BLOCK rows:
    (segment ids of the tile's rows, begin, full_end, end). The tile visits [begin, end), the other
    side's rows of its first to last segment (clamped to [0, limit] so bad boundaries cannot read out
    of bounds); blocks starting in [begin, full_end) are full (the tile has a single segment and the
    block lies inside it: every row sees every key), the blocks from full_end to end are partial and
    compare segment ids."""
    segments = tl.load(Segments + index, mask=index_ok, other=-1)
    first = tl.min(tl.where(index_ok, segments, 2147483647), 0)
    last = tl.max(segments, 0)
    begin = tl.minimum(tl.maximum(tl.load(Cu + first), 0), limit)
    end = tl.minimum(tl.maximum(tl.load(Cu + last + 1), begin), limit)
    full_blocks = tl.where(first == last, (end - begin) // BLOCK, 0)
    return segments, begin, begin + full_blocks * BLOCK, end


@triton.jit
def _tile_schedule_kernel(Segments, Cu, Out, N, limit, TILE: tl.constexpr, BLOCK: tl.constexpr):
    """(begin, full_end, end) of every tile, as the attention kernels compute them (tests read it)."""
    tile = tl.program_id(0)
    index = tile * TILE + tl.arange(0, TILE)
    _, begin, full_end, end = tile_schedule(Segments, Cu, index, index < N, limit, BLOCK)
    tl.store(Out + tile * 3, begin)
    tl.store(Out + tile * 3 + 1, full_end)
    tl.store(Out + tile * 3 + 2, end)


@triton.jit
def _varlen_attention_fwd_kernel(
    Q,
    K,
    V,
    Out,
    Lse,
    SegmentsQ,
    SegmentsK,
    CuK,
    QD0,
    QD1,
    QD2,
    KD0,
    KD1,
    KD2,
    VD0,
    VD1,
    VD2,
    stride_qn,
    stride_qh,
    stride_kn,
    stride_kh,
    stride_vn,
    stride_vh,
    stride_on,
    stride_oh,
    Nq,
    Nk,
    scale_log2,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TMA: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    head32 = tl.program_id(1)
    head = head32.to(tl.int64)  # int64 head offsets: head * stride may pass 2^31
    kv_head32 = head32 // GROUP
    kv_head = head // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Nq
    seg_rows, k_begin, k_full_end, k_end = tile_schedule(SegmentsQ, CuK, rows, row_ok, Nk, BLOCK_N)
    q0, q1, q2 = core.load_tile(
        Q + head * stride_qh,
        rows,
        row_ok,
        stride_qn,
        QD0,
        QD1,
        QD2,
        (tile * BLOCK_M, head32, 0),
        BLOCK_M,
        D,
        D0,
        D1,
        D2,
        TMA,
    )
    k_base = K + kv_head * stride_kh
    v_base = V + kv_head * stride_vh
    acc0, acc1, acc2 = core.zeros_pieces(BLOCK_M, D0, D1, D2)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start in range(k_begin, k_full_end, BLOCK_N):  # full blocks: no mask
        cols = start + tl.arange(0, BLOCK_N)
        acc0, acc1, acc2, m_i, l_i = core.attend_block(
            acc0, acc1, acc2, m_i, l_i, q0, q1, q2,
            k_base, KD0, KD1, KD2, (start, kv_head32, 0), stride_kn,
            v_base, VD0, VD1, VD2, (start, kv_head32, 0), stride_vn,
            cols, cols < Nk, 0, scale_log2,
            False, BLOCK_N, D, D0, D1, D2, TMA, PRECISION,
        )  # fmt: skip
    for start in range(k_full_end, k_end, BLOCK_N):  # partial blocks: segment ids compared
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < k_end
        seg_cols = tl.load(SegmentsK + cols, mask=col_ok, other=-2)
        acc0, acc1, acc2, m_i, l_i = core.attend_block(
            acc0, acc1, acc2, m_i, l_i, q0, q1, q2,
            k_base, KD0, KD1, KD2, (start, kv_head32, 0), stride_kn,
            v_base, VD0, VD1, VD2, (start, kv_head32, 0), stride_vn,
            cols, col_ok, seg_rows[:, None] == seg_cols[None, :], scale_log2,
            True, BLOCK_N, D, D0, D1, D2, TMA, PRECISION,
        )  # fmt: skip
    inv, lse = core.softmax_epilogue(m_i, l_i)
    tl.store(Lse + head * Nq + rows, lse, mask=row_ok)
    core.store_pieces(
        Out + head * stride_oh,
        rows,
        row_ok,
        stride_on,
        acc0 * inv[:, None],
        acc1 * inv[:, None],
        acc2 * inv[:, None],
        D,
        D0,
        D1,
        D2,
    )


@triton.jit
def _varlen_attention_bwd_dq_kernel(
    Q,
    K,
    V,
    GradOut,
    Lse,
    Delta,
    GradQ,
    SegmentsQ,
    SegmentsK,
    CuK,
    KD0,
    KD1,
    KD2,
    VD0,
    VD1,
    VD2,
    stride_qn,
    stride_qh,
    stride_kn,
    stride_kh,
    stride_vn,
    stride_vh,
    stride_don,
    stride_doh,
    stride_dqn,
    stride_dqh,
    Nq,
    Nk,
    scale,
    scale_log2,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TMA: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)  # int64 head offsets: head * stride may pass 2^31
    kv_head = head // GROUP
    kv_head32 = tl.program_id(1) // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Nq
    seg_rows, k_begin, k_full_end, k_end = tile_schedule(SegmentsQ, CuK, rows, row_ok, Nk, BLOCK_N)
    q0, q1, q2 = core.load_pieces(Q + head * stride_qh, rows, row_ok, stride_qn, D, D0, D1, D2)
    do0, do1, do2 = core.load_pieces(GradOut + head * stride_doh, rows, row_ok, stride_don, D, D0, D1, D2)
    lse2, delta = core.load_row_stats(Lse, Delta, head * Nq, rows, row_ok)
    k_base = K + kv_head * stride_kh
    v_base = V + kv_head * stride_vh
    dq0, dq1, dq2 = core.zeros_pieces(BLOCK_M, D0, D1, D2)
    row_dot = tl.zeros([BLOCK_M], tl.float32)
    for start in range(k_begin, k_full_end, BLOCK_N):  # full blocks: no mask
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < Nk
        k0, k1, k2 = core.load_tile(
            k_base, cols, col_ok, stride_kn, KD0, KD1, KD2, (start, kv_head32, 0), BLOCK_N, D, D0, D1, D2, TMA
        )
        v0, v1, v2 = core.load_tile(
            v_base, cols, col_ok, stride_vn, VD0, VD1, VD2, (start, kv_head32, 0), BLOCK_N, D, D0, D1, D2, TMA
        )
        dq0, dq1, dq2, row_dot = core.dq_block(
            dq0, dq1, dq2, row_dot, q0, q1, q2, do0, do1, do2, lse2, delta,
            k0, k1, k2, v0, v1, v2, 0, 1.0, scale_log2, False, False, D1, D2, PRECISION,
        )  # fmt: skip
    for start in range(k_full_end, k_end, BLOCK_N):  # partial blocks: segment ids compared
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < k_end
        seg_cols = tl.load(SegmentsK + cols, mask=col_ok, other=-2)
        k0, k1, k2 = core.load_tile(
            k_base, cols, col_ok, stride_kn, KD0, KD1, KD2, (start, kv_head32, 0), BLOCK_N, D, D0, D1, D2, TMA
        )
        v0, v1, v2 = core.load_tile(
            v_base, cols, col_ok, stride_vn, VD0, VD1, VD2, (start, kv_head32, 0), BLOCK_N, D, D0, D1, D2, TMA
        )
        if TMA:  # K and V enter dS K and dO V^T: rows past the range must read as zeros
            k0, k1, k2 = core.keep_rows(k0, k1, k2, col_ok, D1, D2)
            v0, v1, v2 = core.keep_rows(v0, v1, v2, col_ok, D1, D2)
        dq0, dq1, dq2, row_dot = core.dq_block(
            dq0, dq1, dq2, row_dot, q0, q1, q2, do0, do1, do2, lse2, delta,
            k0, k1, k2, v0, v1, v2, seg_rows[:, None] == seg_cols[None, :], 1.0, scale_log2,
            True, False, D1, D2, PRECISION,
        )  # fmt: skip
    core.store_pieces(
        GradQ + head * stride_dqh, rows, row_ok, stride_dqn, dq0 * scale, dq1 * scale, dq2 * scale, D, D0, D1, D2
    )


@triton.jit
def _dkdv_query_block(
    dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2, seg_cols,
    Q, GradOut, Lse, Delta, GradQAcc, SegmentsQ, QD0, QD1, QD2, DOD0, DOD1, DOD2, head, start, rows, row_ok,
    stride_qn, stride_qh, stride_don, stride_doh, Nq, H, scale, scale_log2,
    MASKED: tl.constexpr, BLOCK_M: tl.constexpr, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr,
    D2: tl.constexpr, ATOMIC_DQ: tl.constexpr, TMA: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One query block (rows of query head ``head``) of a dK/dV program; MASKED compares segment ids.
    With ATOMIC_DQ it also adds the block's dQ share, dS K, into the float32 [Nq, H, D] GradQAcc."""
    coords = (start, head.to(tl.int32), 0)
    q0, q1, q2 = core.load_tile(
        Q + head * stride_qh, rows, row_ok, stride_qn, QD0, QD1, QD2, coords, BLOCK_M, D, D0, D1, D2, TMA
    )
    do0, do1, do2 = core.load_tile(
        GradOut + head * stride_doh, rows, row_ok, stride_don, DOD0, DOD1, DOD2, coords, BLOCK_M, D, D0, D1, D2, TMA
    )
    if MASKED and TMA:  # Q and dO enter dS^T Q and P^T dO: rows past the range must read as zeros
        q0, q1, q2 = core.keep_rows(q0, q1, q2, row_ok, D1, D2)
        do0, do1, do2 = core.keep_rows(do0, do1, do2, row_ok, D1, D2)
    lse2, delta = core.load_row_stats(Lse, Delta, head * Nq, rows, row_ok)
    visible_t = 0
    if MASKED:
        seg_rows = tl.load(SegmentsQ + rows, mask=row_ok, other=-1)
        visible_t = seg_cols[:, None] == seg_rows[None, :]
    dk0, dk1, dk2, dv0, dv1, dv2, ds_t = core.dkdv_block(
        dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2, q0, q1, q2, do0, do1, do2,
        lse2, delta, visible_t, 1.0, scale_log2, MASKED, D1, D2, PRECISION,
    )  # fmt: skip
    if ATOMIC_DQ:
        dq0, dq1, dq2 = core.zeros_pieces(BLOCK_M, D0, D1, D2)
        dq0, dq1, dq2 = core.dot_acc(dq0, dq1, dq2, tl.trans(ds_t), k0, k1, k2, D1, D2, PRECISION)
        core.atomic_add_pieces(
            GradQAcc + head * D, rows, row_ok, H * D, dq0 * scale, dq1 * scale, dq2 * scale, D, D0, D1, D2
        )
    return dk0, dk1, dk2, dv0, dv1, dv2


@triton.jit
def _varlen_attention_bwd_dkdv_kernel(
    Q,
    K,
    V,
    GradOut,
    Lse,
    Delta,
    GradK,
    GradV,
    GradQAcc,
    SegmentsQ,
    SegmentsK,
    CuQ,
    QD0,
    QD1,
    QD2,
    DOD0,
    DOD1,
    DOD2,
    stride_qn,
    stride_qh,
    stride_kn,
    stride_kh,
    stride_vn,
    stride_vh,
    stride_don,
    stride_doh,
    stride_dkn,
    stride_dkh,
    stride_dvn,
    stride_dvh,
    Nq,
    Nk,
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
    ATOMIC_DQ: tl.constexpr,
    TMA: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    kv_head = tl.program_id(1).to(tl.int64)
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < Nk
    seg_cols, q_begin, q_full_end, q_end = tile_schedule(SegmentsK, CuQ, cols, col_ok, Nq, BLOCK_M)
    k0, k1, k2 = core.load_pieces(K + kv_head * stride_kh, cols, col_ok, stride_kn, D, D0, D1, D2)
    v0, v1, v2 = core.load_pieces(V + kv_head * stride_vh, cols, col_ok, stride_vn, D, D0, D1, D2)
    dk0, dk1, dk2 = core.zeros_pieces(BLOCK_N, D0, D1, D2)
    dv0, dv1, dv2 = core.zeros_pieces(BLOCK_N, D0, D1, D2)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        for start in range(q_begin, q_full_end, BLOCK_M):  # full blocks: no mask
            rows = start + tl.arange(0, BLOCK_M)
            dk0, dk1, dk2, dv0, dv1, dv2 = _dkdv_query_block(
                dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2, seg_cols,
                Q, GradOut, Lse, Delta, GradQAcc, SegmentsQ, QD0, QD1, QD2, DOD0, DOD1, DOD2,
                head, start, rows, rows < Nq,
                stride_qn, stride_qh, stride_don, stride_doh, Nq, H, scale, scale_log2,
                False, BLOCK_M, D, D0, D1, D2, ATOMIC_DQ, TMA, PRECISION,
            )  # fmt: skip
        for start in range(q_full_end, q_end, BLOCK_M):  # partial blocks: segment ids compared
            rows = start + tl.arange(0, BLOCK_M)
            dk0, dk1, dk2, dv0, dv1, dv2 = _dkdv_query_block(
                dk0, dk1, dk2, dv0, dv1, dv2, k0, k1, k2, v0, v1, v2, seg_cols,
                Q, GradOut, Lse, Delta, GradQAcc, SegmentsQ, QD0, QD1, QD2, DOD0, DOD1, DOD2,
                head, start, rows, rows < q_end,
                stride_qn, stride_qh, stride_don, stride_doh, Nq, H, scale, scale_log2,
                True, BLOCK_M, D, D0, D1, D2, ATOMIC_DQ, TMA, PRECISION,
            )  # fmt: skip
    core.store_pieces(
        GradK + kv_head * stride_dkh, cols, col_ok, stride_dkn, dk0 * scale, dk1 * scale, dk2 * scale, D, D0, D1, D2
    )
    core.store_pieces(GradV + kv_head * stride_dvh, cols, col_ok, stride_dvn, dv0, dv1, dv2, D, D0, D1, D2)


def segment_ids(cu_seqlens: torch.Tensor, tokens: int) -> torch.Tensor:
    """int32 [tokens]: the segment of each packed row, on cu_seqlens' device (no host sync). Clamped
    to [0, B) so that invalid boundaries cannot index past cu_seqlens."""
    positions = torch.arange(tokens, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    ids = torch.searchsorted(cu_seqlens, positions, right=True) - 1
    return ids.clamp_(0, max(cu_seqlens.numel() - 2, 0)).to(torch.int32)


def block_schedule(cu_seqlens_tile, cu_seqlens_other, tokens: int, other_tokens: int, tile: int, block: int):
    """PyTorch mirror of ``tile_schedule`` for every tile of ``tile`` rows: int64 [tiles, 3] of
    (begin, full_end, end) over the other side's rows (keys for query tiles, queries for key tiles)."""
    ids = segment_ids(cu_seqlens_tile, tokens).long()
    tiles = -(-tokens // tile)
    padded = torch.full((tiles * tile,), -1, dtype=torch.long, device=ids.device)
    padded[:tokens] = ids
    padded = padded.view(tiles, tile)
    first = torch.where(padded >= 0, padded, torch.iinfo(torch.long).max).amin(1)
    last = padded.amax(1)
    cu = cu_seqlens_other.long()
    begin = cu[first].clamp(0, other_tokens)
    end = torch.maximum(cu[last + 1], begin).clamp(max=other_tokens)
    full_end = begin + torch.where(first == last, (end - begin) // block, 0) * block
    return torch.stack([begin, full_end, end], 1)


def tile_schedules(cu_seqlens_tile, cu_seqlens_other, tokens: int, other_tokens: int, tile: int, block: int):
    """The schedule ``tile_schedule`` computes on the device for every tile: int32 [tiles, 3] of
    (begin, full_end, end) (what ``block_schedule`` mirrors)."""
    out = torch.empty(triton.cdiv(tokens, tile), 3, device=cu_seqlens_tile.device, dtype=torch.int32)
    if tokens:
        with device_guard(cu_seqlens_tile):
            _tile_schedule_kernel[(out.shape[0],)](
                segment_ids(cu_seqlens_tile, tokens),
                cu_seqlens_other,
                out,
                tokens,
                other_tokens,
                TILE=tile,
                BLOCK=block,
            )
    return out


@functools.cache
def _capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return major * 10 + minor


def capability(t: torch.Tensor) -> int:
    """Compute capability of t's CUDA device as 80, 90, ...; 0 for the CPU tensors the interpreter runs."""
    if t.device.type != "cuda":
        return 0
    return _capability(torch.cuda.current_device() if t.device.index is None else t.device.index)


# Forward tile configurations, (BLOCK_M, BLOCK_N, num_warps, num_stages), by head dim (the largest
# padded head dim each row serves). Hopper: 128-row tiles of 8 warps (two warpgroups issuing wgmma)
# over TMA-fed, software-pipelined key blocks, all without spills in the static report;
# tools/tune_attention.py sweeps the alternatives on a GPU. Ampere and the interpreter keep the
# pointer-path tiles: a head dim up to 64 that is not a multiple of 16 (masked lanes) spilled on
# sm_80 with 4 warps, so it takes 8.
HOPPER_FWD_CONFIGS = ((64, (128, 128, 8, 3)), (128, (128, 64, 8, 3)), (256, (128, 32, 8, 2)))
# Hopper tiles when the caller bounds every segment by one warpgroup's 64 rows (max_seqlen_q <= 64:
# Qwen2.5-VL's window layers): a 64-row tile of one warpgroup holds a whole window, so an aligned
# window's keys form one full block instead of two windows sharing a 128-row tile and masking half
# of every score block.
HOPPER_WINDOW_CONFIG = (64, 64, 4, 3)


def _block_sizes(D: int, arch: int = 0, max_seqlen_q=None) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages or None for Triton's default) of the forward.
    ``max_seqlen_q`` is the caller's host-side bound on the query segments, if given (never read
    from the device)."""
    if arch >= 90:
        if max_seqlen_q is not None and max_seqlen_q <= HOPPER_WINDOW_CONFIG[0]:
            return HOPPER_WINDOW_CONFIG
        padded = sum(head_dim_pieces(D))
        return next(config for bound, config in HOPPER_FWD_CONFIGS if padded <= bound)
    if D <= 128:
        return 128, 64, 8 if D > 64 or D % 16 else 4, None
    return 64, 32, 8, None


# Backward tiles (rows of the looping side kept small): (BLOCK_M, BLOCK_N) of the dQ kernel, which
# loops over key blocks, and of the dK/dV kernel, which loops over query blocks. 64 x 64 tiles spilled
# on sm_80 (D = 72, 80) and sm_90a (D = 128) in the static report.
BWD_DQ_BLOCKS = (64, 32)


def _dkdv_blocks(D: int) -> tuple:
    # A head dim that is not a multiple of 16 (SigLIP's 72) loses 16-byte vector loads and still
    # spilled on sm_80 with 32-row query blocks (8 stores / 4 loads); 16-row blocks do not.
    return (32, 64) if D % 16 == 0 else (16, 64)


def _bwd_num_warps(D: int) -> int:
    return 4 if D <= 64 else 8


def _token_head_strides(*tensors) -> tuple:
    """(token stride, head stride) of each [N, heads, D] tensor, as the kernels take them."""
    return tuple(stride for t in tensors for stride in kernel_strides(t)[:2])


def varlen_attention(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q=None,
    max_seqlen_k=None,
    softmax_scale=None,
    *,
    block_m=None,
    block_n=None,
    num_warps=None,
    num_stages=None,
    tma=None,
):
    """The forward launcher: (out [Nq, H, D], lse [H, Nq] float32). Block sizes, warps, pipeline
    stages and TMA may be overridden (the interpreter tests use small blocks to cross many tile and
    segment boundaries, and force TMA; tools/tune_attention.py times the choices on a GPU). ``tma``
    None reads through TMA descriptors on sm_90+ where q, k and v allow it (``tma_capable``)."""
    q, k, v = unit_stride_d(q, k, v)
    Nq, H, D = q.shape
    Nk, Hk, _ = k.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(H, Nq, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    arch = capability(q)
    bm, bn, warps, stages = _block_sizes(D, arch, max_seqlen_q)
    bm, bn, warps, stages = block_m or bm, block_n or bn, num_warps or warps, num_stages or stages
    pieces = head_dim_pieces(D)
    use_tma = all(core.tma_capable(t) for t in (q, k, v)) and (arch >= 90 if tma is None else tma)
    if use_tma:
        descriptors = (
            core.piece_descriptors(q, bm, 0, pieces)
            + core.piece_descriptors(k, bn, 0, pieces)
            + core.piece_descriptors(v, bn, 0, pieces)
        )
    else:
        descriptors = (None,) * 9
    with device_guard(q):
        seg_q, seg_k = segment_ids(cu_seqlens_q, Nq), segment_ids(cu_seqlens_k, Nk)
        _varlen_attention_fwd_kernel[(triton.cdiv(Nq, bm), H)](
            q,
            k,
            v,
            out,
            lse,
            seg_q,
            seg_k,
            cu_seqlens_k,
            *descriptors,
            *_token_head_strides(q, k, v, out),
            Nq,
            Nk,
            scale * LOG2E,
            GROUP=H // Hk,
            D=D,
            D0=pieces[0],
            D1=pieces[1],
            D2=pieces[2],
            BLOCK_M=bm,
            BLOCK_N=bn,
            TMA=use_tma,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
            num_warps=warps,
            **({} if stages is None else {"num_stages": stages}),
        )
    return out, lse


def varlen_attention_backward(
    grad_out,
    q,
    k,
    v,
    out,
    lse,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q=None,
    max_seqlen_k=None,
    softmax_scale=None,
    *,
    block_m=None,
    block_n=None,
    num_warps=None,
    atomic_dq=False,
    needs=(True, True, True),
    tma=None,
):
    """The backward launcher: (grad_q, grad_k, grad_v). Deterministic by default; ``atomic_dq``
    computes dQ inside the dK/dV kernel with float32 atomics instead of a separate dQ pass (when
    grad_k or grad_v is needed too).
    ``needs`` (which of grad_q, grad_k, grad_v are wanted, as ``ctx.needs_input_grad``) skips the
    dQ kernel when grad_q is not needed and the dK/dV kernel when neither grad_k nor grad_v is (a
    skipped gradient comes back as zeros). ``tma`` None reads the looped-over operands (K and V of
    the dQ kernel, Q and dO of the dK/dV kernel) through TMA descriptors on sm_90+ where they allow
    it."""
    grad_out, q, k, v, out = unit_stride_d(grad_out, q, k, v, out)
    Nq, H, D = q.shape
    Nk, Hk, _ = k.shape
    grad_q = torch.zeros_like(q, memory_format=torch.contiguous_format)
    grad_k = torch.zeros_like(k, memory_format=torch.contiguous_format)
    grad_v = torch.zeros_like(v, memory_format=torch.contiguous_format)
    need_q, need_kv = needs[0], needs[1] or needs[2]
    if q.numel() == 0 or k.numel() == 0 or not (need_q or need_kv):
        return grad_q, grad_k, grad_v
    atomic_dq = atomic_dq and need_q and need_kv  # dQ alone: the dQ kernel, without the dK/dV work
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    dq_blocks = (block_m or BWD_DQ_BLOCKS[0], block_n or BWD_DQ_BLOCKS[1])
    dkdv_blocks = (block_m or _dkdv_blocks(D)[0], block_n or _dkdv_blocks(D)[1])
    D0, D1, D2 = pieces = head_dim_pieces(D)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    arch = capability(q)
    use_tma = all(core.tma_capable(t) for t in (q, k, v, grad_out)) and (arch >= 90 if tma is None else tma)
    if use_tma:
        dq_descriptors = core.piece_descriptors(k, dq_blocks[1], 0, pieces) + core.piece_descriptors(
            v, dq_blocks[1], 0, pieces
        )
        dkdv_descriptors = core.piece_descriptors(q, dkdv_blocks[0], 0, pieces) + core.piece_descriptors(
            grad_out, dkdv_blocks[0], 0, pieces
        )
    else:
        dq_descriptors = dkdv_descriptors = (None,) * 6
    with device_guard(q):
        delta = (grad_out.float() * out.float()).sum(-1).t().contiguous()  # [H, Nq]: rowsum(dO * O)
        lse = lse.contiguous()
        seg_q, seg_k = segment_ids(cu_seqlens_q, Nq), segment_ids(cu_seqlens_k, Nk)
        common = dict(
            GROUP=H // Hk,
            D=D,
            D0=D0,
            D1=D1,
            D2=D2,
            TMA=use_tma,
            PRECISION=precision,
            num_warps=num_warps or _bwd_num_warps(D),
        )
        if need_q and not atomic_dq:
            _varlen_attention_bwd_dq_kernel[(triton.cdiv(Nq, dq_blocks[0]), H)](
                q,
                k,
                v,
                grad_out,
                lse,
                delta,
                grad_q,
                seg_q,
                seg_k,
                cu_seqlens_k,
                *dq_descriptors,
                *_token_head_strides(q, k, v, grad_out, grad_q),
                Nq,
                Nk,
                scale,
                scale * LOG2E,
                BLOCK_M=dq_blocks[0],
                BLOCK_N=dq_blocks[1],
                **common,
            )
        if need_kv or atomic_dq:
            grad_q_acc = torch.zeros(Nq, H, D, device=q.device, dtype=torch.float32) if atomic_dq else delta
            _varlen_attention_bwd_dkdv_kernel[(triton.cdiv(Nk, dkdv_blocks[1]), Hk)](
                q,
                k,
                v,
                grad_out,
                lse,
                delta,
                grad_k,
                grad_v,
                grad_q_acc,
                seg_q,
                seg_k,
                cu_seqlens_q,
                *dkdv_descriptors,
                *_token_head_strides(q, k, v, grad_out, grad_k, grad_v),
                Nq,
                Nk,
                H,
                scale,
                scale * LOG2E,
                BLOCK_M=dkdv_blocks[0],
                BLOCK_N=dkdv_blocks[1],
                ATOMIC_DQ=atomic_dq,
                **common,
            )
            if atomic_dq:
                grad_q.copy_(grad_q_acc)
    return grad_q, grad_k, grad_v


def _specs():
    """Representative launches for the static kernel report (Qwen2.5-VL D=80, SigLIP-so400m D=72,
    InternViT-6B D=128, CLIP ViT-L/14 D=64, and D=8 of the tiny test configurations (one masked
    16-wide piece); bf16, the GPU dtype of these towers). The forward is compiled in its Ampere
    configuration for both archs and in its Hopper one for sm_90a, through TMA (``:fwd-hopper``) and
    through pointers (``:fwd-hopper-ptr``, operands whose strides rule TMA out)."""
    specs = []
    for config, D, H, Hk in (
        ("qwen2.5-vl-vision", 80, 16, 16),
        ("siglip-so400m", 72, 16, 16),
        ("internvit-6b", 128, 25, 25),
        ("clip-vit-large", 64, 16, 16),
        ("tiny-test-config", 8, 4, 2),
    ):
        D0, D1, D2 = head_dim_pieces(D)
        N = 16384
        qkv = dict(stride_qn=H * D, stride_qh=D, stride_kn=Hk * D, stride_kh=D, stride_vn=Hk * D, stride_vh=D)
        pieces = dict(GROUP=H // Hk, D=D, D0=D0, D1=D1, D2=D2, PRECISION="tf32")
        variants = [("fwd", 80, False, None), ("fwd-hopper", 90, True, None), ("fwd-hopper-ptr", 90, False, None)]
        if D == 80:  # Qwen2.5-VL's window layers: 64-token windows, max_seqlen_q = 64
            variants.append(("fwd-hopper-window", 90, True, 64))
        for label, arch, tma, max_seqlen_q in variants:
            bm, bn, warps, stages = _block_sizes(D, arch, max_seqlen_q)
            descriptors = {
                f"{name}D{index}": core.descriptor_type(torch.bfloat16, rows, 0, 3, width) if tma else None
                for name, rows in (("Q", bm), ("K", bn), ("V", bn))
                for index, width in enumerate((D0, D1, D2))
            }
            specs.append(
                make_spec(
                    _varlen_attention_fwd_kernel,
                    f"{config}:{label}",
                    warps,
                    dict(pieces, BLOCK_M=bm, BLOCK_N=bn, TMA=tma),
                    num_stages=stages,
                    archs=("sm_80", "sm_90a") if arch < 90 else ("sm_90a",),
                    Q=torch.bfloat16,
                    K=torch.bfloat16,
                    V=torch.bfloat16,
                    Out=torch.bfloat16,
                    Lse=torch.float32,
                    SegmentsQ=torch.int32,
                    SegmentsK=torch.int32,
                    CuK=torch.int32,
                    **descriptors,
                    **qkv,
                    stride_on=H * D,
                    stride_oh=D,
                    Nq=N,
                    Nk=N,
                    scale_log2=D**-0.5 * LOG2E,
                )
            )
        bwd_warps = _bwd_num_warps(D)
        dq_m, dq_n = BWD_DQ_BLOCKS
        dkdv_m, dkdv_n = _dkdv_blocks(D)
        grads = dict(
            Q=torch.bfloat16,
            K=torch.bfloat16,
            V=torch.bfloat16,
            GradOut=torch.bfloat16,
            Lse=torch.float32,
            Delta=torch.float32,
            SegmentsQ=torch.int32,
            SegmentsK=torch.int32,
            **qkv,
            stride_don=H * D,
            stride_doh=D,
            Nq=N,
            Nk=N,
            scale=D**-0.5,
            scale_log2=D**-0.5 * LOG2E,
        )
        # Backward: the pointer path for both archs and the TMA path (Hopper) for sm_90a; the
        # atomic-dQ variant of the dK/dV kernel for the Qwen2.5-VL tower (the backward shape the GPU
        # benchmark compares both variants on).
        for suffix, tma in (("", False), ("-hopper", True)):
            archs = ("sm_90a",) if tma else ("sm_80", "sm_90a")
            dq_descriptors = {
                f"{name}D{index}": core.descriptor_type(torch.bfloat16, dq_n, 0, 3, width) if tma else None
                for name in ("K", "V")
                for index, width in enumerate((D0, D1, D2))
            }
            specs.append(
                make_spec(
                    _varlen_attention_bwd_dq_kernel,
                    f"{config}:bwd{suffix}",
                    bwd_warps,
                    dict(pieces, BLOCK_M=dq_m, BLOCK_N=dq_n, TMA=tma),
                    archs=archs,
                    **grads,
                    **dq_descriptors,
                    GradQ=torch.bfloat16,
                    CuK=torch.int32,
                    stride_dqn=H * D,
                    stride_dqh=D,
                )
            )
            dkdv_descriptors = {
                f"{name}D{index}": core.descriptor_type(torch.bfloat16, dkdv_m, 0, 3, width) if tma else None
                for name in ("Q", "DO")
                for index, width in enumerate((D0, D1, D2))
            }
            for label, atomic in (("bwd", False), ("bwd-atomic-dq", True))[: 2 if D == 80 else 1]:
                specs.append(
                    make_spec(
                        _varlen_attention_bwd_dkdv_kernel,
                        f"{config}:{label}{suffix}",
                        bwd_warps,
                        dict(pieces, BLOCK_M=dkdv_m, BLOCK_N=dkdv_n, ATOMIC_DQ=atomic, TMA=tma),
                        archs=archs,
                        **grads,
                        **dkdv_descriptors,
                        GradK=torch.bfloat16,
                        GradV=torch.bfloat16,
                        GradQAcc=torch.float32,
                        CuQ=torch.int32,
                        stride_dkn=Hk * D,
                        stride_dkh=D,
                        stride_dvn=Hk * D,
                        stride_dvh=D,
                        H=H,
                    )
                )
    return specs


KERNEL_SPECS.extend(_specs())
