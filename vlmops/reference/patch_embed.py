"""Reference patch embedding: what the models and their image processors do, step by step.

The processor rescales and normalizes pixels (`(x * rescale - mean) / std`, per channel, in float32),
the model casts them to the weight's dtype and runs Conv2d/Conv3d with kernel == stride, then
flattens the patches (`flatten(2).transpose(1, 2)`), prepends the CLS token and adds the learned
position embeddings (CLIP, SigLIP, InternViT).
"""

import math

import torch
import torch.nn.functional as F


def normalize_pixels(x, mean=None, std=None, rescale=None, dtype=torch.float32):
    """`(x * rescale - mean) / std` per channel (dim 1), in float32 (float64 for a float64 dtype), cast to dtype."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    y = x.to(acc)
    channel_shape = (-1,) + (1,) * (x.dim() - 2)
    if rescale is not None:
        y = y * rescale
    if mean is not None:
        y = y - mean.to(acc).view(channel_shape)
    if std is not None:
        y = y / std.to(acc).view(channel_shape)
    return y.to(dtype)


def patch_embed(x, weight, bias=None, mean=None, std=None, rescale=None, pos_embed=None, cls_token=None):
    """Rows [N, C*T*Ph*Pw] -> [N, D]; images [B, C, H, W] / videos [B, C, F, H, W] -> [B, ncls + L, D]."""
    kernel = tuple(weight.shape[2:])
    rows = x.dim() == 2
    if rows:
        x = x.view(x.shape[0], weight.shape[1], *kernel)
    pixels = normalize_pixels(x, mean, std, rescale, weight.dtype)
    conv = F.conv2d if weight.dim() == 4 else F.conv3d
    out = conv(pixels, weight, bias, stride=kernel)
    if rows:
        return out.view(out.shape[0], weight.shape[0])
    out = out.flatten(2).transpose(1, 2)
    if cls_token is not None:
        out = torch.cat([cls_token.expand(out.shape[0], 1, -1), out], dim=1)
    if pos_embed is not None:
        out = out + pos_embed
    return out


def _im2col_layout(x, weight):
    """(split shape, permutation) taking images/videos [B, C, G1*k1, G2*k2, ...] to [B, G1, G2, ..., C, k1, k2, ...]."""
    kernel = tuple(weight.shape[2:])
    split = [x.shape[0], x.shape[1]]
    for size, k in zip(x.shape[2:], kernel):
        split += [size // k, k]
    n = len(kernel)
    order = [0] + [2 + 2 * d for d in range(n)] + [1] + [3 + 2 * d for d in range(n)]
    return split, order


def patch_embed_backward(grad_patches, x, weight, mean=None, std=None, rescale=None, compute_grad_x=True):
    """The op's backward from grad_patches (the gradient of the patch rows, [N, D] or [B, L, D], no CLS
    row): ``(grad_x (x's shape and dtype; [0] unless compute_grad_x), grad_weight, grad_bias [D])``,
    accumulated in float32 (float64 for a float64 weight). With A the normalized im2col operand
    [patches, C*T*Ph*Pw] and G = grad_patches as [patches, D]: grad_weight = G^T A, grad_bias = sum(G),
    grad_x = (G W) put back in place, times d(pixel')/d(pixel) = rescale / std[c]."""
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    D, C, K = weight.shape[0], weight.shape[1], math.prod(weight.shape[1:])
    patches = grad_patches.shape[0] * (grad_patches.shape[1] if grad_patches.dim() == 3 else 1)
    grad2d = grad_patches.reshape(patches, D).to(acc)
    if x.dim() == 2:
        operand = normalize_pixels(x.view(x.shape[0], C, K // C), mean, std, rescale, acc).reshape(-1, K)
    else:
        split, order = _im2col_layout(x, weight)
        operand = normalize_pixels(x, mean, std, rescale, acc).reshape(split).permute(order).reshape(-1, K)
    grad_weight = (grad2d.t() @ operand).view(weight.shape).to(weight.dtype)
    grad_bias = grad2d.sum(0).to(weight.dtype)
    if not compute_grad_x:
        return x.new_empty(0), grad_weight, grad_bias
    grad_operand = grad2d @ weight.reshape(D, K).to(acc)
    if x.dim() == 2:
        grad_x = grad_operand.view(x.shape[0], C, K // C)
    else:
        grad_x = grad_operand.view([split[d] for d in order]).permute([order.index(d) for d in range(len(order))])
        grad_x = grad_x.reshape(x.shape[0], C, math.prod(x.shape[2:]))
    if std is not None or rescale is not None:
        grad_scale = torch.full((C, 1), 1.0 if rescale is None else rescale, dtype=torch.float64, device=x.device)
        if std is not None:
            grad_scale = grad_scale / std.to(torch.float64).view(C, 1)
        grad_x = grad_x * grad_scale.to(acc)
    return grad_x.reshape(x.shape).to(x.dtype).contiguous(), grad_weight, grad_bias
