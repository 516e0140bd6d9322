"""Pixel shuffle (token merging) and fused pixel shuffle + LayerNorm against what users run today.

- `pixel_shuffle_layer_norm`: InternVL's projector start, `InternVLModel.pixel_shuffle` (it does
  not use `self`, so it is called unbound with scale_factor=1/s) + reshape + `nn.LayerNorm(s*s*C)`;
  the same code under `torch.compile`; eager PyTorch (`vlmops.reference`); on CUDA the same
  shuffle + Liger-Kernel's LayerNorm when installed.
- `pixel_shuffle`: InternVL's and Idefics3's (`Idefics3Connector.pixel_shuffle`, unbound, on
  `[B, H*W, C]`) shuffles and eager PyTorch.

Shapes: InternVL tiles (448 px / 14 = 32 x 32 tokens, 8 tiles) of InternViT-300M (C=1024) by
default, which is also the shape of the CPU targets; --full adds InternViT-6B (C=3200) and
SmolVLM-256M (SigLIP-B 32 x 32 tokens, C=768, scale 4). Sizes are kept on CPU: 32 MiB fp32.
"""

import pytest
import torch

import vlmops
from benchmarks.harness import pick, require_peer

# CPU targets of pixel shuffle: the fused forward must be >= 2x the transformers path and
# faster than torch.compile of it. The runner checks these against the measured ratios.
CPU_TARGETS = [
    {
        "group": "pixel_shuffle_layer_norm:internvl-300m:fwd",
        "baseline": "transformers",
        "min_speedup": 2.0,
        "source": "fused forward >= 2x the transformers path (InternVL shuffle + nn.LayerNorm)",
    },
    {
        "group": "pixel_shuffle_layer_norm:internvl-300m:fwd",
        "baseline": "torch.compile",
        "min_speedup": 1.0,
        "source": "fused forward faster than torch.compile of the transformers path",
    },
]

# (batch of tiles, grid side, channels, scale) per tier; `tiny` only exercises the harness.
SHAPES = {
    "internvl-300m": {"default": (8, 32, 1024, 2), "tiny": (2, 4, 8, 2)},
    "internvit-6b": {"default": (8, 32, 3200, 2), "tiny": (2, 4, 8, 2)},
    "smolvlm-256m": {"default": (8, 32, 768, 4), "tiny": (2, 8, 8, 4)},
}
LN_SHAPES = [
    "internvl-300m",
    pytest.param("internvit-6b", marks=pytest.mark.full_only),
]
SHUFFLE_SHAPES = [
    "internvl-300m",
    pytest.param("smolvlm-256m", marks=pytest.mark.full_only),
]
LN_IMPLS = ["vlmops", "vlmops-triton", "transformers", "eager", "torch.compile", "liger-kernel"]
SHUFFLE_IMPLS = ["vlmops", "vlmops-triton", "transformers-internvl", "transformers-idefics3", "eager"]
DTYPE = torch.float32


def _role(impl: str) -> str:
    return "vlmops" if impl.startswith("vlmops") else "baseline"


def _use_triton(device: str, monkeypatch) -> None:
    """vlmops-triton is the public wrapper with VLMOPS_CUDA_BACKEND=triton (CUDA only)."""
    if device != "cuda":
        pytest.skip("the Triton kernels need a CUDA device")
    try:
        import vlmops.triton.pixel_shuffle  # noqa: F401
    except ImportError as error:
        pytest.skip(f"Triton kernels not available: {error}")
    monkeypatch.setenv("VLMOPS_CUDA_BACKEND", "triton")


def _internvl_shuffle(x, scale):
    from transformers.models.internvl.modeling_internvl import InternVLModel

    return InternVLModel.pixel_shuffle(None, x, scale_factor=1 / scale)


def _internvl_projector_start(x, layer_norm, scale):
    """What InternVL runs: shuffle [B, H, W, C] -> [B, H/s, W/s, s*s*C], reshape to tokens, LayerNorm."""
    shuffled = _internvl_shuffle(x, scale)
    return layer_norm(shuffled.reshape(shuffled.shape[0], -1, shuffled.shape[-1]))


def _ln_callable(impl, x, weight, bias, scale, device, monkeypatch):
    """(function of x returning the [B, (H/s)*(W/s), s*s*C] output, its differentiable parameters)."""
    features = weight.shape[0]
    if impl in ("vlmops", "vlmops-triton"):
        if impl == "vlmops-triton":
            _use_triton(device, monkeypatch)
        return (lambda x: vlmops.pixel_shuffle_layer_norm(x, scale, weight, bias).flatten(1, 2)), (weight, bias)
    if impl == "eager":
        return (lambda x: vlmops.reference.pixel_shuffle_layer_norm(x, scale, weight, bias).flatten(1, 2)), (
            weight,
            bias,
        )
    if impl == "liger-kernel":
        require_peer("liger_kernel", device=device)
        from liger_kernel.transformers import LigerLayerNorm

        layer_norm = LigerLayerNorm(features, eps=1e-5).to(device=device, dtype=x.dtype)
    else:
        layer_norm = torch.nn.LayerNorm(features, device=device, dtype=x.dtype)
    with torch.no_grad():
        layer_norm.weight.copy_(weight)
        layer_norm.bias.copy_(bias)
    layer_norm.requires_grad_(weight.requires_grad)
    function = lambda x: _internvl_projector_start(x, layer_norm, scale)  # noqa: E731
    if impl == "torch.compile":
        function = torch.compile(function, dynamic=False)
    return function, (layer_norm.weight, layer_norm.bias)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", LN_IMPLS)
@pytest.mark.parametrize("shape_name", LN_SHAPES)
def test_pixel_shuffle_layer_norm(benchmark, request, device, monkeypatch, shape_name, impl, mode):
    batch, side, channels, scale = pick(request, SHAPES[shape_name])
    features = channels * scale * scale
    numel = batch * side * side * channels
    # Ideal kernel: fwd reads x and writes y; bwd reads grad_y and x, writes grad_x (the statistics
    # are [tokens] vectors, negligible); the affine parameters are read and their grads written.
    moved = (2 if mode == "fwd" else 5) * numel + (2 if mode == "fwd" else 4) * features
    benchmark.group = f"pixel_shuffle_layer_norm:{shape_name}:{mode}"
    benchmark.extra_info.update(
        impl=impl, role=_role(impl), bytes=moved * DTYPE.itemsize, flops=0, dtype=str(DTYPE).replace("torch.", "")
    )

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, side, side, channels, generator=gen, dtype=DTYPE).to(device)
    weight = (1 + 0.1 * torch.randn(features, generator=gen, dtype=DTYPE)).to(device)
    bias = (0.1 * torch.randn(features, generator=gen, dtype=DTYPE)).to(device)
    backward = mode == "fwd+bwd"
    if backward:
        x.requires_grad_()
        weight.requires_grad_()
        bias.requires_grad_()
    function, params = _ln_callable(impl, x, weight, bias, scale, device, monkeypatch)
    expected = vlmops.reference.pixel_shuffle_layer_norm(x.detach(), scale, weight.detach(), bias.detach()).flatten(
        1, 2
    )

    if backward:
        grad_out = torch.randn(expected.shape, generator=gen, dtype=DTYPE).to(device)
        inputs = (x, *params)
        # The untimed first call checks the output and compiles both graphs of torch.compile;
        # autograd.grad returns the gradients instead of accumulating them into .grad.
        out = function(x)
        torch.testing.assert_close(out.detach(), expected, rtol=1e-4, atol=1e-4)
        torch.autograd.grad(out, inputs, grad_out)
        benchmark(lambda: torch.autograd.grad(function(x), inputs, grad_out))
    else:
        with torch.no_grad():
            torch.testing.assert_close(function(x), expected, rtol=1e-4, atol=1e-4)
            benchmark(function, x)


@pytest.mark.parametrize("impl", SHUFFLE_IMPLS)
@pytest.mark.parametrize("shape_name", SHUFFLE_SHAPES)
def test_pixel_shuffle(benchmark, request, device, monkeypatch, shape_name, impl):
    batch, side, channels, scale = pick(request, SHAPES[shape_name])
    numel = batch * side * side * channels
    benchmark.group = f"pixel_shuffle:{shape_name}:fwd"
    benchmark.extra_info.update(
        impl=impl, role=_role(impl), bytes=2 * numel * DTYPE.itemsize, flops=0, dtype=str(DTYPE).replace("torch.", "")
    )
    if impl == "vlmops-triton":
        _use_triton(device, monkeypatch)

    x = torch.randn(batch, side * side, channels, generator=torch.Generator().manual_seed(0), dtype=DTYPE).to(device)
    grid = x.unflatten(1, (side, side))  # a view: every implementation reads the same memory
    if impl.startswith("vlmops"):
        function, arg = (lambda grid: vlmops.pixel_shuffle(grid, scale)), grid
    elif impl == "transformers-internvl":
        function, arg = (lambda grid: _internvl_shuffle(grid, scale)), grid
    elif impl == "transformers-idefics3":
        from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector

        function, arg = (lambda tokens: Idefics3Connector.pixel_shuffle(None, tokens, scale)), x
    else:
        function, arg = (lambda grid: vlmops.reference.pixel_shuffle(grid, scale)), grid
    expected = vlmops.reference.pixel_shuffle(grid, scale)
    torch.testing.assert_close(function(arg).reshape(expected.shape), expected, rtol=0, atol=0)
    benchmark(function, arg)
