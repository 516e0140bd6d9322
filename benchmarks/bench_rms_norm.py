"""RMSNorm (`vlmops.ops.rms_norm.rms_norm`) against what users run today.

- `qwen2.5-vl-vision`: the vision tower's norms, [tokens, 1280] with a weight of x's dtype (fp32, and one
  bf16 entry): transformers' `Qwen2_5_VLRMSNorm` module, `torch.compile` of it, eager PyTorch
  (`vlmops.reference`), `torch.nn.functional.rms_norm` (an extra eager peer: one fused ATen op, without
  transformers' rounding of the normalized value to x's dtype), and on CUDA Liger-Kernel's
  `LigerRMSNorm` when installed.

Bytes of an ideal kernel: forward reads x and writes out; forward+backward also reads x and grad_out
and writes grad_x (the weight is negligible).
"""

import pytest
import torch

from benchmarks.harness import pick
from vlmops.ops.rms_norm import rms_norm
from vlmops.reference.rms_norm import rms_norm as reference_rms_norm

# (tokens, C): 2048 vision tokens of Qwen2.5-VL (C = 1280) by default; --full: 16384 tokens.
SHAPES = {"default": (2048, 1280), "full": (16384, 1280), "tiny": (8, 32)}
IMPLS = ["vlmops", "transformers", "torch.compile", "eager", "F.rms_norm", "peer"]
EPS = 1e-6


def _run(function, x, mode):
    if mode == "fwd":
        return lambda: function(x)
    x.requires_grad_(True)
    out = function(x)
    grad = torch.randn_like(out)
    torch.autograd.grad(out, (x,), grad)  # untimed: compiles torch.compile's backward
    return lambda: torch.autograd.grad(function(x), (x,), grad)


# fp32 forward and forward+backward, and one bf16 forward entry.
@pytest.mark.parametrize(
    "mode, dtype",
    [("fwd", torch.float32), ("fwd+bwd", torch.float32), ("fwd", torch.bfloat16)],
    ids=["fwd-fp32", "fwd+bwd-fp32", "fwd-bf16"],
)
@pytest.mark.parametrize("impl", IMPLS)
def test_rms_norm_qwen2_5_vl_vision(benchmark, request, device, impl, mode, dtype):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

    tokens, C = pick(request, SHAPES)
    benchmark.group = f"rms_norm:qwen2.5-vl-vision:{mode}:{str(dtype).replace('torch.', '')}"
    io_bytes = tokens * C * dtype.itemsize
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=(2 if mode == "fwd" else 5) * io_bytes,
        flops=0,
        dtype=str(dtype).replace("torch.", ""),
    )
    gen = torch.Generator().manual_seed(0)
    norm = Qwen2_5_VLRMSNorm(C, eps=EPS).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(C, generator=gen))
    x = torch.randn(tokens, C, generator=gen).to(device=device, dtype=dtype)

    if impl == "vlmops":
        function = lambda x: rms_norm(x, norm.weight, EPS)  # noqa: E731
    elif impl == "transformers":
        function = norm
    elif impl == "torch.compile":
        function = torch.compile(norm, dynamic=False)
    elif impl == "eager":
        function = lambda x: reference_rms_norm(x, norm.weight, EPS)[0]  # noqa: E731
    elif impl == "F.rms_norm":
        function = lambda x: torch.nn.functional.rms_norm(x, (C,), norm.weight, EPS)  # noqa: E731
    else:
        if device != "cuda":
            pytest.skip("Liger-Kernel's RMSNorm is a Triton kernel for CUDA devices")
        try:
            from liger_kernel.transformers.rms_norm import LigerRMSNorm
        except ImportError:
            pytest.skip("liger-kernel not installed")
        liger = LigerRMSNorm(C, eps=EPS).to(device=device, dtype=dtype)
        with torch.no_grad():
            liger.weight.copy_(norm.weight)
        function = liger

    expected = norm(x).detach()
    got = function(x.clone()).detach()
    # F.rms_norm and Liger do not round the normalized value to x's dtype: bf16 differs by an ulp.
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    benchmark(_run(function, x, mode))
