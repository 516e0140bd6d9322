"""Triton CUDA kernels of vlmops::patch_embed and vlmops::patch_embed_backward (Triton owns the ops' CUDA
keys): the kernels of the private ``vlmops::_patch_embed_triton`` / ``_patch_embed_backward_triton``,
which the ops' C++ CUDA entries (csrc/triton/patch_embed.cpp) call after their checks. The launchers
take checked inputs.

Forward: one GEMM out[m, n] = sum_k A[m, k] * W[n, k], where A is never written: each program
loads its A tile straight from the pixels (the im2col gather is address arithmetic in the operand
load: row m -> patch (b, f, ph, pw), column k -> (c, t, i, j)), converts uint8/float pixels to
float32, applies the processor's per-channel x * scale[c] + shift[c], casts to the weight's dtype
and accumulates in float32 with tl.dot. Bias and position embeddings are added in the epilogue and
each row is stored at its token position (after the CLS row when there is one).

Backward on CUDA is vlmops.reference's composition of torch ops (one im2col copy of the operand, two
matmuls): not fused. The forward with float64 weights runs vlmops.reference (cuDNN's conv), not this
kernel: tl.dot has no float64 tensor-core path worth writing for.
"""

import math

import torch
import triton
import triton.language as tl

from vlmops.reference.patch_embed import patch_embed as reference_patch_embed
from vlmops.reference.patch_embed import patch_embed_backward as reference_patch_embed_backward
from vlmops.triton import KERNEL_SPECS, make_spec


@triton.jit
def _patch_embed_fwd_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    scale_ptr,
    shift_ptr,
    pos_ptr,
    out_ptr,
    M,
    D,
    K,
    L,
    NCLS,
    C,
    T,
    PH,
    PW,
    PATCHES_H,
    PATCHES_W,
    stride_xb,
    stride_xc,
    stride_xf,
    stride_xh,
    stride_xw,
    HAS_BIAS: tl.constexpr,
    NORMALIZE: tl.constexpr,
    HAS_POS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped program order: GROUP_M row tiles share each weight column tile while it is in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(D, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_size
    pid_n = (pid % (GROUP_M * tiles_n)) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    if INDEX_64:  # 32-bit offsets (fewer registers) whenever x and out hold < 2**31 elements
        offs_m = offs_m.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < D
    # Row m is patch (sample, l) with l = (f * PATCHES_H + ph) * PATCHES_W + pw.
    sample = offs_m // L
    l = offs_m % L
    per_frame = PATCHES_H * PATCHES_W
    f = l // per_frame
    ph = (l % per_frame) // PATCHES_W
    pw = l % PATCHES_W
    row_offset = sample * stride_xb + f * T * stride_xf + ph * PH * stride_xh + pw * PW * stride_xw

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        # Column k is (c, t, i, j) of the patch, row-major: the flattening of the conv weight.
        j = offs_k % PW
        i = (offs_k // PW) % PH
        t = (offs_k // (PW * PH)) % T
        c = offs_k // (PW * PH * T)
        col_offset = c * stride_xc + t * stride_xf + i * stride_xh + j * stride_xw
        a = tl.load(x_ptr + row_offset[:, None] + col_offset[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0)
        a = a.to(tl.float32)
        if NORMALIZE:
            scale = tl.load(scale_ptr + c, mask=mask_k, other=0.0)
            shift = tl.load(shift_ptr + c, mask=mask_k, other=0.0)
            a = a * scale[None, :] + shift[None, :]
        w = tl.load(w_ptr + offs_n[None, :] * K + offs_k[:, None], mask=mask_k[:, None] & mask_n[None, :], other=0)
        acc = tl.dot(a.to(w.dtype), w, acc, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0).to(tl.float32)[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if HAS_POS:
        pos = tl.load(pos_ptr + (NCLS + l)[:, None] * D + offs_n[None, :], mask=mask, other=0)
        acc += pos.to(tl.float32)
    out_row = sample * (NCLS + L) + NCLS + l
    tl.store(out_ptr + out_row[:, None] * D + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


def _geometry(x: torch.Tensor, weight: torch.Tensor):
    """(samples, L, C, T, Ph, Pw, patches_h, patches_w, strides of the 5-D view), as in patch_embed_math.h."""
    C, kernel = weight.shape[1], tuple(weight.shape[2:])
    T, Ph, Pw = (1,) * (3 - len(kernel)) + kernel
    if x.dim() == 2:
        s = x.stride(1) if C * T * Ph * Pw > 1 and x.shape[0] > 0 else 0  # a stride never read is 0
        strides = (x.stride(0), T * Ph * Pw * s, Ph * Pw * s, Pw * s, s)
        return x.shape[0], 1, C, T, Ph, Pw, 1, 1, strides
    F = x.shape[2] if x.dim() == 5 else 1
    H, W = x.shape[-2:]
    stride_f = x.stride(2) if x.dim() == 5 else 0
    strides = (x.stride(0), x.stride(1), stride_f, x.stride(-2), x.stride(-1))
    return x.shape[0], (F // T) * (H // Ph) * (W // Pw), C, T, Ph, Pw, H // Ph, W // Pw, strides


def _max_offset(t: torch.Tensor) -> int:
    """The largest element offset the kernel may address in t (strides honored, no copy)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)


def _normalization(mean, std, rescale, C, device):
    """Per-channel float32 (scale, shift) with x * scale + shift == (x * rescale - mean) / std; None when unused."""
    if mean is None and std is None and rescale is None:
        return None
    inv_std = torch.ones(C, device=device, dtype=torch.float64) if std is None else 1.0 / std.to(torch.float64)
    scale = inv_std * (1.0 if rescale is None else rescale)
    shift = torch.zeros_like(scale) if mean is None else -mean.to(torch.float64) * inv_std
    return scale.to(torch.float32), shift.to(torch.float32)


def _block_config(x: torch.Tensor, weight: torch.Tensor):
    if not x.is_cuda:  # the CPU interpreter (tests): small tiles keep it fast
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2), {}
    # BLOCK_K = 32: the gathered A tile's per-element addresses cost registers that a wider K step
    # would spill (measured with tools/kernel_report.py).
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8), dict(num_warps=8, num_stages=3)


def patch_embed(x, weight, bias, mean, std, rescale, pos_embed, cls_token):
    """``vlmops::_patch_embed_triton``: arguments and result as torch.ops.vlmops.patch_embed."""
    if weight.dtype == torch.float64:
        return reference_patch_embed(x, weight, bias, mean, std, rescale, pos_embed, cls_token)
    samples, L, C, T, Ph, Pw, patches_h, patches_w, strides = _geometry(x, weight)
    D, K, M = weight.shape[0], math.prod(weight.shape[1:]), samples * L
    ncls = 0 if cls_token is None else 1
    if x.dim() == 2:
        out = weight.new_empty(M, D)
    else:
        out = weight.new_empty(samples, ncls + L, D)
        if ncls:
            out[:, 0] = cls_token if pos_embed is None else cls_token + pos_embed[0]
    if M == 0 or D == 0:
        return out
    norm = _normalization(mean, std, rescale, C, x.device)
    w2d = weight.reshape(D, K).contiguous()
    if x.is_cuda and x.dim() == 2 and norm is None and pos_embed is None and x.dtype == weight.dtype:
        # Rows already patchified leave nothing to gather or fuse: the GEMM is cuBLAS's, as in
        # F.linear (the Triton GEMM measured 0.07x of it on an H200 at the Qwen2.5-VL shape).
        return torch.nn.functional.linear(x, w2d, bias)
    blocks, launch = _block_config(x, weight)
    precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    grid = (triton.cdiv(M, blocks["BLOCK_M"]) * triton.cdiv(D, blocks["BLOCK_N"]),)
    absent = w2d  # stands for optional pointers that are never read (their constexpr flag is False)
    scale, shift = (absent, absent) if norm is None else norm
    _patch_embed_fwd_kernel[grid](
        x,
        w2d,
        absent if bias is None else bias.contiguous(),
        scale,
        shift,
        absent if pos_embed is None else pos_embed.contiguous(),
        out,
        M,
        D,
        K,
        L,
        ncls,
        C,
        T,
        Ph,
        Pw,
        patches_h,
        patches_w,
        *strides,
        HAS_BIAS=bias is not None,
        NORMALIZE=norm is not None,
        HAS_POS=pos_embed is not None,
        INPUT_PRECISION=precision,
        INDEX_64=max(_max_offset(x), out.numel()) >= 2**31,
        **blocks,
        **launch,
    )
    return out


def patch_embed_backward(grad_patches, x, weight, mean, std, rescale, compute_grad_x):
    """``vlmops::_patch_embed_backward_triton``: torch ops only (vlmops.reference's composition), no
    Triton kernel of its own."""
    return reference_patch_embed_backward(grad_patches, x, weight, mean, std, rescale, compute_grad_x)


def _specs():
    """Ahead-of-time compile specs of the forward kernel at the GPU launch configuration of each model."""
    specs = []
    # (config, pixels dtype, C, T, P, patches_h, patches_w, L, ncls, normalize, pos, x strides b/c/f/h/w)
    qwen_row = 3 * 2 * 14 * 14
    siglip, internvit = 384 // 14, 448 // 14
    configs = [
        ("qwen2.5-vl:rows", torch.float32, 3, 2, 14, 1, 1, 1, 0, False, False, (qwen_row, 2 * 196, 196, 14, 1)),
        (
            "siglip-so400m:uint8",
            torch.uint8,
            3,
            1,
            14,
            siglip,
            siglip,
            siglip**2,
            0,
            True,
            True,
            (3 * 384 * 384, 384 * 384, 0, 384, 1),
        ),
        (
            "internvit-300m:cls",
            torch.bfloat16,
            3,
            1,
            14,
            internvit,
            internvit,
            internvit**2,
            1,
            False,
            True,
            (3 * 448 * 448, 448 * 448, 0, 448, 1),
        ),
    ]
    D = {"qwen2.5-vl:rows": 1280, "siglip-so400m:uint8": 1152, "internvit-300m:cls": 1024}
    for config, pixels, C, T, P, ph, pw, L, ncls, normalize, pos, strides in configs:
        blocks = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8)
        samples = 16384 if L == 1 else 8
        specs.append(
            make_spec(
                _patch_embed_fwd_kernel,
                config,
                8,
                dict(
                    HAS_BIAS=config != "qwen2.5-vl:rows",
                    NORMALIZE=normalize,
                    HAS_POS=pos,
                    INPUT_PRECISION="tf32",
                    INDEX_64=False,
                    **blocks,
                ),
                x_ptr=pixels,
                w_ptr=torch.bfloat16,
                bias_ptr=torch.bfloat16,
                scale_ptr=torch.float32,
                shift_ptr=torch.float32,
                pos_ptr=torch.bfloat16,
                out_ptr=torch.bfloat16,
                M=samples * L,
                D=D[config],
                K=C * T * P * P,
                L=L,
                NCLS=ncls,
                C=C,
                T=T,
                PH=P,
                PW=P,
                PATCHES_H=ph,
                PATCHES_W=pw,
                stride_xb=strides[0],
                stride_xc=strides[1],
                stride_xf=strides[2],
                stride_xh=strides[3],
                stride_xw=strides[4],
            )
        )
    return specs


KERNEL_SPECS.extend(_specs())
