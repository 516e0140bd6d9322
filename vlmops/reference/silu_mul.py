"""Reference SwiGLU gating, written from transformers' gated MLPs (e.g. `Qwen2_5_VLMLP.forward`:
``self.act_fn(self.gate_proj(x)) * self.up_proj(x)`` with ``act_fn = SiLUActivation``, i.e. F.silu).

Rounding, spelled out: silu is computed in the math dtype (float32, float64 for float64 tensors) and
rounded to the activation dtype (F.silu of gate itself); the product with up is computed in the math
dtype and rounded once (eager bf16/fp16 multiplication). The backward is what autograd computes for
that code: MulBackward (grad_out * silu(gate), grad_out * up, each rounded) then silu's backward
``dy * sigmoid * (1 + g * (1 - sigmoid))`` in the math dtype, rounded once.
"""

import torch
import torch.nn.functional as F


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up [..., I] -> silu(gate) * up [..., I] in gate's dtype."""
    math = _math_dtype(gate.dtype)
    return (F.silu(gate).to(math) * up.to(math)).to(gate.dtype)


def silu_mul_backward(grad_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor):
    """(grad_gate, grad_up) of silu_mul, each [..., I] in gate's dtype: autograd's MulBackward then
    silu's own backward (``aten.silu_backward``, the kernel autograd runs for F.silu)."""
    dtype, math = gate.dtype, _math_dtype(gate.dtype)
    grad_up = (grad_out.to(math) * F.silu(gate).to(math)).to(dtype)
    dy = (grad_out.to(math) * up.to(math)).to(dtype)
    return torch.ops.aten.silu_backward(dy, gate), grad_up
