"""Reference RMSNorm, written from the semantics of transformers' `Qwen2_5_VLRMSNorm` (= T5LayerNorm,
`Qwen2RMSNorm`, `LlamaRMSNorm`):

    h = x.to(math); var = h.pow(2).mean(-1, keepdim=True); h = h * rsqrt(var + eps)
    out = weight * h.to(x.dtype)

with the statistics in float32 (float64 for float64 x, where transformers would round to float32) and
the output dtype ``torch.promote_types(x.dtype, weight.dtype)`` (x's dtype without a weight).
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6):
    """x [..., C], weight [C] or None -> (out [..., C], rstd [...] float32 (float64 for float64 x)).

    Differentiable through autograd (the tests' backward oracle)."""
    math_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(math_dtype)
    variance = h.pow(2).mean(-1, keepdim=True)
    rstd = torch.rsqrt(variance + eps)
    out = (h * rstd).to(x.dtype)
    if weight is not None:
        out = weight * out
    return out, rstd.squeeze(-1)


def rms_norm_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor):
    """The op's backward from its saved rstd: ``(grad_x (x's dtype), grad_weight [C] (weight's dtype;
    [0] without a weight))``. With ``h = x * rstd`` and ``gw = grad_out * weight``:
    ``grad_x = rstd * (gw - h * mean(gw * h))``, ``grad_weight = sum(grad_out * h.to(x.dtype))``."""
    math_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    r = rstd.to(math_dtype).unsqueeze(-1)
    h = x.to(math_dtype) * r
    g = grad_out.to(math_dtype)
    gw = g if weight is None else g * weight.to(math_dtype)
    grad_x = (r * (gw - h * (gw * h).mean(-1, keepdim=True))).to(x.dtype)
    if weight is None:
        return grad_x, x.new_empty(0)
    grad_weight = (g * h.to(x.dtype).to(math_dtype)).reshape(-1, x.shape[-1]).sum(0)
    return grad_x, grad_weight.to(weight.dtype)
