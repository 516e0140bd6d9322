"""Patch embedding as one GEMM: the Conv2d/Conv3d (kernel == stride) at the start of every ViT.

CLIP, SigLIP, InternViT and Pixtral embed images with a Conv2d; Qwen2-VL/2.5-VL/3-VL embed rows the
processor has already cut into patches of 2 frames x P x P with a Conv3d. Both are a GEMM of the
patches [L, C*T*P*P] by the flattened weight [D, C*T*P*P]^T; vlmops runs that GEMM directly, with
the im2col gather, the processor's uint8 rescale + mean/std normalization and the dtype cast done
while the operand is loaded, and the bias, CLS token and position embeddings in its epilogue.

The contract (shapes, dtypes, devices, divisibility, size arithmetic, and on CPU the values of mean
and std) is csrc/include/vlmops/patch_embed_checks.h.
"""

import torch

from vlmops.ops import registry
from vlmops.reference.patch_embed import patch_embed as _reference_patch_embed
from vlmops.reference.patch_embed import patch_embed_backward as _reference_patch_embed_backward

__all__ = ["patch_embed"]


def patch_embed(x, weight, bias=None, *, mean=None, std=None, rescale=None, pos_embed=None, cls_token=None):
    """Conv2d/Conv3d patch embedding (kernel == stride) as one GEMM, with the processor's normalization fused.

    Args:
        x: one of
            (a) images ``[B, C, H, W]`` with a Conv2d weight, H % Ph == 0 and W % Pw == 0;
            (b) videos ``[B, C, F, H, W]`` with a Conv3d weight, also F % T == 0;
            (c) pre-patchified rows ``[N, C*T*Ph*Pw]`` in (C, T, Ph, Pw) order, as the Qwen2-VL
                image/video processors emit them (``pixel_values``), with either weight.
            uint8 or float (any strides, read in place); it is cast to weight's dtype on load.
        weight: the conv's weight, ``[D, C, Ph, Pw]`` (Conv2d) or ``[D, C, T, Ph, Pw]`` (Conv3d), every
            size >= 1; float32, float64, float16 or bfloat16. The GEMM runs in this dtype
            with fp32 accumulation.
        bias: optional ``[D]`` in weight's dtype.
        mean, std: optional ``[C]`` float tensors; rescale: optional finite float (1/255 for uint8
            pixels). Each pixel becomes ``(x * rescale - mean[c]) / std[c]`` (computed in float32,
            float64 for a float64 weight) before the GEMM, as the image processors do. They are
            constants: no gradient flows to them. On CPU, std must be nonzero and finite and mean
            finite (checked); on CUDA they are not checked (that would synchronize).
        pos_embed: optional ``[ncls + L, D]`` learned position embeddings (CLIP/SigLIP/InternViT's
            ``position_embedding.weight``), added to every sample; images and videos only.
        cls_token: optional ``[D]`` class embedding prepended to each sample (ncls = 1; CLIP,
            InternViT), images and videos only.

    Returns:
        (a)/(b): ``[B, ncls + L, D]`` with L = (F/T)*(H/Ph)*(W/Pw) patches, frame-major then row-major
        (the conv's output after ``flatten(2).transpose(1, 2)``); (c): ``[N, D]``. In weight's dtype.
        Differentiable (float x) in x, weight, bias, pos_embed and cls_token; not twice.

    Errors: ``ValueError`` naming the argument for a shape, dtype, device or value mistake (a size
    not divisible by the patch size says which crop nn.Conv would take); ``TypeError`` for an
    argument of the wrong type.
    """
    return _patch_embed(x, weight, bias, mean, std, rescale, pos_embed, cls_token)


def _patches_per_sample(x, weight):
    """L, after the rule that each size of x is a whole number of patches."""
    patches = 1
    for size, k in zip(x.shape[2:], weight.shape[2:]):  # a loop, not math.prod(generator): Dynamo traces it
        torch._check(size % k == 0, lambda: "vlmops.patch_embed: the sizes of x must be multiples of the patch size")
        patches *= size // k
    return patches


def _columns(weight):
    """C*T*Ph*Pw, after the rule that no size of weight is 0."""
    columns = 1
    for d, size in enumerate(weight.shape):
        torch._check(size >= 1, lambda: "vlmops.patch_embed: weight must have D, C and a kernel of sizes >= 1")
        columns *= size if d > 0 else 1
    return columns


def _check_x_weight(x, weight):
    """The shape rules between x and weight; returns (rows, samples, L, D)."""
    torch._check(weight.dim() in (4, 5), lambda: "vlmops.patch_embed: weight must be [D, C, P, P] or [D, C, T, P, P]")
    torch._check(x.dim() in (2, 4, 5), lambda: "vlmops.patch_embed: x must be rows, images or videos")
    columns = _columns(weight)
    if x.dim() == 2:
        torch._check(x.shape[1] == columns, lambda: "vlmops.patch_embed: rows x must have C*T*Ph*Pw columns")
        return True, 1, x.shape[0], weight.shape[0]
    torch._check(x.dim() == weight.dim(), lambda: "vlmops.patch_embed: images need a Conv2d weight, videos Conv3d")
    torch._check(x.shape[1] == weight.shape[1], lambda: "vlmops.patch_embed: x must have weight's channels")
    return False, x.shape[0], _patches_per_sample(x, weight), weight.shape[0]


def _fake(x, weight, bias, mean, std, rescale, pos_embed, cls_token):
    rows, samples, length, D = _check_x_weight(x, weight)
    torch._check(
        not rows or (pos_embed is None and cls_token is None),
        lambda: "vlmops.patch_embed: pos_embed and cls_token need images or videos, not rows",
    )
    ncls = 0 if cls_token is None else 1
    for name, t, shape in (
        ("bias", bias, (D,)),
        ("pos_embed", pos_embed, (ncls + length, D)),
        ("cls_token", cls_token, (D,)),
    ):
        if t is not None:
            torch._check(t.shape == shape, lambda name=name, shape=shape: f"vlmops.patch_embed: {name} must be {shape}")
    return weight.new_empty(length, D) if rows else weight.new_empty(samples, ncls + length, D)


def _backward_fake(grad_patches, x, weight, mean, std, rescale, compute_grad_x):
    rows, samples, length, D = _check_x_weight(x, weight)
    shape = (length, D) if rows else (samples, length, D)
    torch._check(grad_patches.shape == shape, lambda: f"vlmops.patch_embed_backward: grad_patches must be {shape}")
    grad_x = x.new_empty(x.shape) if compute_grad_x else x.new_empty(0)
    return grad_x, weight.new_empty(weight.shape), weight.new_empty(D)


def _setup_context(ctx, inputs, output):
    x, weight, bias, mean, std, rescale, pos_embed, cls_token = inputs
    ctx.save_for_backward(x, weight, mean, std)
    ctx.rescale = rescale
    ctx.has_cls = cls_token is not None


def _backward(ctx, grad):
    x, weight, mean, std = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_x = grad_weight = grad_bias = None
    if needs[0] or needs[1] or needs[2]:
        # The CLS row does not come from the GEMM: only the patch rows flow back through it.
        grad_patches = grad[:, 1:] if ctx.has_cls else grad
        grad_x, grad_weight, grad_bias = torch.ops.vlmops.patch_embed_backward(
            grad_patches, x, weight, mean, std, ctx.rescale, needs[0]
        )
    grad_pos = grad.sum(0) if needs[6] else None
    grad_cls = grad[:, 0].sum(0) if needs[7] else None
    return (
        grad_x if needs[0] else None,
        grad_weight if needs[1] else None,
        grad_bias if needs[2] else None,
        None,
        None,
        None,
        grad_pos,
        grad_cls,
    )


_TRITON = "vlmops.triton.patch_embed:"
registry.define(
    registry.OpDef(
        "patch_embed",
        _fake,
        _reference_patch_embed,
        _backward,
        _setup_context,
        triton=_TRITON + "patch_embed",
    )
)
registry.define(
    registry.OpDef(
        "patch_embed_backward",
        _backward_fake,
        _reference_patch_embed_backward,
        triton=_TRITON + "patch_embed_backward",
        not_differentiable="double backward of patch_embed is not implemented",
    )
)
_patch_embed = registry.op("patch_embed")
