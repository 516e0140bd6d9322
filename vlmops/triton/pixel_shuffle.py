"""Triton variant of pixel shuffle and fused pixel shuffle + LayerNorm: the kernels of the private
``vlmops::_<op>_triton`` ops, which the CUDA entries of the public ops (csrc/cuda/pixel_shuffle.cu)
call after their checks when VLMOPS_CUDA_BACKEND=triton. The launchers take checked inputs.

Same semantics, shapes, dtypes and outputs as the C++ kernels (csrc/cpu/pixel_shuffle.cpp). Channel
k of output token (b, i, j) reads x at ``PixelShuffleGeometry::src_offset`` of
csrc/include/vlmops/pixel_shuffle_math.h: with dy = k // (s*C), dx = (k % (s*C)) // C, c = k % C,
the element x[b, s*i + dy, s*j + dx, c], addressed through x's strides (x is never copied).

The launchers are plain functions of tensors, so the tests also call them on CPU tensors under the
Triton interpreter; vlmops.ops.registry registers them as CUDA kernels.

Design, from the static report (tools/kernel_report.py; registers per thread on sm_80 and sm_90a):
- Offsets: an int64 base per token plus int32 offsets within its s x s patch (the op's CUDA entry
  refuses patches spanning 2**31 elements). All-int64 per-element offsets cost 167-198 registers in
  the 4096-wide backward; with int32 ones and 16-byte vector hints (VEC) it takes 74-80.
- LayerNorm rows of up to 32 KiB of x live in registers (BLOCK = next_power_of_2(s*s*C)); wider rows
  (fp32 SmolVLM, 12288 features) are processed in chunks, re-read from cache, instead of spilling.
- The backward is two kernels: grad_x one row per program, and dW/db as column-blocked sums over
  row blocks into a [P, s*s*C] partial buffer, then one torch sum over P (no atomics).
  Fusing dW/db into the row kernel spilled thousands of bytes for 12288-wide rows. The price is one
  more read of x and grad_out, as in PyTorch's own LayerNorm backward.
"""

import torch
import triton
import triton.language as tl

from vlmops.ops import pixel_shuffle as _ops
from vlmops.triton import KERNEL_SPECS, device_guard, make_spec, multiprocessors, vector_width

# Elements one program of the pure shuffle moves: large enough for wide loads, small enough that
# narrow rows (s*s*C of a few hundred) do not leave most lanes masked.
COPY_BLOCK = 1024


@triton.jit
def _token_coords(row, Ho, Wo):
    """(b, i, j) of flat output token `row` of a [B, Ho, Wo] grid."""
    return row // (Ho * Wo), (row // Wo) % Ho, row % Wo


@triton.jit
def _token_base(b, i, j, scale, stride_b, stride_h, stride_w):
    """int64 offset in x of input (s*i, s*j), the corner of output token (b, i, j)'s s x s patch."""
    return b * stride_b + (scale * i) * stride_h + (scale * j) * stride_w


@triton.jit
def _patch_offsets(k, scale, C, stride_h, stride_w, stride_c, VEC: tl.constexpr):
    """Offsets from the patch corner of the inputs feeding channels k (PixelShuffleGeometry::src_offset):
    int32, as the op's CUDA entry checks the patch spans less than 2**31 elements. VEC > 1 promises runs of
    VEC contiguous, VEC-aligned offsets (unit channel stride, C and the strides multiples of VEC)."""
    chunk = scale * C
    dy = k // chunk
    r = k - dy * chunk
    dx = r // C
    c = r - dx * C
    offsets = dy * stride_h + dx * stride_w + c * stride_c
    if VEC > 1:
        offsets = tl.max_contiguous(tl.multiple_of(offsets, [VEC]), [VEC])
    return offsets


@triton.jit
def _pixel_shuffle_copy_kernel(
    X,
    Y,
    Ho,
    Wo,
    C,
    scale,
    N,
    stride_xb,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_yb,
    stride_yh,
    stride_yw,
    stride_yc,
    TO_SHUFFLED: tl.constexpr,
    VEC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Moves BLOCK channels of one token between x-space [B, H, W, C] and shuffled [B, Ho, Wo, N].

    The map is a bijection, so the backward (TO_SHUFFLED=False) scatters without collisions.
    """
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = k < N
    b, i, j = _token_coords(row, Ho, Wo)
    x_offsets = _token_base(b, i, j, scale, stride_xb, stride_xh, stride_xw) + _patch_offsets(
        k, scale, C, stride_xh, stride_xw, stride_xc, VEC
    )
    y_offsets = b * stride_yb + i * stride_yh + j * stride_yw + k.to(tl.int64) * stride_yc
    if TO_SHUFFLED:
        tl.store(Y + y_offsets, tl.load(X + x_offsets, mask=mask), mask=mask)
    else:
        tl.store(X + x_offsets, tl.load(Y + y_offsets, mask=mask), mask=mask)


@triton.jit
def _load_row_chunk(X, base, k, mask, scale, C, stride_xh, stride_xw, stride_xc, VEC: tl.constexpr, acc_dtype):
    """Inputs feeding channels k of the token whose patch starts at `base`, in accumulation precision."""
    x_offsets = base + _patch_offsets(k, scale, C, stride_xh, stride_xw, stride_xc, VEC)
    return tl.load(X + x_offsets, mask=mask, other=0.0).to(acc_dtype)


@triton.jit
def _affine_chunk(
    y, Weight, Bias, k, mask, stride_weight, stride_bias, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, acc_dtype
):
    if HAS_WEIGHT:
        y = y * tl.load(Weight + k * stride_weight, mask=mask, other=0.0).to(acc_dtype)
    if HAS_BIAS:
        y = y + tl.load(Bias + k * stride_bias, mask=mask, other=0.0).to(acc_dtype)
    return y


@triton.jit
def _pixel_shuffle_layer_norm_fwd_kernel(
    X,
    Out,
    Weight,
    Bias,
    Mean,
    Rstd,
    Ho,
    Wo,
    C,
    scale,
    N,
    eps,
    stride_xb,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_weight,
    stride_bias,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    VEC: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """One output token per program: gather its s*s*C inputs, normalize, store (Out, Mean, Rstd contiguous).

    Rows up to CHUNK (>= BLOCK) stay in registers; wider rows are read in CHUNK-sized pieces three
    times (sum, centered squares, output), the re-reads hitting cache, so registers stay bounded.
    """
    row = tl.program_id(0).to(tl.int64)
    acc_dtype = Mean.dtype.element_ty  # float32, or float64 for float64 inputs
    b, i, j = _token_coords(row, Ho, Wo)
    base = _token_base(b, i, j, scale, stride_xb, stride_xh, stride_xw)
    out_row = Out + row * N
    if CHUNK >= BLOCK:
        k = tl.arange(0, BLOCK)
        mask = k < N
        x = _load_row_chunk(X, base, k, mask, scale, C, stride_xh, stride_xw, stride_xc, VEC, acc_dtype)
        mean = tl.sum(x, axis=0) / N
        centered = tl.where(mask, x - mean, 0.0)
        # Two passes over registers (mean, then centered squares), as the C++ kernel does.
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / N + eps)
        y = _affine_chunk(
            centered * rstd, Weight, Bias, k, mask, stride_weight, stride_bias, HAS_WEIGHT, HAS_BIAS, acc_dtype
        )
        tl.store(out_row + k, y.to(Out.dtype.element_ty), mask=mask)
    else:
        sums = tl.zeros([CHUNK], dtype=acc_dtype)
        for start in tl.range(0, N, CHUNK):
            k = start + tl.arange(0, CHUNK)
            sums += _load_row_chunk(X, base, k, k < N, scale, C, stride_xh, stride_xw, stride_xc, VEC, acc_dtype)
        mean = tl.sum(sums, axis=0) / N
        sums = tl.zeros([CHUNK], dtype=acc_dtype)
        for start in tl.range(0, N, CHUNK):
            k = start + tl.arange(0, CHUNK)
            mask = k < N
            x = _load_row_chunk(X, base, k, mask, scale, C, stride_xh, stride_xw, stride_xc, VEC, acc_dtype)
            centered = tl.where(mask, x - mean, 0.0)
            sums += centered * centered
        rstd = 1.0 / tl.sqrt(tl.sum(sums, axis=0) / N + eps)
        for start in tl.range(0, N, CHUNK):
            k = start + tl.arange(0, CHUNK)
            mask = k < N
            x = _load_row_chunk(X, base, k, mask, scale, C, stride_xh, stride_xw, stride_xc, VEC, acc_dtype)
            y = _affine_chunk(
                (x - mean) * rstd, Weight, Bias, k, mask, stride_weight, stride_bias, HAS_WEIGHT, HAS_BIAS, acc_dtype
            )
            tl.store(out_row + k, y.to(Out.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def _xhat_and_weighted_grad(
    X,
    GradOut,
    Weight,
    x_base,
    grad_out_base,
    k,
    mask,
    mean,
    rstd,
    scale,
    C,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_gc,
    stride_weight,
    HAS_WEIGHT: tl.constexpr,
    VEC: tl.constexpr,
    acc_dtype,
):
    """xhat and g = grad_out * weight of channels k of one token (zeros where masked)."""
    x = _load_row_chunk(X, x_base, k, mask, scale, C, stride_xh, stride_xw, stride_xc, VEC, acc_dtype)
    g = tl.load(GradOut + grad_out_base + k.to(tl.int64) * stride_gc, mask=mask, other=0.0).to(acc_dtype)
    if HAS_WEIGHT:
        g = g * tl.load(Weight + k * stride_weight, mask=mask, other=0.0).to(acc_dtype)
    return tl.where(mask, (x - mean) * rstd, 0.0), g


@triton.jit
def _pixel_shuffle_layer_norm_bwd_dx_kernel(
    GradOut,
    X,
    Mean,
    Rstd,
    Weight,
    GradX,
    Ho,
    Wo,
    C,
    scale,
    N,
    stride_gb,
    stride_gh,
    stride_gw,
    stride_gc,
    stride_xb,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_mb,
    stride_mh,
    stride_mw,
    stride_rb,
    stride_rh,
    stride_rw,
    stride_weight,
    stride_dxb,
    stride_dxh,
    stride_dxw,
    HAS_WEIGHT: tl.constexpr,
    VEC: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """One output token per program: grad_x of its s*s*C inputs, scattered back to contiguous [B, H, W, C].

    grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = grad_out * weight. Rows wider than
    CHUNK are read twice in CHUNK-sized pieces (the two means, then grad_x), as in the forward.
    """
    row = tl.program_id(0).to(tl.int64)
    acc_dtype = Mean.dtype.element_ty
    b, i, j = _token_coords(row, Ho, Wo)
    mean = tl.load(Mean + b * stride_mb + i * stride_mh + j * stride_mw)
    rstd = tl.load(Rstd + b * stride_rb + i * stride_rh + j * stride_rw)
    x_base = _token_base(b, i, j, scale, stride_xb, stride_xh, stride_xw)
    grad_out_base = b * stride_gb + i * stride_gh + j * stride_gw
    grad_x_base = _token_base(b, i, j, scale, stride_dxb, stride_dxh, stride_dxw)
    if CHUNK >= BLOCK:
        k = tl.arange(0, BLOCK)
        mask = k < N
        xhat, g = _xhat_and_weighted_grad(
            X,
            GradOut,
            Weight,
            x_base,
            grad_out_base,
            k,
            mask,
            mean,
            rstd,
            scale,
            C,
            stride_xh,
            stride_xw,
            stride_xc,
            stride_gc,
            stride_weight,
            HAS_WEIGHT,
            VEC,
            acc_dtype,
        )
        mean_g = tl.sum(g, axis=0) / N
        mean_g_xhat = tl.sum(g * xhat, axis=0) / N
        grad_x = rstd * (g - mean_g - xhat * mean_g_xhat)
        grad_x_offsets = grad_x_base + _patch_offsets(k, scale, C, stride_dxh, stride_dxw, 1, VEC)
        tl.store(GradX + grad_x_offsets, grad_x.to(GradX.dtype.element_ty), mask=mask)
    else:
        sum_g = tl.zeros([CHUNK], dtype=acc_dtype)
        sum_g_xhat = tl.zeros([CHUNK], dtype=acc_dtype)
        for start in tl.range(0, N, CHUNK):
            k = start + tl.arange(0, CHUNK)
            xhat, g = _xhat_and_weighted_grad(
                X,
                GradOut,
                Weight,
                x_base,
                grad_out_base,
                k,
                k < N,
                mean,
                rstd,
                scale,
                C,
                stride_xh,
                stride_xw,
                stride_xc,
                stride_gc,
                stride_weight,
                HAS_WEIGHT,
                VEC,
                acc_dtype,
            )
            sum_g += g
            sum_g_xhat += g * xhat
        mean_g = tl.sum(sum_g, axis=0) / N
        mean_g_xhat = tl.sum(sum_g_xhat, axis=0) / N
        for start in tl.range(0, N, CHUNK):
            k = start + tl.arange(0, CHUNK)
            mask = k < N
            xhat, g = _xhat_and_weighted_grad(
                X,
                GradOut,
                Weight,
                x_base,
                grad_out_base,
                k,
                mask,
                mean,
                rstd,
                scale,
                C,
                stride_xh,
                stride_xw,
                stride_xc,
                stride_gc,
                stride_weight,
                HAS_WEIGHT,
                VEC,
                acc_dtype,
            )
            grad_x = rstd * (g - mean_g - xhat * mean_g_xhat)
            grad_x_offsets = grad_x_base + _patch_offsets(k, scale, C, stride_dxh, stride_dxw, 1, VEC)
            tl.store(GradX + grad_x_offsets, grad_x.to(GradX.dtype.element_ty), mask=mask)


@triton.jit
def _pixel_shuffle_layer_norm_bwd_dwdb_kernel(
    GradOut,
    X,
    Mean,
    Rstd,
    PartialGradWeight,
    PartialGradBias,
    rows,
    Ho,
    Wo,
    C,
    scale,
    N,
    stride_gb,
    stride_gh,
    stride_gw,
    stride_gc,
    stride_xb,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_mb,
    stride_mh,
    stride_mw,
    stride_rb,
    stride_rh,
    stride_rw,
    VEC: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Column block pid_n of sum(grad_out * xhat) and sum(grad_out) over row blocks pid_r, pid_r + P, ...,
    into row pid_r of the [P, N] partial dW/db buffers (xhat from the saved mean/rstd, no row reduction)."""
    k = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    # int64 loop bounds make the row indices, and every offset computed from them, 64-bit.
    pid_r = tl.program_id(1).to(tl.int64)
    num_row_programs = tl.num_programs(1).to(tl.int64)
    acc_dtype = Mean.dtype.element_ty
    mask_k = k < N
    x_patch_offsets = _patch_offsets(k, scale, C, stride_xh, stride_xw, stride_xc, VEC)
    grad_weight = tl.zeros([BLOCK_ROWS, BLOCK_N], dtype=acc_dtype)
    grad_bias = tl.zeros([BLOCK_ROWS, BLOCK_N], dtype=acc_dtype)
    for start in tl.range(pid_r * BLOCK_ROWS, rows, num_row_programs * BLOCK_ROWS):
        row = start + tl.arange(0, BLOCK_ROWS)
        mask_r = row < rows
        b, i, j = _token_coords(row, Ho, Wo)
        mean = tl.load(Mean + b * stride_mb + i * stride_mh + j * stride_mw, mask=mask_r, other=0.0)
        rstd = tl.load(Rstd + b * stride_rb + i * stride_rh + j * stride_rw, mask=mask_r, other=0.0)
        mask = mask_r[:, None] & mask_k[None, :]
        x_offsets = _token_base(b, i, j, scale, stride_xb, stride_xh, stride_xw)[:, None] + x_patch_offsets[None, :]
        x = tl.load(X + x_offsets, mask=mask, other=0.0).to(acc_dtype)
        grad_out_offsets = (b * stride_gb + i * stride_gh + j * stride_gw)[:, None] + k.to(tl.int64)[
            None, :
        ] * stride_gc
        dy = tl.load(GradOut + grad_out_offsets, mask=mask, other=0.0).to(acc_dtype)
        grad_weight += dy * ((x - mean[:, None]) * rstd[:, None])
        grad_bias += dy
    tl.store(PartialGradWeight + pid_r * N + k, tl.sum(grad_weight, axis=0), mask=mask_k)
    tl.store(PartialGradBias + pid_r * N + k, tl.sum(grad_bias, axis=0), mask=mask_k)


# Widest piece of a row the LayerNorm kernels hold in registers, in bytes of x: 16384 bf16/fp16,
# 8192 fp32, 4096 fp64 elements. Wider rows are processed in pieces (tools/kernel_report.py: a
# whole 16384-wide fp32 row spills).
MAX_ROW_CHUNK_BYTES = 32768


def _row_block(n: int) -> int:
    return triton.next_power_of_2(max(n, 1))


def _row_chunk(block: int, x: torch.Tensor) -> int:
    return min(block, max(16, MAX_ROW_CHUNK_BYTES // x.element_size()))


def _row_num_warps(chunk: int) -> int:
    """Warps of a one-row program: about 16 elements per thread per row-sized array, 4 to 16 warps."""
    return min(16, max(4, chunk // 512))


def _vector_width(x: torch.Tensor) -> int:
    """Elements per vector access of x [B, H, W, C] (the VEC promise of _patch_offsets): the largest power of
    two, up to 16 bytes, dividing C, the token strides and the data pointer, when channels are unit-stride."""
    if x.stride(3) != 1:
        return 1
    return vector_width(x.element_size(), [x.shape[3], *x.stride()[:3]], [x])


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``vlmops::_pixel_shuffle_triton``: x [B, H, W, C] (any strides) -> contiguous [B, H/s, W/s, s*s*C]."""
    B, H, W, C = x.shape
    s = scale
    out = torch.empty(B, H // s, W // s, s * s * C, dtype=x.dtype, device=x.device)
    _launch_copy(x, out, s, to_shuffled=True)
    return out


def pixel_shuffle_backward(grad_out: torch.Tensor, scale: int) -> torch.Tensor:
    """``vlmops::_pixel_shuffle_backward_triton``: grad_out [B, H/s, W/s, s*s*C] (any strides) -> contiguous
    grad_x [B, H, W, C], the inverse permutation."""
    B, Ho, Wo, n = grad_out.shape
    s = scale
    grad_x = torch.empty(B, Ho * s, Wo * s, n // (s * s), dtype=grad_out.dtype, device=grad_out.device)
    _launch_copy(grad_x, grad_out, s, to_shuffled=False)
    return grad_x


def _launch_copy(x: torch.Tensor, y: torch.Tensor, scale: int, *, to_shuffled: bool) -> None:
    B, Ho, Wo, n = y.shape
    if y.numel() == 0:
        return
    with device_guard(x):
        _pixel_shuffle_copy_kernel[(B * Ho * Wo, triton.cdiv(n, COPY_BLOCK))](
            x,
            y,
            Ho,
            Wo,
            x.shape[3],
            scale,
            n,
            *x.stride(),
            *y.stride(),
            TO_SHUFFLED=to_shuffled,
            VEC=_vector_width(x),
            BLOCK=COPY_BLOCK,
            num_warps=4,
        )


def pixel_shuffle_layer_norm(x: torch.Tensor, scale: int, weight, bias, eps: float):
    """``vlmops::_pixel_shuffle_layer_norm_triton``: -> (out [B, H/s, W/s, s*s*C] in x's dtype,
    mean and rstd [B, H/s, W/s] in float32, float64 for float64 x), all contiguous."""
    B, H, W, C = x.shape
    s, n = scale, C * scale * scale
    out = torch.empty(B, H // s, W // s, n, dtype=x.dtype, device=x.device)
    mean = torch.empty(B, H // s, W // s, dtype=_ops._stats_dtype(x.dtype), device=x.device)
    rstd = torch.empty_like(mean)
    if out.numel() == 0:  # no features: the statistics of an empty row
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
    else:
        block = _row_block(n)
        chunk = _row_chunk(block, x)
        with device_guard(x):
            _pixel_shuffle_layer_norm_fwd_kernel[(mean.numel(),)](
                x,
                out,
                weight if weight is not None else x,
                bias if bias is not None else x,
                mean,
                rstd,
                H // s,
                W // s,
                C,
                s,
                n,
                eps,
                *x.stride(),
                weight.stride(0) if weight is not None else 0,
                bias.stride(0) if bias is not None else 0,
                HAS_WEIGHT=weight is not None,
                HAS_BIAS=bias is not None,
                VEC=_vector_width(x),
                BLOCK=block,
                CHUNK=chunk,
                num_warps=_row_num_warps(chunk),
            )
    return out, mean, rstd


# Tile of the dW/db column reduction: BLOCK_ROWS tokens x DWDB_BLOCK_N channels per step.
DWDB_BLOCK_N = 128


def _dwdb_grid(rows: int, n: int, device: torch.device):
    """(BLOCK_ROWS, grid) of the dW/db reduction: about four programs per SM on a GPU. Under the CPU
    interpreter, 2-row blocks and at most 2 row programs, so the tests run programs that loop."""
    column_blocks = max(1, triton.cdiv(n, DWDB_BLOCK_N))
    if device.type == "cuda":
        block_rows, target = 16, 4 * multiprocessors(device)
    else:
        block_rows, target = 2, 2 * column_blocks
    row_programs = max(1, min(triton.cdiv(rows, block_rows), triton.cdiv(target, column_blocks), 65535))
    return block_rows, (column_blocks, row_programs)


def pixel_shuffle_layer_norm_backward(grad_out, x, mean, rstd, weight, scale: int):
    """``vlmops::_pixel_shuffle_layer_norm_backward_triton``: -> (grad_x contiguous [B, H, W, C],
    grad_weight [s*s*C], grad_bias [s*s*C]) in x's dtype. grad_out, x, mean, rstd: any strides."""
    B, H, W, C = x.shape
    s, n = scale, C * scale * scale
    stats_dtype = mean.dtype
    grad_x = torch.empty(B, H, W, C, dtype=x.dtype, device=x.device)
    rows = mean.numel()
    vec = _vector_width(x)  # grad_x is contiguous: C % vec == 0 makes the promise hold for it too
    block_rows, dwdb_grid = _dwdb_grid(rows, n, x.device)
    # dW/db in a second, column-blocked kernel (re-reading x and grad_out, as PyTorch's own LayerNorm
    # backward does): accumulating full rows of dW/db next to a full row of dx in one program spills
    # registers for rows of 8k+ features (tools/kernel_report.py).
    partial_grad_weight = torch.zeros(dwdb_grid[1], n, dtype=stats_dtype, device=x.device)
    partial_grad_bias = torch.zeros(dwdb_grid[1], n, dtype=stats_dtype, device=x.device)
    if rows > 0 and n > 0:
        block = _row_block(n)
        chunk = _row_chunk(block, x)
        strided = (*grad_out.stride(), *x.stride(), *mean.stride(), *rstd.stride())
        with device_guard(x):
            _pixel_shuffle_layer_norm_bwd_dx_kernel[(rows,)](
                grad_out,
                x,
                mean,
                rstd,
                weight if weight is not None else x,
                grad_x,
                H // s,
                W // s,
                C,
                s,
                n,
                *strided,
                weight.stride(0) if weight is not None else 0,
                *grad_x.stride()[:3],
                HAS_WEIGHT=weight is not None,
                VEC=vec,
                BLOCK=block,
                CHUNK=chunk,
                num_warps=_row_num_warps(chunk),
            )
            _pixel_shuffle_layer_norm_bwd_dwdb_kernel[dwdb_grid](
                grad_out,
                x,
                mean,
                rstd,
                partial_grad_weight,
                partial_grad_bias,
                rows,
                H // s,
                W // s,
                C,
                s,
                n,
                *strided,
                VEC=vec,
                BLOCK_ROWS=block_rows,
                BLOCK_N=DWDB_BLOCK_N,
                num_warps=4,
            )
    return grad_x, partial_grad_weight.sum(0).to(x.dtype), partial_grad_bias.sum(0).to(x.dtype)


def _specs():
    """Representative compilations, contiguous x: InternVL (InternViT-300M, C=1024, s=2 -> 4096
    features) in bf16; SmolVLM (SigLIP C=768, s=4 -> 12288 features, BLOCK 16384, the widest row) in
    bf16 (one register-resident row) and fp32 (two row chunks; the copy in fp32, as benchmarked)."""
    specs = []
    for model, C, s, dtype in (
        ("internvl3-1b", 1024, 2, torch.bfloat16),
        ("smolvlm", 768, 4, torch.bfloat16),
        ("smolvlm", 768, 4, torch.float32),
    ):
        H = W = 32  # the patch grid of one tile: 448px / 14 (InternViT), 512px / 16 (SigLIP)
        n, block = C * s * s, _row_block(C * s * s)
        example = torch.empty(0, dtype=dtype)
        chunk, vec = _row_chunk(block, example), 16 // example.element_size()
        Ho, Wo = H // s, W // s
        geometry = dict(Ho=Ho, Wo=Wo, C=C, scale=s, N=n)
        x_strides = dict(stride_xb=H * W * C, stride_xh=W * C, stride_xw=C, stride_xc=1)
        grad_out_strides = dict(stride_gb=Ho * Wo * n, stride_gh=Wo * n, stride_gw=n, stride_gc=1)
        stats_strides = dict(stride_mb=Ho * Wo, stride_mh=Wo, stride_mw=1, stride_rb=Ho * Wo, stride_rh=Wo, stride_rw=1)
        config = f"{model}:{str(dtype).replace('torch.', '')}:C={C},s={s}"
        for to_shuffled in (True, False):  # the copies only move bytes: 16-byte vectors of 8 bf16 or 4 fp32
            specs.append(
                make_spec(
                    _pixel_shuffle_copy_kernel,
                    f"{config}:{'fwd' if to_shuffled else 'bwd'}",
                    4,
                    dict(TO_SHUFFLED=to_shuffled, VEC=vec, BLOCK=COPY_BLOCK),
                    X=dtype,
                    Y=dtype,
                    **geometry,
                    **x_strides,
                    stride_yb=Ho * Wo * n,
                    stride_yh=Wo * n,
                    stride_yw=n,
                    stride_yc=1,
                )
            )
        specs.append(
            make_spec(
                _pixel_shuffle_layer_norm_fwd_kernel,
                f"{config}:affine",
                _row_num_warps(chunk),
                dict(HAS_WEIGHT=True, HAS_BIAS=True, VEC=vec, BLOCK=block, CHUNK=chunk),
                X=dtype,
                Out=dtype,
                Weight=dtype,
                Bias=dtype,
                Mean=torch.float32,
                Rstd=torch.float32,
                **geometry,
                eps=1e-5,
                **x_strides,
                stride_weight=1,
                stride_bias=1,
            )
        )
        specs.append(
            make_spec(
                _pixel_shuffle_layer_norm_bwd_dx_kernel,
                f"{config}:affine",
                _row_num_warps(chunk),
                dict(HAS_WEIGHT=True, VEC=vec, BLOCK=block, CHUNK=chunk),
                GradOut=dtype,
                X=dtype,
                Mean=torch.float32,
                Rstd=torch.float32,
                Weight=dtype,
                GradX=dtype,
                **geometry,
                **grad_out_strides,
                **x_strides,
                **stats_strides,
                stride_weight=1,
                stride_dxb=H * W * C,
                stride_dxh=W * C,
                stride_dxw=C,
            )
        )
        specs.append(
            make_spec(
                _pixel_shuffle_layer_norm_bwd_dwdb_kernel,
                config,
                4,
                dict(VEC=vec, BLOCK_ROWS=16, BLOCK_N=DWDB_BLOCK_N),
                GradOut=dtype,
                X=dtype,
                Mean=torch.float32,
                Rstd=torch.float32,
                PartialGradWeight=torch.float32,
                PartialGradBias=torch.float32,
                rows=8 * Ho * Wo,
                **geometry,
                **grad_out_strides,
                **x_strides,
                **stats_strides,
            )
        )
    return specs


KERNEL_SPECS.extend(_specs())
