"""SwiGLU gating (`vlmops.ops.silu_mul.silu_mul`) against what users run today.

- `qwen2.5-vl-vision`: the gating of the Qwen2.5-VL vision tower's MLP (`Qwen2_5_VLMLP`,
  intermediate size I = 3420) on gate/up laid out as the vlmops tower module's GEMMs write them
  (`vlmops.nn.RowAlignedLinear`: rows padded to 3424 on CPU, contiguous rows elsewhere):
  transformers' expression `SiLUActivation()(gate) * up`, the same
  under `torch.compile`, eager PyTorch (`vlmops.reference`), and on CUDA Liger-Kernel's
  `LigerSiLUMulFunction` when installed. float32 forward and forward+backward, and a bfloat16
  forward entry (`qwen2.5-vl-vision-bf16`, --full only on CPU: see CASES).

Bytes of an ideal kernel: forward reads gate and up and writes the output; the backward reads
grad_out, gate and up and writes grad_gate and grad_up.
"""

import pytest
import torch

from benchmarks.harness import pick, require_peer
from vlmops.ops.silu_mul import silu_mul
from vlmops.reference.silu_mul import silu_mul as reference_silu_mul

# (tokens M, intermediate size I); the default is the CPU size of the brief (2048 x 3420).
SHAPES = {"default": (2048, 3420), "full": (16384, 3420), "tiny": (4, 40)}
IMPLS = ["vlmops", "transformers", "torch.compile", "eager", "liger-kernel"]
CASES = [
    pytest.param("qwen2.5-vl-vision", torch.float32, "fwd", id="fp32-fwd"),
    pytest.param("qwen2.5-vl-vision", torch.float32, "fwd+bwd", id="fp32-fwd+bwd"),
    # full_only: the harness measures a bfloat16 2048^3 GEMM roofline for a bf16 entry, which takes
    # minutes on a CPU without bf16 matmul units (the entry itself takes ~1 s).
    pytest.param("qwen2.5-vl-vision-bf16", torch.bfloat16, "fwd", id="bf16-fwd", marks=pytest.mark.full_only),
]


def _transformers_gating(gate, up):
    from transformers.activations import SiLUActivation

    return SiLUActivation()(gate) * up


def _gemm_rows(M, I, dtype, device, gen):
    """[M, I] as vlmops.nn.RowAlignedLinear writes it: on CPU a view of a [M, I rounded up to 16]
    buffer (padded rows), elsewhere contiguous (F.linear's output)."""
    width = -(-I // 16) * 16 if device == "cpu" else I
    return torch.randn(M, width, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)[:, :I]


def _function(impl, device):
    if impl == "vlmops":
        return silu_mul
    if impl == "transformers":
        return _transformers_gating
    if impl == "torch.compile":
        return torch.compile(_transformers_gating, dynamic=False)
    if impl == "eager":
        return reference_silu_mul
    require_peer("liger_kernel", device=device)
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    return LigerSiLUMulFunction.apply


@pytest.mark.parametrize("config, dtype, mode", CASES)
@pytest.mark.parametrize("impl", IMPLS)
def test_silu_mul(benchmark, request, device, impl, config, dtype, mode):
    M, I = pick(request, SHAPES)
    tensor_bytes = M * I * dtype.itemsize
    benchmark.group = f"silu_mul:{config}:{mode}"
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=(3 if mode == "fwd" else 8) * tensor_bytes,
        flops=0,
        dtype=str(dtype).replace("torch.", ""),
    )
    function = _function(impl, device)
    gen = torch.Generator().manual_seed(0)
    gate = _gemm_rows(M, I, dtype, device, gen)
    up = _gemm_rows(M, I, dtype, device, gen)
    expected = _transformers_gating(gate, up)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(function(gate, up), expected, rtol=tol, atol=tol)
    if mode == "fwd":
        benchmark(function, gate, up)
        return
    gate.requires_grad_(True)
    up.requires_grad_(True)
    grad = torch.randn(M, I, generator=gen).to(device=device, dtype=dtype)
    torch.autograd.grad(function(gate, up), (gate, up), grad)  # untimed: compiles torch.compile's backward

    def step():
        return torch.autograd.grad(function(gate, up), (gate, up), grad)

    benchmark(step)
