"""Triton kernels of RMSNorm: the CUDA kernels of ``vlmops::rms_norm`` and ``vlmops::rms_norm_backward``
(RMSNorm's CUDA owner is Triton; there is no CUDA C++ variant). The launchers take inputs that the
op's C++ entry has checked (csrc/triton/rms_norm.cpp).

Same semantics, shapes and dtypes as the C++ kernels (csrc/cpu/rms_norm.cpp, rms_norm_math.h), with
the statistics of torch's CUDA eager ops: the mean square is ``sum * (1/C)`` and rsqrt is
``tl.math.rsqrt`` (CUDA's rsqrtf, as torch.rsqrt on a GPU), so bf16 results follow transformers'
CUDA code up to the summation order.

Design:
- A program normalizes BLOCK_M rows of BLOCK_C >= C columns held in registers (x read once). Rows
  wider than MAX_BLOCK_C take a chunked loop: one pass for the mean square, one to normalize.
- x and grad_out are read through a row stride and a column stride: any view whose leading dims
  collapse to one row stride (``buf[:, :C]`` of a padded buffer, a batch slice) is read in place;
  other layouts are reshaped (a copy).
- Backward: a program walks ROWS_PER_PROGRAM rows and keeps its grad_weight partial in registers (in
  its own row of a [programs, C] buffer for chunked rows); the partials are summed by torch. No
  atomics: the result is deterministic.
"""

import torch
import triton
import triton.language as tl

from vlmops.ops import rms_norm as _ops
from vlmops.triton import KERNEL_SPECS, device_guard, make_spec, multiprocessors, rows_2d

MAX_BLOCK_C = 8192  # widest row kept in registers (Qwen2.5-VL vision: 1280, Qwen2.5-VL-7B LM: 3584)
_TL_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


@triton.jit
def _normalize(x, rstd, W, cols, col_ok, X_DTYPE: tl.constexpr, PROD_DTYPE: tl.constexpr, HAS_W: tl.constexpr):
    """weight * (x * rstd).to(x dtype) in the product's math type."""
    h = (x * rstd[:, None]).to(X_DTYPE).to(PROD_DTYPE)
    if HAS_W:
        w = tl.load(W + cols, mask=col_ok, other=0).to(PROD_DTYPE)
        h = h * w[None, :]
    return h


@triton.jit
def _rstd(sum_squares, C, inv_c, eps_hi, eps_lo, ACC_DTYPE: tl.constexpr):
    if ACC_DTYPE == tl.float64:
        # float64 rows: the mean by division (1/C in float32 would cost precision), eps as hi + lo.
        return 1.0 / tl.sqrt(sum_squares / C + eps_hi + eps_lo)
    else:
        return tl.math.rsqrt(sum_squares * inv_c + eps_hi)


@triton.jit
def _rms_norm_fwd_kernel(
    X,
    W,
    Out,
    Rstd,
    M,
    C,
    stride_xm,
    stride_xc,
    inv_c,
    eps_hi,
    eps_lo,
    HAS_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    PROD_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
    SINGLE: tl.constexpr,
):
    X_DTYPE = X.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    x_rows = X + rows.to(tl.int64)[:, None] * stride_xm
    out_rows = Out + rows.to(tl.int64)[:, None] * C
    cols = tl.arange(0, BLOCK_C)
    if SINGLE:
        col_ok = cols < C
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(x_rows + cols[None, :] * stride_xc, mask=mask, other=0).to(ACC_DTYPE)
        rstd = _rstd(tl.sum(x * x, axis=1), C, inv_c, eps_hi, eps_lo, ACC_DTYPE)
        out = _normalize(x, rstd, W, cols, col_ok, X_DTYPE, PROD_DTYPE, HAS_W)
        tl.store(out_rows + cols[None, :], out.to(Out.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC_DTYPE)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            mask = row_ok[:, None] & (c < C)[None, :]
            x = tl.load(x_rows + c[None, :] * stride_xc, mask=mask, other=0).to(ACC_DTYPE)
            acc += x * x
        rstd = _rstd(tl.sum(acc, axis=1), C, inv_c, eps_hi, eps_lo, ACC_DTYPE)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cols
            col_ok = c < C
            mask = row_ok[:, None] & col_ok[None, :]
            x = tl.load(x_rows + c[None, :] * stride_xc, mask=mask, other=0).to(ACC_DTYPE)
            out = _normalize(x, rstd, W, c, col_ok, X_DTYPE, PROD_DTYPE, HAS_W)
            tl.store(out_rows + c[None, :], out.to(Out.dtype.element_ty), mask=mask)
    tl.store(Rstd + rows, rstd, mask=row_ok)


@triton.jit
def _grad_tile(
    x_rows,
    g_rows,
    W,
    c,
    row_ok,
    C,
    stride_xc,
    stride_gc,
    rstd,
    HAS_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    PROD_DTYPE: tl.constexpr,
):
    """(x, gn = grad_out * weight, grad_weight contribution of the tile's rows) of one column chunk."""
    X_DTYPE = x_rows.dtype.element_ty
    col_ok = c < C
    mask = row_ok[:, None] & col_ok[None, :]
    x = tl.load(x_rows + c[None, :] * stride_xc, mask=mask, other=0).to(ACC_DTYPE)
    g = tl.load(g_rows + c[None, :] * stride_gc, mask=mask, other=0).to(PROD_DTYPE)
    if HAS_W:
        w = tl.load(W + c, mask=col_ok, other=0).to(PROD_DTYPE)
        h = (x * rstd[:, None]).to(X_DTYPE).to(PROD_DTYPE)
        gw = tl.sum(g * h, axis=0)
        gn = (g * w[None, :]).to(ACC_DTYPE)
    else:
        gw = 0.0
        gn = g.to(ACC_DTYPE)
    return x, gn, gw, mask


@triton.jit
def _rms_norm_bwd_kernel(
    GradOut,
    X,
    W,
    Rstd,
    GradX,
    GradWPartial,
    M,
    C,
    rows_per_program,
    stride_xm,
    stride_xc,
    stride_gm,
    stride_gc,
    inv_c,
    HAS_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    PROD_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
    SINGLE: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, M)
    partial = GradWPartial + pid.to(tl.int64) * C
    gw_acc = tl.zeros([BLOCK_C], dtype=PROD_DTYPE)
    for m0 in range(first, last, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < last
        x_rows = X + rows.to(tl.int64)[:, None] * stride_xm
        g_rows = GradOut + rows.to(tl.int64)[:, None] * stride_gm
        gx_rows = GradX + rows.to(tl.int64)[:, None] * C
        rstd = tl.load(Rstd + rows, mask=row_ok, other=0)
        if SINGLE:
            x, gn, gw, mask = _grad_tile(
                x_rows, g_rows, W, cols, row_ok, C, stride_xc, stride_gc, rstd, HAS_W, ACC_DTYPE, PROD_DTYPE
            )
            gw_acc += gw
            coef = tl.sum(gn * x, axis=1) * rstd * rstd * inv_c
            grad_x = rstd[:, None] * (gn - x * coef[:, None])
            tl.store(gx_rows + cols[None, :], grad_x.to(GradX.dtype.element_ty), mask=mask)
        else:
            dot = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC_DTYPE)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + cols
                x, gn, gw, mask = _grad_tile(
                    x_rows, g_rows, W, c, row_ok, C, stride_xc, stride_gc, rstd, HAS_W, ACC_DTYPE, PROD_DTYPE
                )
                dot += gn * x
                if HAS_W:
                    col_ok = c < C
                    tl.store(partial + c, tl.load(partial + c, mask=col_ok, other=0) + gw, mask=col_ok)
            coef = tl.sum(dot, axis=1) * rstd * rstd * inv_c
            for c0 in range(0, C, BLOCK_C):
                c = c0 + cols
                x, gn, gw, mask = _grad_tile(
                    x_rows, g_rows, W, c, row_ok, C, stride_xc, stride_gc, rstd, False, ACC_DTYPE, PROD_DTYPE
                )
                if HAS_W:
                    w = tl.load(W + c, mask=c < C, other=0).to(PROD_DTYPE)
                    gn = (gn.to(PROD_DTYPE) * w[None, :]).to(ACC_DTYPE)
                grad_x = rstd[:, None] * (gn - x * coef[:, None])
                tl.store(gx_rows + c[None, :], grad_x.to(GradX.dtype.element_ty), mask=mask)
    if SINGLE and HAS_W:
        tl.store(partial + cols, gw_acc, mask=cols < C)


def _math_dtype(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def blocks(C: int, max_block_c: int = MAX_BLOCK_C) -> tuple:
    """(BLOCK_M, BLOCK_C, SINGLE, num_warps): whole rows in registers up to max_block_c columns,
    several rows per program for narrow rows (about 4096 elements per program)."""
    block_c = min(triton.next_power_of_2(max(C, 1)), max_block_c)
    block_m = max(1, min(16, 4096 // block_c))
    warps = 8 if block_c >= 4096 else 4
    return block_m, block_c, C <= block_c, warps


def _eps_parts(eps: float) -> tuple:
    """eps as float32 hi + lo (float64 rows add both in float64; float32 rows use hi = float32(eps))."""
    hi = torch.tensor(eps, dtype=torch.float32).item()
    return hi, eps - hi


def rms_norm(x, weight, eps, *, max_block_c=MAX_BLOCK_C):
    """The forward launcher: (out [..., C] contiguous in promote(x, weight), rstd [...]).
    max_block_c lowers the register-resident row width (the interpreter tests use it to reach the
    chunked loop with small rows)."""
    C = x.shape[-1]
    out_dtype = _ops._out_dtype(x, weight)
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    rstd = torch.empty(x.shape[:-1], device=x.device, dtype=_ops._stats_dtype(x.dtype))
    if rstd.numel() == 0:
        return out, rstd
    x2 = rows_2d(x)
    M = x2.shape[0]
    block_m, block_c, single, warps = blocks(C, max_block_c)
    eps_hi, eps_lo = _eps_parts(float(eps))
    with device_guard(x):
        _rms_norm_fwd_kernel[(triton.cdiv(M, block_m),)](
            x2,
            weight if weight is not None else x2,
            out,
            rstd,
            M,
            C,
            x2.stride(0),
            x2.stride(1),
            1.0 / C if C else float("nan"),
            eps_hi,
            eps_lo,
            HAS_W=weight is not None,
            ACC_DTYPE=_math_dtype(x.dtype),
            PROD_DTYPE=_math_dtype(out_dtype),
            BLOCK_M=block_m,
            BLOCK_C=block_c,
            SINGLE=single,
            num_warps=warps,
        )
    return out, rstd


def _programs(M: int, block_m: int, device: torch.device) -> int:
    """Backward grid: a few programs per SM on a GPU (each reduces many rows into one partial)."""
    if device.type == "cuda":
        cap = 4 * multiprocessors(device)
    else:
        cap = 8
    return max(1, min(triton.cdiv(M, block_m), cap))


def rms_norm_backward(grad_out, x, weight, rstd, *, max_block_c=MAX_BLOCK_C):
    """The backward launcher: (grad_x [..., C] contiguous in x's dtype, grad_weight [C] in weight's
    dtype, [0] without a weight). Deterministic: per-program partials summed in a fixed order."""
    C = x.shape[-1]
    out_dtype = grad_out.dtype
    grad_x = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    x2, g2 = rows_2d(x), rows_2d(grad_out)
    M = x2.shape[0]
    block_m, block_c, single, warps = blocks(C, max_block_c)
    programs = _programs(M, block_m, x.device)
    rows_per_program = triton.cdiv(triton.cdiv(M, programs), block_m) * block_m if M else 0
    programs = triton.cdiv(M, rows_per_program) if M else 0
    prod_torch = torch.float64 if out_dtype == torch.float64 else torch.float32
    partial = torch.zeros(programs if weight is not None else 0, C, device=x.device, dtype=prod_torch)
    if M and C:
        with device_guard(x):
            _rms_norm_bwd_kernel[(programs,)](
                g2,
                x2,
                weight if weight is not None else x2,
                rstd.reshape(-1).contiguous(),
                grad_x,
                partial,
                M,
                C,
                rows_per_program,
                x2.stride(0),
                x2.stride(1),
                g2.stride(0),
                g2.stride(1),
                1.0 / C,
                HAS_W=weight is not None,
                ACC_DTYPE=_math_dtype(x.dtype),
                PROD_DTYPE=_math_dtype(out_dtype),
                BLOCK_M=block_m,
                BLOCK_C=block_c,
                SINGLE=single,
                num_warps=warps,
            )
    if weight is None:
        return grad_x, x.new_empty(0)
    return grad_x, partial.sum(0).to(weight.dtype)


def _specs():
    """Representative launches for the static kernel report: Qwen2.5-VL's vision tower (C=1280) and
    Qwen2.5-VL-7B's language model (C=3584), bf16 (the GPU dtype) and fp32, with a weight of x's dtype."""
    specs = []
    for config, C in (("qwen2.5-vl-vision", 1280), ("qwen2.5-vl-7b-text", 3584)):
        block_m, block_c, single, warps = blocks(C)
        for dtype in (torch.bfloat16, torch.float32):
            name = f"{config}:{str(dtype).replace('torch.', '')}"
            consts = dict(
                HAS_W=True, ACC_DTYPE=tl.float32, PROD_DTYPE=tl.float32, BLOCK_M=block_m, BLOCK_C=block_c, SINGLE=single
            )
            specs.append(
                make_spec(
                    _rms_norm_fwd_kernel,
                    f"{name}:fwd",
                    warps,
                    consts,
                    X=dtype,
                    W=dtype,
                    Out=dtype,
                    Rstd=torch.float32,
                    M=16384,
                    C=C,
                    stride_xm=C,
                    stride_xc=1,
                    inv_c=1.0 / C,
                    eps_hi=1e-6,
                    eps_lo=0.0,
                )
            )
            specs.append(
                make_spec(
                    _rms_norm_bwd_kernel,
                    f"{name}:bwd",
                    warps,
                    consts,
                    GradOut=dtype,
                    X=dtype,
                    W=dtype,
                    Rstd=torch.float32,
                    GradX=dtype,
                    GradWPartial=torch.float32,
                    M=16384,
                    C=C,
                    rows_per_program=32,
                    stride_xm=C,
                    stride_xc=1,
                    stride_gm=C,
                    stride_gc=1,
                    inv_c=1.0 / C,
                )
            )
    return specs


KERNEL_SPECS.extend(_specs())
