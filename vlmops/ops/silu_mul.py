"""SwiGLU gating of gated MLPs: ``silu(gate) * up`` in one pass (Qwen2/2.5-VL vision and text MLPs,
Llama-style MLPs: transformers' ``act_fn(gate_proj(x)) * up_proj(x)`` with ``act_fn = SiLU``).

Eager PyTorch writes ``silu(gate)`` to memory and reads it back for the product; the fused kernels
read gate and up once and write the output once, through the inputs' strides (the GEMM outputs
feeding them are often written with padded rows, or are halves of one fused gate_up projection).
"""

import torch

from vlmops import _native
from vlmops.ops._checks import check_same_device, check_tensor
from vlmops.reference.silu_mul import silu_mul as _reference_silu_mul

__all__ = ["silu_mul"]


def check_inputs(fn: str, gate, up, grad_out=None) -> None:
    """Every argument check of the ops (shared with the Triton launchers)."""
    check_tensor(fn, "gate", gate)
    if gate.dim() < 1:
        raise ValueError(f"vlmops.{fn}: gate must be [..., I] with at least 1 dim, got a 0-dim tensor")
    others = (("up", up),) if grad_out is None else (("up", up), ("grad_out", grad_out))
    for name, t in others:
        check_tensor(fn, name, t, dtypes=None)
        if t.dtype != gate.dtype:
            raise ValueError(f"vlmops.{fn}: {name} dtype {str(t.dtype).replace('torch.', '')} must match gate dtype "
                             f"{str(gate.dtype).replace('torch.', '')}")
        if t.shape != gate.shape:
            raise ValueError(f"vlmops.{fn}: {name} of shape {tuple(t.shape)} must have gate's shape {tuple(gate.shape)}")
    check_same_device(fn, "gate", gate, **dict(others))


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, the gating of a SwiGLU MLP, rounded exactly as transformers'
    ``act_fn(gate) * up`` rounds.

    Args:
        gate: ``[..., I]``, float32, float64, float16 or bfloat16; any strides (e.g. ``buf[:, :I]``
            of a GEMM output with padded rows, or ``gate_up[..., :I]`` of a fused projection). Read
            in place, never copied (on CUDA, a tensor whose leading dims do not collapse into one
            row stride is copied once; see ``vlmops.triton.silu_mul``).
        up: ``[..., I]``, gate's shape, dtype and device; any strides.

    Returns:
        ``[..., I]`` contiguous, in gate's dtype. Differentiable in gate and up (the backward is the
        registered op ``vlmops::silu_mul_backward``).

    Rounding: silu is computed in float32 (float64 for float64 inputs) and rounded to the activation
    dtype, as ``F.silu`` returns it; its product with up is computed in float32 and rounded once. So
    bfloat16/float16 results on CPU equal ``F.silu(gate) * up`` bitwise, and float32 results agree
    within a couple of ulp (exp implementations differ).

    Errors: ``TypeError`` when gate or up is not a tensor; ``ValueError`` naming the argument for a
    dtype, shape or device mismatch or an unsupported dtype.
    """
    check_inputs("silu_mul", gate, up)
    if _native.available():
        return torch.ops.vlmops.silu_mul(gate, up)
    _native.warn_fallback("silu_mul")
    return _reference_silu_mul(gate, up)


def _register() -> None:
    @torch.library.register_fake("vlmops::silu_mul")
    def _(gate, up):
        return gate.new_empty(gate.shape)

    @torch.library.register_fake("vlmops::silu_mul_backward")
    def _(grad_out, gate, up):
        return gate.new_empty(gate.shape), gate.new_empty(gate.shape)

    def setup_context(ctx, inputs, output):
        gate, up = inputs
        ctx.save_for_backward(gate, up)

    def backward(ctx, grad_out):
        gate, up = ctx.saved_tensors
        return torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)

    torch.library.register_autograd("vlmops::silu_mul", backward, setup_context=setup_context)


if _native.available():
    _register()
