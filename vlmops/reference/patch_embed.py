"""Reference patch embedding: what the models and their image processors do, step by step.

The processor rescales and normalizes pixels (`(x * rescale - mean) / std`, per channel, in float32),
the model casts them to the weight's dtype and runs Conv2d/Conv3d with kernel == stride, then
flattens the patches (`flatten(2).transpose(1, 2)`), prepends the CLS token and adds the learned
position embeddings (CLIP, SigLIP, InternViT).
"""

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
