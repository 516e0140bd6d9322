"""Reference pixel shuffle (token merging) of InternVL (ps_version v2), Idefics3 and SmolVLM.

Output token (i, j) of a [H, W] grid merged by scale s is the concatenation, over (dy, dx) in
row-major order, of the input tokens (s*i + dy, s*j + dx): channel (dy*s + dx)*C + c.
"""

import torch
import torch.nn.functional as F


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """x [B, H, W, C] -> [B, H/s, W/s, s*s*C]."""
    B, H, W, C = x.shape
    s = scale
    return x.reshape(B, H // s, s, W // s, s, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H // s, W // s, s * s * C)


def pixel_shuffle_backward(grad_out: torch.Tensor, scale: int) -> torch.Tensor:
    """grad_out [B, H/s, W/s, s*s*C] -> grad_x [B, H, W, C]: the inverse permutation."""
    B, Ho, Wo, n = grad_out.shape
    s = scale
    C = n // (s * s)
    return grad_out.reshape(B, Ho, Wo, s, s, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Ho * s, Wo * s, C)


def pixel_shuffle_layer_norm(x, scale, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the s*s*C channels of pixel_shuffle(x, scale) (InternVL's projector start)."""
    y = pixel_shuffle(x, scale)
    return F.layer_norm(y, (y.shape[-1],), weight, bias, eps)


def pixel_shuffle_layer_norm_stats(x, scale, weight=None, bias=None, eps=1e-5):
    """The op's outputs: (out, mean [B, H/s, W/s], rstd [B, H/s, W/s]), statistics in float32 (float64
    for float64 x); an empty row has NaN statistics."""
    y = pixel_shuffle(x, scale).to(_stats_dtype(x.dtype))
    mean = y.mean(-1)
    rstd = torch.rsqrt((y - mean[..., None]).square().mean(-1) + eps)
    return pixel_shuffle_layer_norm(x, scale, weight, bias, eps), mean, rstd


def pixel_shuffle_layer_norm_backward(grad_out, x, mean, rstd, weight, scale):
    """The op's backward from its saved statistics: (grad_x [B, H, W, C], grad_weight [s*s*C],
    grad_bias [s*s*C]) in x's dtype. With xhat = (y - mean) * rstd and g = grad_out * weight:
    grad_y = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    acc = _stats_dtype(x.dtype)
    xhat = (pixel_shuffle(x, scale).to(acc) - mean[..., None].to(acc)) * rstd[..., None].to(acc)
    dy = grad_out.to(acc)
    g = dy if weight is None else dy * weight.to(acc)
    grad_y = rstd[..., None].to(acc) * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    grad_weight = (dy * xhat).sum((0, 1, 2))
    grad_bias = dy.sum((0, 1, 2))
    return pixel_shuffle_backward(grad_y, scale).to(x.dtype), grad_weight.to(x.dtype), grad_bias.to(x.dtype)
