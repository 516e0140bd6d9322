"""SwiGLU gating of gated MLPs: ``silu(gate) * up`` in one pass (Qwen2/2.5-VL vision and text MLPs,
Llama-style MLPs: transformers' ``act_fn(gate_proj(x)) * up_proj(x)`` with ``act_fn = SiLU``).

Eager PyTorch writes ``silu(gate)`` to memory and reads it back for the product; the fused kernels
read gate and up once and write the output once, through the inputs' strides (the GEMM outputs
feeding them are often written with padded rows, or are halves of one fused gate_up projection).

The contract (shapes, dtypes, devices) is csrc/include/vlmops/silu_mul_checks.h.
"""

import torch

from vlmops.ops import registry
from vlmops.reference.silu_mul import silu_mul as _reference_silu_mul
from vlmops.reference.silu_mul import silu_mul_backward as _reference_silu_mul_backward

__all__ = ["silu_mul"]


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, the gating of a SwiGLU MLP, rounded exactly as transformers'
    ``act_fn(gate) * up`` rounds.

    Args:
        gate: ``[..., I]``, float32, float64, float16 or bfloat16; any strides (e.g. ``buf[:, :I]``
            of a GEMM output with padded rows, or ``gate_up[..., :I]`` of a fused projection, or an
            expanded tensor). Read in place, never copied (on CUDA, a tensor whose leading dims do not
            collapse into one row stride is copied once; see ``vlmops.triton.silu_mul``).
        up: ``[..., I]``, gate's shape, dtype and device; any strides.

    Returns:
        ``[..., I]`` contiguous, in gate's dtype. Differentiable in gate and up, twice and more (the
        backward is the registered op ``vlmops::silu_mul_backward``, whose own backward is a composition
        of PyTorch ops).

    Rounding: silu is computed in float32 (float64 for float64 inputs) and rounded to the activation
    dtype, as ``F.silu`` returns it; its product with up is computed in float32 and rounded once. So
    bfloat16/float16 results on CPU equal ``F.silu(gate) * up`` bitwise but for rare one-ulp
    differences, and float32 results agree within a couple of ulp (exp implementations differ). NaN and
    infinities propagate as in eager PyTorch (``silu(-inf) = nan``, ``silu(+inf) = inf``).

    Errors: ``TypeError`` when gate or up is not a tensor; ``ValueError`` naming the argument for a
    dtype, shape or device mismatch or an unsupported dtype.
    """
    return _silu_mul(gate, up)


def _fake(gate, up):
    torch._check(gate.dim() >= 1, lambda: "vlmops.silu_mul: gate must be [..., I] with at least 1 dim")
    torch._check(up.shape == gate.shape, lambda: f"vlmops.silu_mul: up must be gate's shape {tuple(gate.shape)}")
    return gate.new_empty(gate.shape)


def _backward_fake(grad_out, gate, up):
    op = "vlmops.silu_mul_backward"
    torch._check(gate.dim() >= 1, lambda: f"{op}: gate must be [..., I] with at least 1 dim")
    torch._check(up.shape == gate.shape, lambda: f"{op}: up must be gate's shape {tuple(gate.shape)}")
    torch._check(grad_out.shape == gate.shape, lambda: f"{op}: grad_out must be gate's shape {tuple(gate.shape)}")
    return gate.new_empty(gate.shape), gate.new_empty(gate.shape)


def _setup_context(ctx, inputs, output):
    gate, up = inputs
    ctx.save_for_backward(gate, up)


def _backward(ctx, grad_out):
    gate, up = ctx.saved_tensors
    grad_gate, grad_up = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    return grad_gate if ctx.needs_input_grad[0] else None, grad_up if ctx.needs_input_grad[1] else None


def _backward_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward_backward(ctx, grad_grad_gate, grad_grad_up):
    """The derivative of (grad_gate, grad_up) = (grad_out * up * silu'(gate), grad_out * silu(gate)) in
    PyTorch ops (differentiable again), in the math dtype (float32, float64 for float64) and rounded once:
    with s = sigmoid(gate), silu' = s (1 + gate (1 - s)) and silu'' = s (1 - s) (2 + gate (1 - 2 s))."""
    grad_out, gate, up = ctx.saved_tensors
    math = torch.float64 if gate.dtype == torch.float64 else torch.float32
    go, g, u = grad_out.to(math), gate.to(math), up.to(math)
    ggg = torch.zeros_like(g) if grad_grad_gate is None else grad_grad_gate.to(math)
    ggu = torch.zeros_like(g) if grad_grad_up is None else grad_grad_up.to(math)
    s = torch.sigmoid(g)
    dsilu = s * (1 + g * (1 - s))
    grad_grad_out = grad_gate = grad_up = None
    if ctx.needs_input_grad[0]:
        grad_grad_out = (ggu * g * s + ggg * u * dsilu).to(grad_out.dtype)
    if ctx.needs_input_grad[1]:
        d2silu = s * (1 - s) * (2 + g * (1 - 2 * s))
        grad_gate = (go * (ggu * dsilu + ggg * u * d2silu)).to(gate.dtype)
    if ctx.needs_input_grad[2]:
        grad_up = (ggg * go * dsilu).to(up.dtype)
    return grad_grad_out, grad_gate, grad_up


registry.define(
    registry.OpDef(
        "silu_mul",
        _fake,
        _reference_silu_mul,
        _backward,
        _setup_context,
        triton="vlmops.triton.silu_mul:silu_mul",
    )
)
registry.define(
    registry.OpDef(
        "silu_mul_backward",
        _backward_fake,
        _reference_silu_mul_backward,
        _backward_backward,
        _backward_setup_context,
        triton="vlmops.triton.silu_mul:silu_mul_backward",
    )
)
_silu_mul = registry.op("silu_mul")
