"""Patch embedding as one GEMM: the Conv2d/Conv3d (kernel == stride) at the start of every ViT.

CLIP, SigLIP, InternViT and Pixtral embed images with a Conv2d; Qwen2-VL/2.5-VL/3-VL embed rows the
processor has already cut into patches of 2 frames x P x P with a Conv3d. Both are a GEMM of the
patches [L, C*T*P*P] by the flattened weight [D, C*T*P*P]^T; vlmops runs that GEMM directly, with
the im2col gather, the processor's uint8 rescale + mean/std normalization and the dtype cast done
while the operand is loaded, and the bias, CLS token and position embeddings in its epilogue.
"""

import math

import torch

from vlmops import _native, reference
from vlmops.ops._checks import FLOAT_DTYPES, check_same_device, check_tensor

__all__ = ["patch_embed"]

_FN = "patch_embed"
PIXEL_DTYPES = (torch.uint8,) + FLOAT_DTYPES


def _patches_per_sample(x: torch.Tensor, weight: torch.Tensor) -> int:
    """Patches of one image/video (L); x was validated."""
    patches = 1
    for size, k in zip(x.shape[2:], weight.shape[2:]):  # a loop, not math.prod(generator): Dynamo traces it
        patches *= size // k
    return patches


def _check_geometry(x, weight) -> None:
    C, kernel = weight.shape[1], tuple(weight.shape[2:])
    if x.dim() == 2:
        columns = C * math.prod(kernel)
        if x.shape[1] != columns:
            raise ValueError(
                f"vlmops.{_FN}: rows x [N, C*T*Ph*Pw] must have {columns} columns for weight of shape "
                f"{tuple(weight.shape)}, got shape {tuple(x.shape)}"
            )
        return
    if x.dim() != weight.dim():
        expected = "[D, C, P, P] (Conv2d) for images [B, C, H, W]" if x.dim() == 4 else \
            "[D, C, T, P, P] (Conv3d) for videos [B, C, F, H, W]"
        raise ValueError(f"vlmops.{_FN}: weight must be {expected}, got shape {tuple(weight.shape)}")
    if x.shape[1] != C:
        raise ValueError(f"vlmops.{_FN}: x has {x.shape[1]} channels (dim 1) but weight expects {C}")
    names = ("frames F", "height H", "width W")[-len(kernel):]
    for dim, (name, size, k) in enumerate(zip(names, x.shape[2:], kernel), start=2):
        if size % k:
            # nn.Conv2d/Conv3d silently drop the remainder (SigLIP-so400m: 384 px, P=14 -> 378 px).
            index = ", ".join([":"] * dim + [f":{size - size % k}"])
            raise ValueError(
                f"vlmops.{_FN}: {name} = {size} of x {tuple(x.shape)} is not divisible by the patch size {k}; "
                f"nn.Conv would drop the last {size % k}: pass the crop x[{index}] (a view, read in place) to do the same"
            )


def _check_vector(name, t, shape, dtype, dtypes=FLOAT_DTYPES) -> None:
    check_tensor(_FN, name, t, dtypes=dtypes)
    if tuple(t.shape) != shape:
        raise ValueError(f"vlmops.{_FN}: {name} must have shape {shape}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"vlmops.{_FN}: {name} must have weight's dtype {dtype}, got {t.dtype}")


def patch_embed(x, weight, bias=None, *, mean=None, std=None, rescale=None, pos_embed=None, cls_token=None):
    """Conv2d/Conv3d patch embedding (kernel == stride) as one GEMM, with the processor's normalization fused.

    Args:
        x: one of
            (a) images ``[B, C, H, W]`` with a Conv2d weight, H % Ph == 0 and W % Pw == 0;
            (b) videos ``[B, C, F, H, W]`` with a Conv3d weight, also F % T == 0;
            (c) pre-patchified rows ``[N, C*T*Ph*Pw]`` in (C, T, Ph, Pw) order, as the Qwen2-VL
                image/video processors emit them (``pixel_values``), with either weight.
            uint8 or float (any strides, read in place); it is cast to weight's dtype on load.
        weight: the conv's weight, ``[D, C, Ph, Pw]`` (Conv2d) or ``[D, C, T, Ph, Pw]`` (Conv3d);
            float32, float64, float16 or bfloat16. The GEMM runs in this dtype with fp32 accumulation.
        bias: optional ``[D]`` in weight's dtype.
        mean, std: optional ``[C]`` float tensors; rescale: optional float (1/255 for uint8 pixels).
            Each pixel becomes ``(x * rescale - mean[c]) / std[c]`` (computed in float32, float64 for
            a float64 weight) before the GEMM, as the image processors do. They are constants: no
            gradient flows to them. On CPU, std must be nonzero and finite (checked); on CUDA it is
            not checked (that would synchronize).
        pos_embed: optional ``[ncls + L, D]`` learned position embeddings (CLIP/SigLIP/InternViT's
            ``position_embedding.weight``), added to every sample; images and videos only.
        cls_token: optional ``[D]`` class embedding prepended to each sample (ncls = 1; CLIP,
            InternViT), images and videos only.

    Returns:
        (a)/(b): ``[B, ncls + L, D]`` with L = (F/T)*(H/Ph)*(W/Pw) patches, frame-major then row-major
        (the conv's output after ``flatten(2).transpose(1, 2)``); (c): ``[N, D]``. In weight's dtype.

    Backward (float x): gradients of x (when it requires grad), weight, bias, pos_embed and cls_token.
    """
    check_tensor(_FN, "weight", weight, ndim=(4, 5))
    check_tensor(_FN, "x", x, dtypes=PIXEL_DTYPES, ndim=(2, 4, 5))
    _check_geometry(x, weight)
    D, C = weight.shape[0], weight.shape[1]
    if bias is not None:
        _check_vector("bias", bias, (D,), weight.dtype)
    for name, t in (("mean", mean), ("std", std)):
        if t is not None:
            _check_vector(name, t, (C,), None)
    if rescale is not None and (isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not math.isfinite(rescale)):
        raise ValueError(f"vlmops.{_FN}: rescale must be a finite float, got {rescale!r}")
    if x.dim() == 2 and (pos_embed is not None or cls_token is not None):
        raise ValueError(f"vlmops.{_FN}: pos_embed and cls_token need images or videos (patches grouped by sample), not rows")
    ncls = 0 if cls_token is None else 1
    if cls_token is not None:
        _check_vector("cls_token", cls_token, (D,), weight.dtype)
    if pos_embed is not None:
        _check_vector("pos_embed", pos_embed, (ncls + _patches_per_sample(x, weight), D), weight.dtype)
    check_same_device(_FN, "x", x, weight=weight, bias=bias, mean=mean, std=std, pos_embed=pos_embed, cls_token=cls_token)
    rescale = None if rescale is None else float(rescale)
    if not _native.available():
        _native.warn_fallback(_FN)
        return reference.patch_embed(x, weight, bias, mean, std, rescale, pos_embed, cls_token)
    return torch.ops.vlmops.patch_embed(x, weight, bias, mean, std, rescale, pos_embed, cls_token)


def _register() -> None:
    @torch.library.register_fake("vlmops::patch_embed")
    def _(x, weight, bias, mean, std, rescale, pos_embed, cls_token):
        D = weight.shape[0]
        if x.dim() == 2:
            return weight.new_empty(x.shape[0], D)
        ncls = 0 if cls_token is None else 1
        return weight.new_empty(x.shape[0], ncls + _patches_per_sample(x, weight), D)

    @torch.library.register_fake("vlmops::patch_embed_backward")
    def _(grad_patches, x, weight, mean, std, rescale, compute_grad_x):
        grad_x = torch.empty_like(x, memory_format=torch.contiguous_format) if compute_grad_x else x.new_empty(0)
        return grad_x, torch.empty_like(weight, memory_format=torch.contiguous_format), weight.new_empty(weight.shape[0])

    def setup_context(ctx, inputs, output):
        x, weight, bias, mean, std, rescale, pos_embed, cls_token = inputs
        ctx.save_for_backward(x, weight, mean, std)
        ctx.rescale = rescale
        ctx.has_bias, ctx.has_pos, ctx.has_cls = bias is not None, pos_embed is not None, cls_token is not None

    def backward(ctx, grad):
        x, weight, mean, std = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # The CLS row does not come from the GEMM: only the patch rows flow back through it.
        grad_patches = grad[:, 1:] if ctx.has_cls else grad
        grad_x, grad_weight, grad_bias = torch.ops.vlmops.patch_embed_backward(
            grad_patches, x, weight, mean, std, ctx.rescale, bool(needs[0])
        )
        grad_pos = grad.sum(0) if ctx.has_pos and needs[6] else None
        grad_cls = grad[:, 0].sum(0) if ctx.has_cls and needs[7] else None
        return (
            grad_x if needs[0] else None,
            grad_weight if needs[1] else None,
            grad_bias if ctx.has_bias and needs[2] else None,
            None,
            None,
            None,
            grad_pos,
            grad_cls,
        )

    torch.library.register_autograd("vlmops::patch_embed", backward, setup_context=setup_context)


if _native.available():
    _register()
