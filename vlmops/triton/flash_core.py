"""The flash-attention core that vlmops' Triton attention kernels share (varlen_attention and
gated_cross_attention): head-dim pieces, tile loads and stores (pointer or TMA tensor-descriptor),
the QK^T dot, the online-softmax step with P @ V accumulation, the log-sum-exp epilogue, and the
flash-attention 2 backward steps (dQ per query tile, dK/dV per key tile). The families differ only in
which keys a query row may see: they compute that mask, or classify a key block as fully visible and
call the core without one.

Head dims: any D from 1 to 256 is padded only to the next multiple of 16 (the padded lanes load as
zeros and are never stored) and split into up to three power-of-two pieces (80 = 64 + 16, 72 -> 64 +
16, 112 = 64 + 32 + 16): every dot over D is a sum of dots over the pieces. An absent piece is
carried as a copy of piece 0 and never used (``D1 == 0`` / ``D2 == 0`` are compile-time).

Data movement: with ``TMA`` (Hopper) a tile's pieces come from host-built tensor descriptors, one
per piece, whose base starts at the piece's first column and whose shape ends at D, so the copy
engine zero-fills the padded lanes and the rows past the tensor's end; ``coords`` gives the tile's
first element in the descriptor's dims (e.g. ``(row, head, 0)``). Without it, masked pointer loads
(rows given as an index vector) read the same values. Rows inside the tensor but outside the tile's
valid range are read by TMA as they are: in partial blocks, callers zero those that enter a product
with a masked probability (``keep_rows``: V in the forward, K and V or Q and dO in the backward), so
that a non-finite value in another segment cannot reach a row through a zero probability.
"""

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

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


def tma_capable(t: torch.Tensor) -> bool:
    """Whether t can be read through TMA tensor descriptors: a 16-byte aligned base, unit-stride D
    with at least 16 bytes per piece, positive 16-byte aligned leading strides, and no empty dim."""
    size = t.element_size()
    strides = kernel_strides(t)
    return (
        t.numel() > 0
        and t.data_ptr() % 16 == 0
        and strides[-1] == 1
        and all(0 < stride and stride * size % 16 == 0 for stride in strides[:-1])
    )


def piece_descriptors(t: torch.Tensor, block_rows: int, row_dim: int, pieces: tuple) -> tuple:
    """One TMA descriptor per head-dim piece of t (three entries, None for an absent piece): its base
    is the piece's first column, its shape ends at D, its block is ``block_rows`` rows of ``row_dim``
    by one index of every other leading dim by the piece width."""
    strides = list(kernel_strides(t))
    descriptors, column = [], 0
    for width in pieces:
        if width == 0:
            descriptors.append(None)
            continue
        shape = list(t.shape[:-1]) + [t.shape[-1] - column]
        block = [block_rows if dim == row_dim else 1 for dim in range(t.dim() - 1)] + [width]
        descriptors.append(TensorDescriptor(t[..., column:], shape, strides, block))
        column += width
    return tuple(descriptors)


def descriptor_type(dtype: torch.dtype, block_rows: int, row_dim: int, rank: int, width: int):
    """The JIT signature string of a piece descriptor (for the static kernel report's specs), or None
    for an absent piece."""
    if width == 0:
        return None
    names = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    block = [block_rows if dim == row_dim else 1 for dim in range(rank - 1)] + [width]
    return f"tensordesc<{names[dtype]}[{','.join(map(str, block))}]>"


@triton.jit
def load_pieces(base, rows, row_ok, stride_row, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr):
    """Rows [R, D] of one head as up to three column pieces through pointers; an absent piece repeats
    piece 0 (unused)."""
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
def load_tile(
    base,
    rows,
    row_ok,
    stride_row,
    desc0,
    desc1,
    desc2,
    coords,
    R: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    TMA: tl.constexpr,
):
    """R rows of one head as pieces: from the descriptors at ``coords`` with TMA, else through
    ``base`` (the head's first element) at ``rows`` masked by ``row_ok``."""
    if TMA:
        p0 = desc0.load(coords).reshape([R, D0])
        p1 = p0
        p2 = p0
        if D1 > 0:
            p1 = desc1.load(coords).reshape([R, D1])
        if D2 > 0:
            p2 = desc2.load(coords).reshape([R, D2])
        return p0, p1, p2
    else:
        return load_pieces(base, rows, row_ok, stride_row, D, D0, D1, D2)


@triton.jit
def keep_rows(p0, p1, p2, row_ok, D1: tl.constexpr, D2: tl.constexpr):
    """Pieces with the rows outside row_ok zeroed (what a masked pointer load reads there)."""
    p0 = tl.where(row_ok[:, None], p0, 0.0)
    if D1 > 0:
        p1 = tl.where(row_ok[:, None], p1, 0.0)
    if D2 > 0:
        p2 = tl.where(row_ok[:, None], p2, 0.0)
    return p0, p1, p2


@triton.jit
def store_pieces(
    base, rows, row_ok, stride_row, p0, p1, p2, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr
):
    """Rows of one head from pieces (cast to base's type), only the D real columns of rows in row_ok."""
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
def atomic_add_pieces(
    base, rows, row_ok, stride_row, p0, p1, p2, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr
):
    """Adds pieces (float32) into the D real columns of rows in row_ok, atomically."""
    offsets = rows.to(tl.int64)[:, None] * stride_row
    cols0 = tl.arange(0, D0)
    tl.atomic_add(base + offsets + cols0[None, :], p0, mask=row_ok[:, None] & (cols0 < D)[None, :], sem="relaxed")
    if D1 > 0:
        cols1 = D0 + tl.arange(0, D1)
        tl.atomic_add(base + offsets + cols1[None, :], p1, mask=row_ok[:, None] & (cols1 < D)[None, :], sem="relaxed")
    if D2 > 0:
        cols2 = D0 + D1 + tl.arange(0, D2)
        tl.atomic_add(base + offsets + cols2[None, :], p2, mask=row_ok[:, None] & (cols2 < D)[None, :], sem="relaxed")


@triton.jit
def dot_nt(a0, a1, a2, b0, b1, b2, D1: tl.constexpr, D2: tl.constexpr, PRECISION: tl.constexpr):
    """a @ b^T over the head dim, summed over its pieces: [R, D] x [C, D] -> [R, C] in float32."""
    acc = tl.dot(a0, tl.trans(b0), input_precision=PRECISION)
    if D1 > 0:
        acc += tl.dot(a1, tl.trans(b1), input_precision=PRECISION)
    if D2 > 0:
        acc += tl.dot(a2, tl.trans(b2), input_precision=PRECISION)
    return acc


@triton.jit
def dot_acc(acc0, acc1, acc2, p, b0, b1, b2, D1: tl.constexpr, D2: tl.constexpr, PRECISION: tl.constexpr):
    """acc += p @ b for each head-dim piece: [R, C] x [C, D] added to [R, D] float32."""
    acc0 += tl.dot(p, b0, input_precision=PRECISION)
    if D1 > 0:
        acc1 += tl.dot(p, b1, input_precision=PRECISION)
    if D2 > 0:
        acc2 += tl.dot(p, b2, input_precision=PRECISION)
    return acc0, acc1, acc2


@triton.jit
def zeros_pieces(R: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr):
    """Float32 [R, piece] accumulators (an absent piece gets piece 0's shape and stays unused)."""
    return (
        tl.zeros([R, D0], tl.float32),
        tl.zeros([R, D1 if D1 > 0 else D0], tl.float32),
        tl.zeros([R, D2 if D2 > 0 else D0], tl.float32),
    )


@triton.jit
def attend_block(
    acc0,
    acc1,
    acc2,
    m_i,
    l_i,
    q0,
    q1,
    q2,
    k_base,
    k_desc0,
    k_desc1,
    k_desc2,
    k_coords,
    stride_kn,
    v_base,
    v_desc0,
    v_desc1,
    v_desc2,
    v_coords,
    stride_vn,
    cols,
    col_ok,
    visible,
    scale_log2,
    MASKED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D: tl.constexpr,
    D0: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    TMA: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One key block of the forward: S = Q K^T (log2 units), the online-softmax update of the running
    max m_i and sum l_i, and acc = acc * alpha + P V. A MASKED block hides the scores outside
    ``visible`` [rows, BLOCK_N] (and reads no key outside ``col_ok``); an unmasked one (every key
    visible to every row) does no mask work at all."""
    k0, k1, k2 = load_tile(
        k_base, cols, col_ok, stride_kn, k_desc0, k_desc1, k_desc2, k_coords, BLOCK_N, D, D0, D1, D2, TMA
    )
    s = dot_nt(q0, q1, q2, k0, k1, k2, D1, D2, PRECISION) * scale_log2
    if MASKED:
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v0, v1, v2 = load_tile(
        v_base, cols, col_ok, stride_vn, v_desc0, v_desc1, v_desc2, v_coords, BLOCK_N, D, D0, D1, D2, TMA
    )
    if MASKED and TMA:
        v0, v1, v2 = keep_rows(v0, v1, v2, col_ok, D1, D2)
    acc0 = acc0 * alpha[:, None]
    if D1 > 0:
        acc1 = acc1 * alpha[:, None]
    if D2 > 0:
        acc2 = acc2 * alpha[:, None]
    acc0, acc1, acc2 = dot_acc(acc0, acc1, acc2, p.to(v0.dtype), v0, v1, v2, D1, D2, PRECISION)
    return acc0, acc1, acc2, m_new, l_i


@triton.jit
def softmax_epilogue(m_i, l_i):
    """(1 / l, lse in natural-log units) of each row; rows that saw no key get 0 and -inf."""
    has_keys = l_i > 0.0
    inv = tl.where(has_keys, 1.0 / tl.where(has_keys, l_i, 1.0), 0.0)
    lse = tl.where(has_keys, (m_i + tl.log2(tl.where(has_keys, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    return inv, lse


@triton.jit
def load_row_stats(Lse, Delta, offset, rows, row_ok):
    """(lse in log2 units, delta) of rows: delta = rowsum(dO * O); rows without keys (lse -inf) get
    lse 0, so that their masked scores give probability 0 instead of NaN."""
    lse2 = tl.load(Lse + offset + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)
    delta = tl.load(Delta + offset + rows, mask=row_ok, other=0.0)
    return lse2, delta


@triton.jit
def dq_block(
    dq0,
    dq1,
    dq2,
    row_dot,
    q0,
    q1,
    q2,
    do0,
    do1,
    do2,
    lse2,
    delta,
    k0,
    k1,
    k2,
    v0,
    v1,
    v2,
    visible,
    gate,
    scale_log2,
    MASKED: tl.constexpr,
    ROW_DOT: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One key block of the dQ pass: P recomputed from lse, dS = P * (gate * dO V^T - delta),
    dQ += dS K (unscaled). ROW_DOT also sums P * (dO V^T) per row (the gate's gradient)."""
    s = dot_nt(q0, q1, q2, k0, k1, k2, D1, D2, PRECISION) * scale_log2
    p = tl.exp2(s - lse2[:, None])
    if MASKED:
        p = tl.where(visible, p, 0.0)
    dp = dot_nt(do0, do1, do2, v0, v1, v2, D1, D2, PRECISION)
    if ROW_DOT:
        row_dot += tl.sum(p * dp, 1)
    ds = (p * (gate * dp - delta[:, None])).to(k0.dtype)
    dq0, dq1, dq2 = dot_acc(dq0, dq1, dq2, ds, k0, k1, k2, D1, D2, PRECISION)
    return dq0, dq1, dq2, row_dot


@triton.jit
def dkdv_block(
    dk0,
    dk1,
    dk2,
    dv0,
    dv1,
    dv2,
    k0,
    k1,
    k2,
    v0,
    v1,
    v2,
    q0,
    q1,
    q2,
    do0,
    do1,
    do2,
    lse2,
    delta,
    visible_t,
    gate,
    scale_log2,
    MASKED: tl.constexpr,
    D1: tl.constexpr,
    D2: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One query block of the dK/dV pass, in transposed tiles [keys, queries] (the accumulated
    gradients are per key): dV += P^T dO, dK += dS^T Q (unscaled, ungated dV). Returns dS^T as well
    (for an atomic dQ)."""
    s_t = dot_nt(k0, k1, k2, q0, q1, q2, D1, D2, PRECISION) * scale_log2
    p_t = tl.exp2(s_t - lse2[None, :])
    if MASKED:
        p_t = tl.where(visible_t, p_t, 0.0)
    dp_t = dot_nt(v0, v1, v2, do0, do1, do2, D1, D2, PRECISION)
    ds_t = (p_t * (gate * dp_t - delta[None, :])).to(q0.dtype)
    dv0, dv1, dv2 = dot_acc(dv0, dv1, dv2, p_t.to(do0.dtype), do0, do1, do2, D1, D2, PRECISION)
    dk0, dk1, dk2 = dot_acc(dk0, dk1, dk2, ds_t, q0, q1, q2, D1, D2, PRECISION)
    return dk0, dk1, dk2, dv0, dv1, dv2, ds_t
