"""Triton kernels of block-diagonal packed (varlen) attention: the CUDA kernels of the public ops
``vlmops::varlen_attention`` and ``vlmops::varlen_attention_backward`` (attention's CUDA owner is
Triton; there is no CUDA C++ variant). The launchers take inputs that the op's C++ entry has checked
(csrc/triton/varlen_attention.cpp); they are registered as the CUDA kernels of the private ops
``vlmops::_varlen_attention_triton`` and ``_varlen_attention_backward_triton`` by vlmops.ops.registry.

Same semantics, shapes and outputs as the C++ kernels (csrc/cpu/varlen_attention.cpp), for float32,
float16 and bfloat16 (float64 is CPU-only).

Design:
- Tiles are BLOCK_M consecutive rows of the packed sequence, whatever the segments: the grid is
  ``cdiv(Nq, BLOCK_M) x H``, known from shapes, so nothing reads cu_seqlens on the host (no sync,
  max_seqlen never needed). Each tile reads the segment ids of its rows (``segment_ids``, built on
  the device with searchsorted), iterates over the keys of its first to last segment and masks
  scores whose query and key segments differ (block-diagonal masking inside the tile). Short
  segments (Qwen2.5-VL's 64-token windows, 64-256-token video frames) are therefore packed several
  per tile instead of wasting a padded tile each; a long segment costs at most one partial tile at
  each of its ends.
- Any head dim from 1 to 256: D is padded only to the next multiple of 16 (the padded lanes are
  loaded as zeros and never stored) and split into up to three power-of-two pieces (80 = 64 + 16,
  72 -> 64 + 16, 112 = 64 + 32 + 16): every ``tl.dot`` over D is a sum of dots over the pieces, so at
  most 8 columns of math per tile are wasted for D >= 16 (a D below 16 runs as one 16 piece). The
  exception is a padded 240 (D = 232 or 240), which would take four pieces and runs as one 256 piece.
- Strides are honoured as given (a copy only for a D that is not unit-stride); a size-1 dim's stride
  is replaced by its contiguous value (``kernel_strides``). Batch and head offsets are int64, row
  offsets are int64 products: views whose offsets pass 2^31 elements index correctly.
- Invalid cu_seqlens are not detected on the GPU (that would synchronize) but cannot cause
  out-of-bounds reads: segment ids are clamped to [0, B), key and query ranges to [0, N].
- Backward (flash-attention 2, probabilities recomputed from the saved log-sum-exp): one kernel for
  dQ per query tile and one for dK/dV per key tile, which loops over the query heads of its k/v
  head. No atomics: the backward is deterministic.
"""

import torch
import triton
import triton.language as tl

from vlmops.triton import KERNEL_SPECS, device_guard, make_spec

LOG2E = 1.4426950408889634


def head_dim_pieces(D: int) -> tuple:
    """(D0, D1, D2): power-of-two widths (0 = absent) summing to D rounded up to a multiple of 16."""
    padded = -(-D // 16) * 16
    pieces = []
    rest = padded
    while rest:
        pieces.append(1 << (rest.bit_length() - 1))
        rest -= pieces[-1]
    if len(pieces) > 3:  # only 240 = 128 + 64 + 32 + 16: one 256 piece wastes 16 columns instead
        pieces = [triton.next_power_of_2(padded)]
    return tuple(pieces + [0] * (3 - len(pieces)))


@triton.jit
def _load_pieces(base, rows, row_ok, stride_row, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr):
    """Rows [R, D] of one head as up to three column pieces; an absent piece repeats piece 0 (unused)."""
    offsets = rows.to(tl.int64)[:, None] * stride_row
    cols0 = tl.arange(0, D0)
    p0 = tl.load(base + offsets + cols0[None, :], mask=row_ok[:, None] & (cols0 < D)[None, :], other=0.0)
    p1 = p0
    p2 = p0
    if D1 > 0:
        cols1 = D0 + tl.arange(0, D1)
        p1 = tl.load(base + offsets + cols1[None, :], mask=row_ok[:, None] & (cols1 < D)[None, :], other=0.0)
    if D2 > 0:
        cols2 = D0 + D1 + tl.arange(0, D2)
        p2 = tl.load(base + offsets + cols2[None, :], mask=row_ok[:, None] & (cols2 < D)[None, :], other=0.0)
    return p0, p1, p2


@triton.jit
def _store_pieces(
    base, rows, row_ok, stride_row, p0, p1, p2, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr
):
    offsets = rows.to(tl.int64)[:, None] * stride_row
    cols0 = tl.arange(0, D0)
    tl.store(base + offsets + cols0[None, :], p0.to(base.dtype.element_ty), mask=row_ok[:, None] & (cols0 < D)[None, :])
    if D1 > 0:
        cols1 = D0 + tl.arange(0, D1)
        tl.store(
            base + offsets + cols1[None, :], p1.to(base.dtype.element_ty), mask=row_ok[:, None] & (cols1 < D)[None, :]
        )
    if D2 > 0:
        cols2 = D0 + D1 + tl.arange(0, D2)
        tl.store(
            base + offsets + cols2[None, :], p2.to(base.dtype.element_ty), mask=row_ok[:, None] & (cols2 < D)[None, :]
        )


@triton.jit
def _dot_nt(a0, a1, a2, b0, b1, b2, D1: tl.constexpr, D2: tl.constexpr, PRECISION: tl.constexpr):
    """a @ b^T over the head dim, summed over its pieces: [R, D] x [C, D] -> [R, C] in float32."""
    acc = tl.dot(a0, tl.trans(b0), input_precision=PRECISION)
    if D1 > 0:
        acc += tl.dot(a1, tl.trans(b1), input_precision=PRECISION)
    if D2 > 0:
        acc += tl.dot(a2, tl.trans(b2), input_precision=PRECISION)
    return acc


@triton.jit
def _segment_range(Segments, Cu, index, index_ok, limit):
    """Segment ids of a tile's rows and the [begin, end) rows of the other side for its first-to-last
    segments, clamped to [0, limit] so bad boundaries cannot read out of bounds."""
    segments = tl.load(Segments + index, mask=index_ok, other=-1)
    first = tl.min(tl.where(index_ok, segments, 2147483647), 0)
    last = tl.max(segments, 0)
    begin = tl.minimum(tl.maximum(tl.load(Cu + first), 0), limit)
    end = tl.minimum(tl.maximum(tl.load(Cu + last + 1), begin), limit)
    return segments, begin, end


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
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)  # int64 head offsets: head * stride may pass 2^31
    kv_head = head // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Nq
    seg_rows, k_begin, k_end = _segment_range(SegmentsQ, CuK, rows, row_ok, Nk)
    q0, q1, q2 = _load_pieces(Q + head * stride_qh, rows, row_ok, stride_qn, D, D0, D1, D2)
    acc0 = tl.zeros([BLOCK_M, D0], tl.float32)
    acc1 = tl.zeros([BLOCK_M, D1 if D1 > 0 else D0], tl.float32)
    acc2 = tl.zeros([BLOCK_M, D2 if D2 > 0 else D0], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start in range(k_begin, k_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < k_end
        seg_cols = tl.load(SegmentsK + cols, mask=col_ok, other=-2)
        k0, k1, k2 = _load_pieces(K + kv_head * stride_kh, cols, col_ok, stride_kn, D, D0, D1, D2)
        s = _dot_nt(q0, q1, q2, k0, k1, k2, D1, D2, PRECISION) * scale_log2
        s = tl.where(seg_rows[:, None] == seg_cols[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        p = p.to(V.dtype.element_ty)
        v0, v1, v2 = _load_pieces(V + kv_head * stride_vh, cols, col_ok, stride_vn, D, D0, D1, D2)
        acc0 = acc0 * alpha[:, None] + tl.dot(p, v0, input_precision=PRECISION)
        if D1 > 0:
            acc1 = acc1 * alpha[:, None] + tl.dot(p, v1, input_precision=PRECISION)
        if D2 > 0:
            acc2 = acc2 * alpha[:, None] + tl.dot(p, v2, input_precision=PRECISION)
        m_i = m_new
    has_keys = l_i > 0.0
    inv = tl.where(has_keys, 1.0 / tl.where(has_keys, l_i, 1.0), 0.0)
    lse = tl.where(has_keys, (m_i + tl.log2(tl.where(has_keys, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    tl.store(Lse + head * Nq + rows, lse, mask=row_ok)
    _store_pieces(
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
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)  # int64 head offsets: head * stride may pass 2^31
    kv_head = head // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Nq
    seg_rows, k_begin, k_end = _segment_range(SegmentsQ, CuK, rows, row_ok, Nk)
    q0, q1, q2 = _load_pieces(Q + head * stride_qh, rows, row_ok, stride_qn, D, D0, D1, D2)
    do0, do1, do2 = _load_pieces(GradOut + head * stride_doh, rows, row_ok, stride_don, D, D0, D1, D2)
    lse2 = tl.load(Lse + head * Nq + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)  # rows without keys: every score is masked
    delta = tl.load(Delta + head * Nq + rows, mask=row_ok, other=0.0)
    dq0 = tl.zeros([BLOCK_M, D0], tl.float32)
    dq1 = tl.zeros([BLOCK_M, D1 if D1 > 0 else D0], tl.float32)
    dq2 = tl.zeros([BLOCK_M, D2 if D2 > 0 else D0], tl.float32)
    for start in range(k_begin, k_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < k_end
        seg_cols = tl.load(SegmentsK + cols, mask=col_ok, other=-2)
        k0, k1, k2 = _load_pieces(K + kv_head * stride_kh, cols, col_ok, stride_kn, D, D0, D1, D2)
        v0, v1, v2 = _load_pieces(V + kv_head * stride_vh, cols, col_ok, stride_vn, D, D0, D1, D2)
        s = _dot_nt(q0, q1, q2, k0, k1, k2, D1, D2, PRECISION) * scale_log2
        s = tl.where(seg_rows[:, None] == seg_cols[None, :], s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = _dot_nt(do0, do1, do2, v0, v1, v2, D1, D2, PRECISION)
        ds = (p * (dp - delta[:, None])).to(K.dtype.element_ty)
        dq0 += tl.dot(ds, k0, input_precision=PRECISION)
        if D1 > 0:
            dq1 += tl.dot(ds, k1, input_precision=PRECISION)
        if D2 > 0:
            dq2 += tl.dot(ds, k2, input_precision=PRECISION)
    _store_pieces(
        GradQ + head * stride_dqh, rows, row_ok, stride_dqn, dq0 * scale, dq1 * scale, dq2 * scale, D, D0, D1, D2
    )


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
    SegmentsQ,
    SegmentsK,
    CuQ,
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
    scale,
    scale_log2,
    GROUP: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    kv_head = tl.program_id(1).to(tl.int64)
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < Nk
    seg_cols, q_begin, q_end = _segment_range(SegmentsK, CuQ, cols, col_ok, Nq)
    k0, k1, k2 = _load_pieces(K + kv_head * stride_kh, cols, col_ok, stride_kn, D, D0, D1, D2)
    v0, v1, v2 = _load_pieces(V + kv_head * stride_vh, cols, col_ok, stride_vn, D, D0, D1, D2)
    dk0 = tl.zeros([BLOCK_N, D0], tl.float32)
    dk1 = tl.zeros([BLOCK_N, D1 if D1 > 0 else D0], tl.float32)
    dk2 = tl.zeros([BLOCK_N, D2 if D2 > 0 else D0], tl.float32)
    dv0 = tl.zeros([BLOCK_N, D0], tl.float32)
    dv1 = tl.zeros([BLOCK_N, D1 if D1 > 0 else D0], tl.float32)
    dv2 = tl.zeros([BLOCK_N, D2 if D2 > 0 else D0], tl.float32)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        for start in range(q_begin, q_end, BLOCK_M):
            rows = start + tl.arange(0, BLOCK_M)
            row_ok = rows < q_end
            seg_rows = tl.load(SegmentsQ + rows, mask=row_ok, other=-1)
            q0, q1, q2 = _load_pieces(Q + head * stride_qh, rows, row_ok, stride_qn, D, D0, D1, D2)
            do0, do1, do2 = _load_pieces(GradOut + head * stride_doh, rows, row_ok, stride_don, D, D0, D1, D2)
            lse2 = tl.load(Lse + head * Nq + rows, mask=row_ok, other=0.0) * 1.4426950408889634
            lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)
            delta = tl.load(Delta + head * Nq + rows, mask=row_ok, other=0.0)
            # Transposed tiles [keys, queries]: the accumulated gradients are per key.
            s_t = _dot_nt(k0, k1, k2, q0, q1, q2, D1, D2, PRECISION) * scale_log2
            s_t = tl.where(seg_cols[:, None] == seg_rows[None, :], s_t, float("-inf"))
            p_t = tl.exp2(s_t - lse2[None, :])
            dp_t = _dot_nt(v0, v1, v2, do0, do1, do2, D1, D2, PRECISION)
            ds_t = (p_t * (dp_t - delta[None, :])).to(Q.dtype.element_ty)
            p_t = p_t.to(GradOut.dtype.element_ty)
            dv0 += tl.dot(p_t, do0, input_precision=PRECISION)
            dk0 += tl.dot(ds_t, q0, input_precision=PRECISION)
            if D1 > 0:
                dv1 += tl.dot(p_t, do1, input_precision=PRECISION)
                dk1 += tl.dot(ds_t, q1, input_precision=PRECISION)
            if D2 > 0:
                dv2 += tl.dot(p_t, do2, input_precision=PRECISION)
                dk2 += tl.dot(ds_t, q2, input_precision=PRECISION)
    _store_pieces(
        GradK + kv_head * stride_dkh, cols, col_ok, stride_dkn, dk0 * scale, dk1 * scale, dk2 * scale, D, D0, D1, D2
    )
    _store_pieces(GradV + kv_head * stride_dvh, cols, col_ok, stride_dvn, dv0, dv1, dv2, D, D0, D1, D2)


def segment_ids(cu_seqlens: torch.Tensor, tokens: int) -> torch.Tensor:
    """int32 [tokens]: the segment of each packed row, on cu_seqlens' device (no host sync). Clamped
    to [0, B) so that invalid boundaries cannot index past cu_seqlens."""
    positions = torch.arange(tokens, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    ids = torch.searchsorted(cu_seqlens, positions, right=True) - 1
    return ids.clamp_(0, max(cu_seqlens.numel() - 2, 0)).to(torch.int32)


def _block_sizes(D: int) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps) of the forward on a GPU. A head dim up to 64 that is not a multiple
    of 16 (masked lanes) spilled on sm_80 with 4 warps (D = 1-15 and 56 in the static report): 8 warps."""
    if D <= 128:
        return 128, 64, 8 if D > 64 or D % 16 else 4
    return 64, 32, 8


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


def unit_stride_d(*tensors):
    """The kernels step along D with stride 1 and honour every other stride: a tensor strided along D
    (e.g. an expanded gradient, all strides 0) is copied, any other is passed as is."""
    return tuple(t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous() for t in tensors)


def kernel_strides(t: torch.Tensor) -> tuple:
    """t's strides as the kernels take them: a size-1 dim indexes nothing and torch leaves its stride
    arbitrary (a [1, H, D] view may have stride(0) == 1), so it gets its contiguous value instead and
    the JIT specializes on the strides that matter only."""
    strides, contiguous = [], 1
    for size, stride in zip(reversed(t.shape), reversed(t.stride())):
        strides.append(stride if size > 1 else contiguous)
        contiguous *= max(size, 1)
    return tuple(reversed(strides))


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
):
    """The forward launcher: (out [Nq, H, D], lse [H, Nq] float32). Block sizes, warps and pipeline
    stages may be overridden (the interpreter tests use small blocks to cross many tile and segment
    boundaries; tools/tune_attention.py times the choices on a GPU)."""
    q, k, v = unit_stride_d(q, k, v)
    Nq, H, D = q.shape
    Nk, Hk, _ = k.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(H, Nq, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    bm, bn, warps = _block_sizes(D)
    bm, bn, warps = block_m or bm, block_n or bn, num_warps or warps
    D0, D1, D2 = head_dim_pieces(D)
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
            *_token_head_strides(q, k, v, out),
            Nq,
            Nk,
            scale * LOG2E,
            GROUP=H // Hk,
            D=D,
            D0=D0,
            D1=D1,
            D2=D2,
            BLOCK_M=bm,
            BLOCK_N=bn,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
            num_warps=warps,
            **({} if num_stages is None else {"num_stages": num_stages}),
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
):
    """The backward launcher: (grad_q, grad_k, grad_v), deterministic (no atomics)."""
    grad_out, q, k, v, out = unit_stride_d(grad_out, q, k, v, out)
    Nq, H, D = q.shape
    Nk, Hk, _ = k.shape
    grad_q = torch.zeros_like(q, memory_format=torch.contiguous_format)
    grad_k = torch.zeros_like(k, memory_format=torch.contiguous_format)
    grad_v = torch.zeros_like(v, memory_format=torch.contiguous_format)
    if q.numel() == 0 or k.numel() == 0:
        return grad_q, grad_k, grad_v
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    dq_blocks = (block_m or BWD_DQ_BLOCKS[0], block_n or BWD_DQ_BLOCKS[1])
    dkdv_blocks = (block_m or _dkdv_blocks(D)[0], block_n or _dkdv_blocks(D)[1])
    D0, D1, D2 = head_dim_pieces(D)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    with device_guard(q):
        delta = (grad_out.float() * out.float()).sum(-1).t().contiguous()  # [H, Nq]: rowsum(dO * O)
        lse = lse.contiguous()
        seg_q, seg_k = segment_ids(cu_seqlens_q, Nq), segment_ids(cu_seqlens_k, Nk)
        common = dict(
            GROUP=H // Hk, D=D, D0=D0, D1=D1, D2=D2, PRECISION=precision, num_warps=num_warps or _bwd_num_warps(D)
        )
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
            *_token_head_strides(q, k, v, grad_out, grad_q),
            Nq,
            Nk,
            scale,
            scale * LOG2E,
            BLOCK_M=dq_blocks[0],
            BLOCK_N=dq_blocks[1],
            **common,
        )
        _varlen_attention_bwd_dkdv_kernel[(triton.cdiv(Nk, dkdv_blocks[1]), Hk)](
            q,
            k,
            v,
            grad_out,
            lse,
            delta,
            grad_k,
            grad_v,
            seg_q,
            seg_k,
            cu_seqlens_q,
            *_token_head_strides(q, k, v, grad_out, grad_k, grad_v),
            Nq,
            Nk,
            scale,
            scale * LOG2E,
            BLOCK_M=dkdv_blocks[0],
            BLOCK_N=dkdv_blocks[1],
            **common,
        )
    return grad_q, grad_k, grad_v


def _specs():
    """Representative launches for the static kernel report (Qwen2.5-VL D=80, SigLIP-so400m D=72,
    InternViT-6B D=128, and D=8 of the tiny test configurations (one masked 16-wide piece); bf16, the
    GPU dtype of these towers)."""
    specs = []
    for config, D, H, Hk in (
        ("qwen2.5-vl-vision", 80, 16, 16),
        ("siglip-so400m", 72, 16, 16),
        ("internvit-6b", 128, 25, 25),
        ("tiny-test-config", 8, 4, 2),
    ):
        D0, D1, D2 = head_dim_pieces(D)
        N = 16384
        qkv = dict(stride_qn=H * D, stride_qh=D, stride_kn=Hk * D, stride_kh=D, stride_vn=Hk * D, stride_vh=D)
        bm, bn, warps = _block_sizes(D)
        pieces = dict(GROUP=H // Hk, D=D, D0=D0, D1=D1, D2=D2, PRECISION="tf32")
        specs.append(
            make_spec(
                _varlen_attention_fwd_kernel,
                f"{config}:fwd",
                warps,
                dict(pieces, BLOCK_M=bm, BLOCK_N=bn),
                Q=torch.bfloat16,
                K=torch.bfloat16,
                V=torch.bfloat16,
                Out=torch.bfloat16,
                Lse=torch.float32,
                SegmentsQ=torch.int32,
                SegmentsK=torch.int32,
                CuK=torch.int32,
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
        specs.append(
            make_spec(
                _varlen_attention_bwd_dq_kernel,
                f"{config}:bwd",
                bwd_warps,
                dict(pieces, BLOCK_M=dq_m, BLOCK_N=dq_n),
                Q=torch.bfloat16,
                K=torch.bfloat16,
                V=torch.bfloat16,
                GradOut=torch.bfloat16,
                Lse=torch.float32,
                Delta=torch.float32,
                GradQ=torch.bfloat16,
                SegmentsQ=torch.int32,
                SegmentsK=torch.int32,
                CuK=torch.int32,
                **qkv,
                stride_don=H * D,
                stride_doh=D,
                stride_dqn=H * D,
                stride_dqh=D,
                Nq=N,
                Nk=N,
                scale=D**-0.5,
                scale_log2=D**-0.5 * LOG2E,
            )
        )
        specs.append(
            make_spec(
                _varlen_attention_bwd_dkdv_kernel,
                f"{config}:bwd",
                bwd_warps,
                dict(pieces, BLOCK_M=dkdv_m, BLOCK_N=dkdv_n),
                Q=torch.bfloat16,
                K=torch.bfloat16,
                V=torch.bfloat16,
                GradOut=torch.bfloat16,
                Lse=torch.float32,
                Delta=torch.float32,
                GradK=torch.bfloat16,
                GradV=torch.bfloat16,
                SegmentsQ=torch.int32,
                SegmentsK=torch.int32,
                CuQ=torch.int32,
                **qkv,
                stride_don=H * D,
                stride_doh=D,
                stride_dkn=Hk * D,
                stride_dkh=D,
                stride_dvn=Hk * D,
                stride_dvh=D,
                Nq=N,
                Nk=N,
                scale=D**-0.5,
                scale_log2=D**-0.5 * LOG2E,
            )
        )
    return specs


KERNEL_SPECS.extend(_specs())
