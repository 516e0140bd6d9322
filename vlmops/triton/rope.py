"""Triton kernel of multi-axis RoPE, the same math as csrc/include/vlmops/rope_math.h: the CUDA kernels
of the private ops vlmops::_rope_triton and _rope_triton_, which the public ops' CUDA entries
(csrc/cuda/rope.cu) call after their checks when VLMOPS_CUDA_BACKEND=triton. The launchers take
checked inputs.

Layout of the work: the (token, pair) index space, flattened, is cut into blocks of BLOCK pairs. A
program takes one block and a range of heads (q heads first, then k heads, in one launch): it computes
cos/sin of its BLOCK pairs once in registers, from positions[token, axis[i]] * inv_freq[i] (no table),
then loops over its heads, loading x[i] and x[i + P] of each pair and storing the rotated pair. Products
and sums are rounded separately (enable_fp_fusion=False) like eager PyTorch. Axis values outside
[0, A) are clamped (reading axis on the host would synchronize). Offsets are 64-bit.

Access width: when every head row starts on a VEC-element boundary (unit head_dim stride, P and the
token/head strides of q, k and the outputs multiples of VEC, 16-byte aligned data), each thread moves
runs of VEC contiguous elements, VEC = 16 bytes (8 bf16/fp16, 4 fp32, 2 fp64): the launcher passes P
as P / VEC and the kernel states the alignment of each head row (tl.multiple_of), so x[i] and x[i + P]
load and store as 128-bit vectors. Other layouts run the same code with VEC = 1.

Grid: (blocks of pairs, head groups). One head group (cos/sin computed once per (token, pair)) unless
the blocks alone would leave the GPU under MIN_WAVES waves: then the heads are split into groups, the
fewest that reach it.

Dims [2P, D) of a partial rotary pass through; out of place they are copied by the launcher.
"""

import torch
import triton
import triton.language as tl

from vlmops.triton import KERNEL_SPECS, device_guard, make_spec, multiprocessors, vector_width

BLOCK = 1024  # pairs per program: 8 bf16 / 16 fp32 per thread of 4 warps
NUM_WARPS = 4
MIN_WAVES = 4  # programs per multiprocessor the grid aims for before it splits the heads


@triton.jit
def _load_pair(x_ptr, x_row, i, P, sx_d, mask, math_dtype, VEC: tl.constexpr):
    """(x[i], x[i + P]) of the head rows starting at x_row (one offset per pair), in the math dtype."""
    if VEC > 1:  # unit head_dim stride; rows start on VEC-element boundaries (the launcher's promise)
        x_row = tl.multiple_of(x_row, VEC)
        x0 = tl.load(x_ptr + x_row + i, mask=mask, other=0.0)
        x1 = tl.load(x_ptr + x_row + (i + P), mask=mask, other=0.0)
    else:
        x0 = tl.load(x_ptr + x_row + i * sx_d, mask=mask, other=0.0)
        x1 = tl.load(x_ptr + x_row + (i + P) * sx_d, mask=mask, other=0.0)
    return x0.to(math_dtype), x1.to(math_dtype)


@triton.jit
def _store_rotated(y_ptr, y_row, i, P, sy_d, x0, x1, c, s, mask, ROUND: tl.constexpr, VEC: tl.constexpr):
    """Stores the pair (x0, x1) rotated by (c, s) at y[i], y[i + P] of the head rows starting at y_row."""
    math_dtype = c.dtype
    out_dtype = y_ptr.dtype.element_ty
    p00 = x0 * c
    p11 = x1 * s
    p10 = x1 * c
    p01 = x0 * s
    if ROUND:
        # Activation-dtype convention: every product rounded to the activation dtype, as eager bf16 does.
        p00 = p00.to(out_dtype).to(math_dtype)
        p11 = p11.to(out_dtype).to(math_dtype)
        p10 = p10.to(out_dtype).to(math_dtype)
        p01 = p01.to(out_dtype).to(math_dtype)
    if VEC > 1:
        y_row = tl.multiple_of(y_row, VEC)
        tl.store(y_ptr + y_row + i, (p00 - p11).to(out_dtype), mask=mask)
        tl.store(y_ptr + y_row + (i + P), (p10 + p01).to(out_dtype), mask=mask)
    else:
        tl.store(y_ptr + y_row + i * sy_d, (p00 - p11).to(out_dtype), mask=mask)
        tl.store(y_ptr + y_row + (i + P) * sy_d, (p10 + p01).to(out_dtype), mask=mask)


@triton.jit
def _rotate_heads(
    x_ptr,
    y_ptr,
    x_row,
    y_row,
    first,
    last,
    sx_h,
    sy_h,
    i,
    P,
    sx_d,
    sy_d,
    c,
    s,
    mask,
    ROUND: tl.constexpr,
    VEC: tl.constexpr,
):
    """Heads [first, last) of one tensor, two per step: both heads' loads are issued before the first
    store (the store of one head cannot be moved above the loads of the next: in place they share a
    pointer)."""
    math_dtype = c.dtype
    for h in range(first, last, 2):
        second = mask & (h + 1 < last)
        a0, a1 = _load_pair(x_ptr, x_row + h * sx_h, i, P, sx_d, mask, math_dtype, VEC)
        b0, b1 = _load_pair(x_ptr, x_row + (h + 1) * sx_h, i, P, sx_d, second, math_dtype, VEC)
        _store_rotated(y_ptr, y_row + h * sy_h, i, P, sy_d, a0, a1, c, s, mask, ROUND, VEC)
        _store_rotated(y_ptr, y_row + (h + 1) * sy_h, i, P, sy_d, b0, b1, c, s, second, ROUND, VEC)


@triton.jit
def _rope_kernel(
    q_ptr,
    k_ptr,
    q_out_ptr,
    k_out_ptr,
    pos_ptr,
    axis_ptr,
    freq_ptr,
    tokens,
    S,
    HQ,
    HK,
    heads_per_program,
    P_VEC,
    A,
    sq_b,
    sq_s,
    sq_h,
    sq_d,
    sk_b,
    sk_s,
    sk_h,
    sk_d,
    sqo_b,
    sqo_s,
    sqo_h,
    sqo_d,
    sko_b,
    sko_s,
    sko_h,
    sko_d,
    sp_b,
    sp_s,
    sp_a,
    MATH_FP64: tl.constexpr,
    ROUND: tl.constexpr,
    INVERSE: tl.constexpr,
    VEC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    P = P_VEC * VEC  # a visible multiple of VEC: runs of VEC pairs never cross a token
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < tokens * P
    token = idx // P
    i = idx - token * P
    b = token // S
    t = token - b * S
    axis = tl.minimum(tl.maximum(tl.load(axis_ptr + i, mask=mask, other=0), 0), A - 1)
    pos = tl.load(pos_ptr + b * sp_b + t * sp_s + axis * sp_a, mask=mask, other=0)
    freq = tl.load(freq_ptr + i, mask=mask, other=0.0)
    if MATH_FP64:
        angle = pos.to(tl.float64) * freq.to(tl.float64)
    else:
        angle = pos.to(tl.float32) * freq
    c = tl.cos(angle)
    s = tl.sin(angle)
    if ROUND:
        c = c.to(q_out_ptr.dtype.element_ty).to(angle.dtype)
        s = s.to(q_out_ptr.dtype.element_ty).to(angle.dtype)
    if INVERSE:
        s = -s
    # Heads [h0, h1) of the q heads followed by the k heads.
    h0 = tl.program_id(1) * heads_per_program
    h1 = tl.minimum(h0 + heads_per_program, HQ + HK)
    _rotate_heads(
        q_ptr,
        q_out_ptr,
        b * sq_b + t * sq_s,
        b * sqo_b + t * sqo_s,
        h0,
        tl.minimum(h1, HQ),
        sq_h,
        sqo_h,
        i,
        P,
        sq_d,
        sqo_d,
        c,
        s,
        mask,
        ROUND,
        VEC,
    )
    _rotate_heads(
        k_ptr,
        k_out_ptr,
        b * sk_b + t * sk_s,
        b * sko_b + t * sko_s,
        tl.maximum(h0, HQ) - HQ,
        h1 - HQ,
        sk_h,
        sko_h,
        i,
        P,
        sk_d,
        sko_d,
        c,
        s,
        mask,
        ROUND,
        VEC,
    )


def _vec(q, k, q_out, k_out, P: int) -> int:
    """VEC of the launch: 16-byte runs when every head row of the four tensors is aligned to them."""
    tensors = (q, k, q_out, k_out)
    counts = [P]
    for t in tensors:
        stride_b, stride_s, stride_h, stride_d = t.stride()
        if stride_d != 1:
            return 1
        counts += (stride_b, stride_s, stride_h)
    return vector_width(q.element_size(), counts, tensors)


def _grid(tokens: int, P: int, heads: int, device: torch.device) -> tuple:
    """(blocks of pairs, head groups) and the heads per group (see the module docstring)."""
    blocks = triton.cdiv(tokens * P, BLOCK)
    target = MIN_WAVES * multiprocessors(device)
    groups = max(1, min(heads, triton.cdiv(target, blocks)))
    per_group = triton.cdiv(heads, groups)
    return (blocks, triton.cdiv(heads, per_group)), per_group


def rope_triton_into(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math: bool, inverse: bool) -> None:
    """Launches the kernel: q [B, S, HQ, D], k [B, S, HK, D] -> q_out, k_out (may be q and k themselves).
    Works on CPU tensors under TRITON_INTERPRET=1."""
    B, S, HQ, D = q.shape
    HK = k.shape[2]
    P = axis.shape[0]
    if B * S == 0:
        return
    if q_out.data_ptr() != q.data_ptr() and 2 * P < D:  # the dims that pass through
        q_out[..., 2 * P :].copy_(q[..., 2 * P :])
        k_out[..., 2 * P :].copy_(k[..., 2 * P :])
    vec = _vec(q, k, q_out, k_out, P)
    grid, heads_per_program = _grid(B * S, P, HQ + HK, q.device)
    with device_guard(q):
        _rope_kernel[grid](
            q,
            k,
            q_out,
            k_out,
            positions,
            axis,
            inv_freq,
            B * S,
            S,
            HQ,
            HK,
            heads_per_program,
            P // vec,
            positions.shape[2],
            *q.stride(),
            *k.stride(),
            *q_out.stride(),
            *k_out.stride(),
            *positions.stride(),
            MATH_FP64=q.dtype == torch.float64,
            ROUND=(not fp32_math) and q.dtype in (torch.bfloat16, torch.float16),
            INVERSE=inverse,
            VEC=vec,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
            enable_fp_fusion=False,
        )


def rope_triton(q, k, positions, axis, inv_freq, fp32_math: bool, inverse: bool = False):
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    rope_triton_into(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math, inverse)
    return q_out, k_out


def rope_triton_(q, k, positions, axis, inv_freq, fp32_math: bool, inverse: bool = False) -> None:
    rope_triton_into(q, k, q, k, positions, axis, inv_freq, fp32_math, inverse)


def _specs():
    """Representative compilations, contiguous [N, H, D] / [B, S, H, D] (16-byte runs): the Qwen2.5-VL
    vision tower (16 heads of 80, 2D positions, float32 math) and the Qwen2.5-VL-7B language model (28/4
    heads of 128, 3D M-RoPE, activation-dtype math), bf16 forward and backward (in place or not: same
    code) and the float32 forward the benchmarks run."""
    specs = []
    for model, S, HQ, HK, D, A, fp32_math in (
        ("qwen2.5-vl-vision", 16384, 16, 16, 80, 2, True),
        ("qwen2.5-vl-7b-text", 8192, 28, 4, 128, 3, False),
    ):
        P = D // 2
        for dtype, inverse in ((torch.bfloat16, False), (torch.bfloat16, True), (torch.float32, False)):
            vec = 16 // dtype.itemsize
            strides = {}
            for prefix, H in (("sq", HQ), ("sk", HK), ("sqo", HQ), ("sko", HK)):
                strides.update({f"{prefix}_b": S * H * D, f"{prefix}_s": H * D, f"{prefix}_h": D, f"{prefix}_d": 1})
            heads = HQ + HK
            specs.append(
                make_spec(
                    _rope_kernel,
                    f"{model}:{str(dtype).replace('torch.', '')}:{'bwd' if inverse else 'fwd'}",
                    NUM_WARPS,
                    dict(
                        MATH_FP64=False,
                        ROUND=not fp32_math and dtype != torch.float32,
                        INVERSE=inverse,
                        VEC=vec,
                        BLOCK=BLOCK,
                    ),
                    q_ptr=dtype,
                    k_ptr=dtype,
                    q_out_ptr=dtype,
                    k_out_ptr=dtype,
                    pos_ptr=torch.int64,
                    axis_ptr=torch.int64,
                    freq_ptr=torch.float32,
                    tokens=S,
                    S=S,
                    HQ=HQ,
                    HK=HK,
                    heads_per_program=heads,
                    P_VEC=P // vec,
                    A=A,
                    **strides,
                    sp_b=S * A,
                    sp_s=A,
                    sp_a=1,
                )
            )
    return specs


KERNEL_SPECS.extend(_specs())
