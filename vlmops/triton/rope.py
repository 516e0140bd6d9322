"""Triton kernel of multi-axis RoPE, the same math as csrc/include/vlmops/rope_math.h: the CUDA kernels
of the private ops vlmops::_rope_triton and _rope_triton_, which the public ops' CUDA entries
(csrc/cuda/rope.cu) call after their checks when VLMOPS_CUDA_BACKEND=triton. The launchers take
checked inputs.

One program rotates BLOCK_H heads of one token, q heads first and then k heads, in a single launch:
cos/sin of the token's pairs are computed in registers from positions[token, axis[i]] * inv_freq[i]
(no table), products and sums are rounded separately (enable_fp_fusion=False) like eager PyTorch.
Axis values outside [0, A) are clamped (reading axis on the host would synchronize). Offsets are 64-bit;
the grid holds one program per token on its first axis, so at most 2^31 - 1 tokens.
"""

import torch
import triton
import triton.language as tl

from vlmops.triton import KERNEL_SPECS, device_guard, make_spec


@triton.jit
def _rotate_heads(
    x_ptr,
    y_ptr,
    b,
    t,
    head0,
    H,
    P,
    D,
    sx_b,
    sx_s,
    sx_h,
    sx_d,
    sy_b,
    sy_s,
    sy_h,
    sy_d,
    c,
    s,
    i,
    pair_mask,
    ROUND: tl.constexpr,
    COPY_TAIL: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    math_dtype = c.dtype
    out_dtype = y_ptr.dtype.element_ty
    h = head0 + tl.arange(0, BLOCK_H)
    mask = (h < H)[:, None] & pair_mask[None, :]
    x_head = x_ptr + b * sx_b + t * sx_s + h[:, None].to(tl.int64) * sx_h
    y_head = y_ptr + b * sy_b + t * sy_s + h[:, None].to(tl.int64) * sy_h
    x0 = tl.load(x_head + i[None, :] * sx_d, mask=mask, other=0.0).to(math_dtype)
    x1 = tl.load(x_head + (i[None, :] + P) * sx_d, mask=mask, other=0.0).to(math_dtype)
    p00 = x0 * c[None, :]
    p11 = x1 * s[None, :]
    p10 = x1 * c[None, :]
    p01 = x0 * s[None, :]
    if ROUND:
        # Activation-dtype convention: every product rounded to the activation dtype, as eager bf16 does.
        p00 = p00.to(out_dtype).to(math_dtype)
        p11 = p11.to(out_dtype).to(math_dtype)
        p10 = p10.to(out_dtype).to(math_dtype)
        p01 = p01.to(out_dtype).to(math_dtype)
    tl.store(y_head + i[None, :] * sy_d, (p00 - p11).to(out_dtype), mask=mask)
    tl.store(y_head + (i[None, :] + P) * sy_d, (p10 + p01).to(out_dtype), mask=mask)
    if COPY_TAIL:
        d = 2 * P + tl.arange(0, BLOCK_T).to(tl.int64)
        tail_mask = (h < H)[:, None] & (d < D)[None, :]
        tail = tl.load(x_head + d[None, :] * sx_d, mask=tail_mask, other=0.0)
        tl.store(y_head + d[None, :] * sy_d, tail, mask=tail_mask)


@triton.jit
def _rope_kernel(
    q_ptr,
    k_ptr,
    q_out_ptr,
    k_out_ptr,
    pos_ptr,
    axis_ptr,
    freq_ptr,
    S,
    HQ,
    HK,
    P,
    D,
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
    COPY_TAIL: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    b = token // S
    t = token % S
    i = tl.arange(0, BLOCK_P).to(tl.int64)
    pair_mask = i < P
    axis = tl.minimum(tl.maximum(tl.load(axis_ptr + i, mask=pair_mask, other=0), 0), A - 1)
    pos = tl.load(pos_ptr + b * sp_b + t * sp_s + axis * sp_a, mask=pair_mask, other=0)
    freq = tl.load(freq_ptr + i, mask=pair_mask, other=0.0)
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
    q_blocks = tl.cdiv(HQ, BLOCK_H)
    if head_block < q_blocks:
        _rotate_heads(
            q_ptr,
            q_out_ptr,
            b,
            t,
            head_block * BLOCK_H,
            HQ,
            P,
            D,
            sq_b,
            sq_s,
            sq_h,
            sq_d,
            sqo_b,
            sqo_s,
            sqo_h,
            sqo_d,
            c,
            s,
            i,
            pair_mask,
            ROUND,
            COPY_TAIL,
            BLOCK_H,
            BLOCK_T,
        )
    else:
        _rotate_heads(
            k_ptr,
            k_out_ptr,
            b,
            t,
            (head_block - q_blocks) * BLOCK_H,
            HK,
            P,
            D,
            sk_b,
            sk_s,
            sk_h,
            sk_d,
            sko_b,
            sko_s,
            sko_h,
            sko_d,
            c,
            s,
            i,
            pair_mask,
            ROUND,
            COPY_TAIL,
            BLOCK_H,
            BLOCK_T,
        )


def _block_h(HQ: int, HK: int) -> int:
    return min(triton.next_power_of_2(max(HQ, HK)), 16)


def rope_triton_into(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math: bool, inverse: bool) -> None:
    """Launches the kernel: q [B, S, HQ, D], k [B, S, HK, D] -> q_out, k_out (may be q and k themselves).
    Works on CPU tensors under TRITON_INTERPRET=1."""
    B, S, HQ, D = q.shape
    HK = k.shape[2]
    P = axis.shape[0]
    if B * S == 0:
        return
    block_h = _block_h(HQ, HK)
    grid = (B * S, triton.cdiv(HQ, block_h) + triton.cdiv(HK, block_h))
    with device_guard(q):
        _rope_kernel[grid](
            q,
            k,
            q_out,
            k_out,
            positions,
            axis,
            inv_freq,
            S,
            HQ,
            HK,
            P,
            D,
            positions.shape[2],
            *q.stride(),
            *k.stride(),
            *q_out.stride(),
            *k_out.stride(),
            *positions.stride(),
            MATH_FP64=q.dtype == torch.float64,
            ROUND=(not fp32_math) and q.dtype in (torch.bfloat16, torch.float16),
            INVERSE=inverse,
            COPY_TAIL=(q_out.data_ptr() != q.data_ptr()) and 2 * P < D,
            BLOCK_H=block_h,
            BLOCK_P=triton.next_power_of_2(P),
            BLOCK_T=triton.next_power_of_2(max(D - 2 * P, 1)),
            enable_fp_fusion=False,
        )


def rope_triton(q, k, positions, axis, inv_freq, fp32_math: bool, inverse: bool = False):
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    rope_triton_into(q, k, q_out, k_out, positions, axis, inv_freq, fp32_math, inverse)
    return q_out, k_out


def rope_triton_(q, k, positions, axis, inv_freq, fp32_math: bool, inverse: bool = False) -> None:
    rope_triton_into(q, k, q, k, positions, axis, inv_freq, fp32_math, inverse)


def _specs():
    """Representative compilations, bf16, contiguous [N, H, D] / [B, S, H, D]: the Qwen2.5-VL vision
    tower (16 heads of 80, 2D positions, float32 math) and the Qwen2.5-VL-7B language model (28/4 heads
    of 128, 3D M-RoPE, activation-dtype math), forward and backward (in place or not: same code)."""
    specs = []
    for model, S, HQ, HK, D, A, fp32_math in (
        ("qwen2.5-vl-vision", 16384, 16, 16, 80, 2, True),
        ("qwen2.5-vl-7b-text", 8192, 28, 4, 128, 3, False),
    ):
        P = D // 2
        for inverse in (False, True):
            q_strides = dict(sq_b=S * HQ * D, sq_s=HQ * D, sq_h=D, sq_d=1)
            k_strides = dict(sk_b=S * HK * D, sk_s=HK * D, sk_h=D, sk_d=1)
            specs.append(
                make_spec(
                    _rope_kernel,
                    f"{model}:bf16:{'bwd' if inverse else 'fwd'}",
                    4,
                    dict(
                        MATH_FP64=False,
                        ROUND=not fp32_math,
                        INVERSE=inverse,
                        COPY_TAIL=False,
                        BLOCK_H=_block_h(HQ, HK),
                        BLOCK_P=triton.next_power_of_2(P),
                        BLOCK_T=1,
                    ),
                    q_ptr=torch.bfloat16,
                    k_ptr=torch.bfloat16,
                    q_out_ptr=torch.bfloat16,
                    k_out_ptr=torch.bfloat16,
                    pos_ptr=torch.int64,
                    axis_ptr=torch.int64,
                    freq_ptr=torch.float32,
                    S=S,
                    HQ=HQ,
                    HK=HK,
                    P=P,
                    D=D,
                    A=A,
                    **q_strides,
                    **k_strides,
                    **{name.replace("sq_", "sqo_"): v for name, v in q_strides.items()},
                    **{name.replace("sk_", "sko_"): v for name, v in k_strides.items()},
                    sp_b=S * A,
                    sp_s=A,
                    sp_a=1,
                )
            )
    return specs


KERNEL_SPECS.extend(_specs())
