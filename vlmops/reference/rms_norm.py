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
