"""Patch embedding (Conv2d/Conv3d with kernel == stride) against what users run today.

- `qwen2.5-vl`: rows [N, 3*2*14*14] -> 1280 (`Qwen2_5_VisionPatchEmbed`, a Conv3d), against the
  transformers module, `F.linear` on the same (already patchified) rows — the ideal GEMM — and
  `torch.compile` of the module. fwd and fwd+bwd (weight gradient, as in training the tower).
- `siglip-so400m`: images [B, 3, 384, 384], P=14, D=1152 (`SiglipVisionEmbeddings`: conv + bias +
  position embeddings), against the module, its `torch.compile`, and `F.linear` on patches that were
  gathered beforehand (untimed). `siglip-so400m-uint8`: uint8 pixels with the processor's rescale
  and mean/std fused (vlmops) against normalize-then-module (the baseline users run).
- `internvit-300m`: images [B, 3, 448, 448], P=14, D=1024 (`InternVLVisionEmbeddings`: conv + bias,
  CLS token, position embeddings), against the module and its `torch.compile`.
- `qwen2.5-vl-video`: videos [1, 3, F, 448, 448], T=2 (Conv3d on the 5-D video) against
  `nn.Conv3d` + flatten/transpose and `F.linear` on pre-gathered patches.

Default sizes are reduced so that a small CPU runs them in seconds (fewer rows/images/frames);
--full runs the models' sizes (N=16384 rows; 8 and 12 images; 32 frames). fp32 on CPU, bf16 on CUDA.
"""

import pytest
import torch
import torch.nn.functional as F

import vlmops
from benchmarks.harness import pick

# CPU targets of patch embedding (fp32): at least 1.5x nn.Conv3d at the Qwen2.5-VL shape and
# at least 0.9x F.linear on the already patchified operand. The runner checks the measured ratios.
CPU_TARGETS = [
    {
        "group": "patch_embed:qwen2.5-vl:fwd",
        "baseline": "transformers",
        "min_speedup": 1.5,
        "source": ">= 1.5x nn.Conv3d (Qwen2_5_VisionPatchEmbed) at the Qwen2.5-VL shape",
    },
    {
        "group": "patch_embed:qwen2.5-vl:fwd",
        "baseline": "F.linear",
        "min_speedup": 0.9,
        "source": ">= 0.9x F.linear on the already patchified operand (the gather costs < 10%)",
    },
]

SHAPES = {
    # rows N
    "qwen2.5-vl": {"default": 4096, "full": 16384, "tiny": 8},
    # (batch, side)
    "siglip-so400m": {"default": (2, 384), "full": (8, 384), "tiny": (1, 30)},  # 384 % 14 != 0, as in the model
    "internvit-300m": {"default": (2, 448), "full": (12, 448), "tiny": (1, 28)},
    # (frames, side)
    "qwen2.5-vl-video": {"default": (4, 448), "full": (32, 448), "tiny": (2, 28)},
}
MODEL_DIMS = {"qwen2.5-vl": 1280, "siglip-so400m": 1152, "internvit-300m": 1024, "qwen2.5-vl-video": 1280}
PATCH, TEMPORAL = 14, 2
SIGLIP_MEAN_STD = (0.5, 0.5)  # SigLIP's processor: mean = std = 0.5 per channel


def _dtype(device):
    return torch.bfloat16 if device == "cuda" else torch.float32


def _role(impl: str) -> str:
    return "vlmops" if impl.startswith("vlmops") else "baseline"


def _record(benchmark, group, impl, dtype, *, pixels, weight, out_elems, rows):
    """Ideal kernel: reads the pixels and the weight once, writes the tokens once."""
    D, K = weight.shape[0], weight[0].numel()
    moved = pixels.numel() * pixels.element_size() + weight.numel() * weight.element_size()
    moved += out_elems * torch.empty((), dtype=dtype).element_size()
    benchmark.group = group
    benchmark.extra_info.update(
        impl=impl, role=_role(impl), bytes=moved, flops=2 * rows * K * D, dtype=str(dtype).replace("torch.", "")
    )


def _whole_patches(x):
    """The view of x that Conv2d reads: it drops pixels past the last whole patch (SigLIP: 384 -> 378)."""
    return x[..., : x.shape[-2] // PATCH * PATCH, : x.shape[-1] // PATCH * PATCH]


def _patchify(x, kernel):
    """Images/videos -> the [B*L, C*T*P*P] operand (untimed set-up of the F.linear baseline)."""
    B, C = x.shape[:2]
    split, order = [B, C], [0]
    for d, (size, k) in enumerate(zip(x.shape[2:], kernel)):
        split += [size // k, k]
        order.append(2 + 2 * d)
    order += [1] + [3 + 2 * d for d in range(len(kernel))]
    return x.reshape(split).permute(order).reshape(-1, C * torch.Size(kernel).numel()).contiguous()


def _time(benchmark, function, args, expected, backward_inputs=None, grad_out=None):
    """Checks the untimed first call (which also compiles torch.compile graphs), then times. In bf16
    a different summation order flips the last bit of some outputs (one ulp is 1.6e-2 at 2..4)."""
    tol = 2e-2 if expected.dtype == torch.bfloat16 else 1e-3
    if backward_inputs is None:
        with torch.no_grad():
            torch.testing.assert_close(function(*args).float(), expected.float(), rtol=tol, atol=tol)
            benchmark(function, *args)
        return
    out = function(*args)
    torch.testing.assert_close(out.detach().float(), expected.float(), rtol=tol, atol=tol)
    torch.autograd.grad(out, backward_inputs, grad_out)
    benchmark(lambda: torch.autograd.grad(function(*args), backward_inputs, grad_out))


QWEN_IMPLS = ["vlmops", "transformers", "F.linear", "torch.compile"]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", QWEN_IMPLS)
def test_qwen_rows(benchmark, request, device, impl, mode):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

    N, D, dtype = pick(request, SHAPES["qwen2.5-vl"]), MODEL_DIMS["qwen2.5-vl"], _dtype(device)
    module = Qwen2_5_VisionPatchEmbed(PATCH, TEMPORAL, 3, D).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(N, 3 * TEMPORAL * PATCH * PATCH, generator=gen).to(device=device, dtype=dtype)
    weight = module.proj.weight
    _record(
        benchmark, f"patch_embed:qwen2.5-vl:{mode}", impl, dtype, pixels=rows, weight=weight, out_elems=N * D, rows=N
    )
    if impl == "vlmops":
        function = lambda rows: vlmops.patch_embed(rows, weight)  # noqa: E731
    elif impl == "F.linear":
        weight2d = weight.view(D, -1)
        function = lambda rows: F.linear(rows, weight2d)  # noqa: E731
    elif impl == "torch.compile":
        function = torch.compile(module, dynamic=False)
    else:
        function = module
    with torch.no_grad():
        expected = module(rows)
    weight.requires_grad_(mode == "fwd+bwd")
    grad_out = torch.randn(expected.shape, generator=gen).to(device=device, dtype=dtype) if mode == "fwd+bwd" else None
    _time(benchmark, function, (rows,), expected, (weight,) if mode == "fwd+bwd" else None, grad_out)


def _vision_module(name, side, D, device, dtype):
    """The transformers embeddings module of one model at real width, random weights, eval mode."""
    if name == "siglip-so400m":
        from transformers import SiglipVisionConfig
        from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings

        module = SiglipVisionEmbeddings(SiglipVisionConfig(hidden_size=D, image_size=side, patch_size=PATCH))
        params = dict(
            weight=module.patch_embedding.weight,
            bias=module.patch_embedding.bias,
            pos_embed=module.position_embedding.weight,
        )
    else:
        from transformers import InternVLVisionConfig
        from transformers.models.internvl.modeling_internvl import InternVLVisionEmbeddings

        config = InternVLVisionConfig(
            hidden_size=D, image_size=side, patch_size=PATCH, use_absolute_position_embeddings=True
        )
        module = InternVLVisionEmbeddings(config)
        with torch.no_grad():  # zero-initialized in transformers: random values make the check meaningful
            module.cls_token.normal_()
            module.position_embeddings.normal_()
        params = dict(
            weight=module.patch_embeddings.projection.weight,
            bias=module.patch_embeddings.projection.bias,
            pos_embed=module.position_embeddings[0],
            cls_token=module.cls_token.view(D),
        )
    module = module.to(device=device, dtype=dtype).eval()
    return module, {k: v.to(device=device, dtype=dtype) for k, v in params.items()}


IMAGE_IMPLS = ["vlmops", "transformers", "F.linear", "torch.compile"]


@pytest.mark.parametrize("impl", IMAGE_IMPLS)
@pytest.mark.parametrize("name", ["siglip-so400m", "internvit-300m"])
def test_image_embeddings(benchmark, request, device, name, impl):
    (B, side), D, dtype = pick(request, SHAPES[name]), MODEL_DIMS[name], _dtype(device)
    module, params = _vision_module(name, side, D, device, dtype)
    images = torch.randn(B, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    L = (side // PATCH) ** 2
    _record(
        benchmark,
        f"patch_embed:{name}:fwd",
        impl,
        dtype,
        pixels=images,
        weight=params["weight"],
        out_elems=B * (L + ("cls_token" in params)) * D,
        rows=B * L,
    )
    with torch.no_grad():
        expected = module(images)
    args = (images,)
    if impl == "vlmops":
        args = (_whole_patches(images),)
        function = lambda x: vlmops.patch_embed(x, **params)  # noqa: E731
    elif impl == "F.linear":
        if "cls_token" in params:
            pytest.skip("F.linear baseline: patch rows only (the CLS concat is a separate copy)")
        weight2d, bias, pos = params["weight"].view(D, -1), params["bias"], params["pos_embed"]
        args = (_patchify(_whole_patches(images), (PATCH, PATCH)).view(B, L, -1),)
        function = lambda rows: F.linear(rows, weight2d, bias) + pos  # noqa: E731
    elif impl == "torch.compile":
        function = torch.compile(module, dynamic=False)
    else:
        function = module
    _time(benchmark, function, args, expected)


@pytest.mark.parametrize("impl", ["vlmops-fused", "transformers"])
def test_siglip_uint8_normalization(benchmark, request, device, impl):
    (B, side), D, dtype = pick(request, SHAPES["siglip-so400m"]), MODEL_DIMS["siglip-so400m"], _dtype(device)
    module, params = _vision_module("siglip-so400m", side, D, device, dtype)
    pixels = torch.randint(0, 256, (B, 3, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels = pixels.to(device)
    mean = torch.full((3,), SIGLIP_MEAN_STD[0], device=device)
    std = torch.full((3,), SIGLIP_MEAN_STD[1], device=device)
    L = (side // PATCH) ** 2
    _record(
        benchmark,
        "patch_embed:siglip-so400m-uint8:fwd",
        impl,
        dtype,
        pixels=pixels,
        weight=params["weight"],
        out_elems=B * L * D,
        rows=B * L,
    )

    def normalize_then_module(pixels):
        # What users run: the processor's rescale + normalize in float32 (a separate pass), then the model.
        normalized = (pixels.float() * (1 / 255) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        return module(normalized.to(dtype))

    with torch.no_grad():
        expected = normalize_then_module(pixels)
    if impl == "vlmops-fused":
        args = (_whole_patches(pixels),)
        function = lambda p: vlmops.patch_embed(p, mean=mean, std=std, rescale=1 / 255, **params)  # noqa: E731
    else:
        args, function = (pixels,), normalize_then_module
    _time(benchmark, function, args, expected)


@pytest.mark.parametrize("impl", ["vlmops", "transformers-conv3d", "F.linear"])
def test_video(benchmark, request, device, impl):
    (frames, side), D, dtype = pick(request, SHAPES["qwen2.5-vl-video"]), MODEL_DIMS["qwen2.5-vl-video"], _dtype(device)
    kernel = (TEMPORAL, PATCH, PATCH)
    conv = torch.nn.Conv3d(3, D, kernel, stride=kernel, bias=False).to(device=device, dtype=dtype)
    video = torch.randn(1, 3, frames, side, side, generator=torch.Generator().manual_seed(0)).to(
        device=device, dtype=dtype
    )
    L = (frames // TEMPORAL) * (side // PATCH) ** 2
    _record(
        benchmark,
        "patch_embed:qwen2.5-vl-video:fwd",
        impl,
        dtype,
        pixels=video,
        weight=conv.weight,
        out_elems=L * D,
        rows=L,
    )
    with torch.no_grad():
        expected = conv(video).flatten(2).transpose(1, 2)
    args = (video,)
    if impl == "vlmops":
        function = lambda v: vlmops.patch_embed(v, conv.weight)  # noqa: E731
    elif impl == "F.linear":
        weight2d = conv.weight.view(D, -1)
        args = (_patchify(video, kernel).view(1, L, -1),)
        function = lambda rows: F.linear(rows, weight2d)  # noqa: E731
    else:
        function = lambda v: conv(v).flatten(2).transpose(1, 2)  # noqa: E731
    _time(benchmark, function, args, expected)
