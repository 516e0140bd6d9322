"""Triton kernels of SwiGLU gating, ``silu(gate) * up``: the CUDA kernels of the public ops
``vlmops::silu_mul`` and ``vlmops::silu_mul_backward`` (Triton owns them; there is no CUDA C++
variant). The launchers take inputs that the ops' C++ CUDA entries have checked
(csrc/triton/silu_mul.cpp).

Same semantics and rounding as the C++ kernels (csrc/cpu/silu_mul.cpp, csrc/include/vlmops/silu_mul_math.h):
silu computed in float32 (float64 for float64) and rounded to the activation dtype, then its product
with ``up`` computed in float32 and rounded once. exp is Triton's (the GPU's ex2.approx path in
float32, a few ulp), division is correctly rounded (``div_rn``).

Layout: each tensor is read as a 2D ``[rows, I]`` view with its own row and column strides, so a
gate/up written by a GEMM with padded rows (``buf[:, :3420]`` of a ``[M, 3424]`` buffer), a slice
of a fused gate_up projection, or a transposed or expanded input is read in place. The only copy:
a tensor whose leading dims do not collapse into one row stride (e.g. a ``[B, S, I]`` tensor sliced
along S out of a larger buffer, ``x[:, ::2]``) is copied once by ``reshape`` before the launch.
When every input's rows follow each other without gaps (row stride = I * column stride: contiguous
inputs), the launch sees them as one row of rows * I elements: the op is then purely element-wise.
Outputs are new contiguous tensors. The grid is one program per row and block of BLOCK columns, rows *
cdiv(I, BLOCK) of them, known from shapes (no host sync); row and block offsets are 64-bit, the offsets
within a block too when BLOCK times a column stride may pass int32.

Access width: VEC elements per thread and access, up to 16 bytes (8 bf16/fp16, 4 fp32, 2 fp64), the
largest power of two that divides I, every row stride and every data pointer, with unit column strides
(``vlmops.triton.vector_width``). The launcher passes I and the row strides in units of VEC so that the
kernel's offsets and row-end masks are visibly VEC-aligned: loads and stores are 128-bit vectors. At
I = 3420 a contiguous [M, I] tensor is one row of M * I elements (128-bit); padded inputs with their
own row stride run 4 elements wide in bf16 (the contiguous output's rows are 8-byte aligned only).
"""

import torch
import triton
import triton.language as tl

from vlmops.triton import KERNEL_SPECS, device_guard, make_spec, rows_2d, vector_width

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _div(a, b, IS_FP64: tl.constexpr):
    """a / b correctly rounded (Triton's float32 `/` is the approximate div.full)."""
    if IS_FP64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _block(I, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """This program's row and first column (int64; one program per row and block of BLOCK columns) and
    the column offsets within the block (int64 when BLOCK times a column stride may pass 2^31)."""
    blocks = tl.cdiv(I, BLOCK)  # I and the strides below are multiples of VEC: the launcher passes them / VEC
    pid = tl.program_id(0).to(tl.int64)
    row = pid // blocks
    offsets = tl.arange(0, BLOCK)
    if WIDE:
        offsets = offsets.to(tl.int64)
    return row, (pid - row * blocks) * BLOCK, offsets


@triton.jit
def _load_row(ptr, row, col0, offsets, stride_r, stride_c, mask, ACC: tl.constexpr):
    """Columns col0 + offsets of row `row` of a [rows, I] view with any strides, in the math dtype."""
    return tl.load(ptr + row * stride_r + col0 * stride_c + offsets * stride_c, mask=mask, other=0.0).to(ACC)


@triton.jit
def _silu_mul_fwd_kernel(
    Gate,
    Up,
    Out,
    I_VEC,
    stride_gr_vec,
    stride_gc,
    stride_ur_vec,
    stride_uc,
    BLOCK: tl.constexpr,
    WIDE: tl.constexpr,
    IS_FP64: tl.constexpr,
    VEC: tl.constexpr,
):
    I, stride_gr, stride_ur = I_VEC * VEC, stride_gr_vec * VEC, stride_ur_vec * VEC
    row, col0, offsets = _block(I, BLOCK, WIDE)
    mask = offsets < I - col0
    ACC = tl.float64 if IS_FP64 else tl.float32
    g = _load_row(Gate, row, col0, offsets, stride_gr, stride_gc, mask, ACC)
    u = _load_row(Up, row, col0, offsets, stride_ur, stride_uc, mask, ACC)
    act = Out.dtype.element_ty
    s = _div(g, 1.0 + tl.exp(-g), IS_FP64).to(act).to(ACC)  # F.silu's output, in the activation dtype
    tl.store(Out + row * I + col0 + offsets, (s * u).to(act), mask=mask)


@triton.jit
def _silu_mul_bwd_kernel(
    GradOut,
    Gate,
    Up,
    GradGate,
    GradUp,
    I_VEC,
    stride_dr_vec,
    stride_dc,
    stride_gr_vec,
    stride_gc,
    stride_ur_vec,
    stride_uc,
    BLOCK: tl.constexpr,
    WIDE: tl.constexpr,
    IS_FP64: tl.constexpr,
    VEC: tl.constexpr,
):
    I, stride_dr, stride_gr, stride_ur = I_VEC * VEC, stride_dr_vec * VEC, stride_gr_vec * VEC, stride_ur_vec * VEC
    row, col0, offsets = _block(I, BLOCK, WIDE)
    mask = offsets < I - col0
    ACC = tl.float64 if IS_FP64 else tl.float32
    go = _load_row(GradOut, row, col0, offsets, stride_dr, stride_dc, mask, ACC)
    g = _load_row(Gate, row, col0, offsets, stride_gr, stride_gc, mask, ACC)
    u = _load_row(Up, row, col0, offsets, stride_ur, stride_uc, mask, ACC)
    act = GradGate.dtype.element_ty
    d = 1.0 + tl.exp(-g)
    s = _div(g, d, IS_FP64).to(act).to(ACC)  # the rounded silu the forward multiplied
    sig = _div(1.0, d, IS_FP64)
    t = (go * u).to(act).to(ACC)  # autograd rounds grad_out * up before silu's backward
    out = row * I + col0 + offsets
    tl.store(GradUp + out, (go * s).to(act), mask=mask)
    tl.store(GradGate + out, (t * sig * (1.0 + g * (1.0 - sig))).to(act), mask=mask)


def _launch_args(*tensors):
    """(the [rows, I] views the kernels read, rows, the arguments after the output pointers, VEC, WIDE).

    The views are one row of every element when each view's rows follow each other without gaps (the
    element-wise case), else rows_2d's. VEC covers the inputs; the outputs are new allocations, aligned.
    Row strides and I are passed in units of VEC (a single row's stride is never read: 0)."""
    views = [rows_2d(t) for t in tensors]
    rows, I = views[0].shape
    strides = [v.stride() for v in views]
    if rows > 1 and all(row == I * column for row, column in strides):
        views = [v.as_strided((1, rows * I), (rows * I * column, column)) for v, (_, column) in zip(views, strides)]
        rows, I = 1, rows * I
        strides = [(0, column) for _, column in strides]
    elif rows == 1:
        strides = [(0, column) for _, column in strides]
    vec = 1
    if all(column == 1 for _, column in strides):
        vec = vector_width(views[0].element_size(), [I] + [row for row, _ in strides], views)
    wide = BLOCK * max(column for _, column in strides) >= 2**31  # offsets within a block need int64
    args = [I // vec] + [s for row, column in strides for s in (row // vec, column)]
    return views, rows * triton.cdiv(I, BLOCK), args, vec, wide


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The forward launcher: ``silu(gate) * up``, contiguous, in gate's dtype."""
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    if out.numel() == 0:
        return out
    (g, u), programs, args, vec, wide = _launch_args(gate, up)
    with device_guard(gate):
        _silu_mul_fwd_kernel[(programs,)](
            g,
            u,
            out,
            *args,
            BLOCK=BLOCK,
            WIDE=wide,
            IS_FP64=gate.dtype == torch.float64,
            VEC=vec,
            num_warps=NUM_WARPS,
        )
    return out


def silu_mul_backward(grad_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor):
    """The backward launcher: ``(grad_gate, grad_up)``, contiguous, in gate's dtype."""
    grad_gate = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    grad_up = torch.empty_like(grad_gate)
    if grad_gate.numel() == 0:
        return grad_gate, grad_up
    (d, g, u), programs, args, vec, wide = _launch_args(grad_out, gate, up)
    with device_guard(gate):
        _silu_mul_bwd_kernel[(programs,)](
            d,
            g,
            u,
            grad_gate,
            grad_up,
            *args,
            BLOCK=BLOCK,
            WIDE=wide,
            IS_FP64=gate.dtype == torch.float64,
            VEC=vec,
            num_warps=NUM_WARPS,
        )
    return grad_gate, grad_up


def _specs():
    """Representative launches for the static kernel report, with the VEC the launcher picks: the
    Qwen2.5-VL vision MLP (I = 3420, 16384 tokens) on contiguous gate/up (one row of 16384 * 3420
    elements) and on gate/up with padded 3424-element rows, float32 and bfloat16 (4 elements wide: 3420
    bf16 output rows are 8-byte aligned); a Llama-3-8B MLP (I = 14336, halves of a fused gate_up
    projection, row stride 2 * I) in bfloat16."""
    specs = []
    M = 16384
    for config, dtype, I, row_stride in (
        ("qwen2.5-vl-vision:contiguous", torch.float32, M * 3420, 0),
        ("qwen2.5-vl-vision:contiguous", torch.bfloat16, M * 3420, 0),
        ("qwen2.5-vl-vision:padded-rows", torch.float32, 3420, 3424),
        ("qwen2.5-vl-vision:padded-rows", torch.bfloat16, 3420, 3424),
        ("llama-3-8b:gate-up-halves", torch.bfloat16, 14336, 2 * 14336),
    ):
        name = f"{config}:{str(dtype).replace('torch.', '')}"
        vec = vector_width(dtype.itemsize, (I, row_stride))
        constexprs = dict(BLOCK=BLOCK, WIDE=False, IS_FP64=False, VEC=vec)
        rows = dict(stride_gr_vec=row_stride // vec, stride_gc=1, stride_ur_vec=row_stride // vec, stride_uc=1)
        specs.append(
            make_spec(
                _silu_mul_fwd_kernel,
                f"{name}:fwd",
                NUM_WARPS,
                constexprs,
                Gate=dtype,
                Up=dtype,
                Out=dtype,
                I_VEC=I // vec,
                **rows,
            )
        )
        specs.append(
            make_spec(
                _silu_mul_bwd_kernel,
                f"{name}:bwd",
                NUM_WARPS,
                constexprs,
                GradOut=dtype,
                Gate=dtype,
                Up=dtype,
                GradGate=dtype,
                GradUp=dtype,
                I_VEC=I // vec,
                stride_dr_vec=(I if row_stride else 0) // vec,
                stride_dc=1,
                **rows,
            )
        )
    return specs


KERNEL_SPECS.extend(_specs())
