"""CLIP / SigLIP vision towers end to end: ``vlmops.patch_model`` against the transformers model.

Same random weights, same images; the patched tower runs ``vlmops.patch_embed`` (conv + CLS +
positions in one op) and ``attn_implementation="vlmops"`` (varlen attention over the equal-length
batch), the baseline transformers' default (sdpa). ``-embeddings`` groups time the embeddings module
alone (Conv2d + flatten + CLS concat + position add vs one ``patch_embed``).

- `clip-vit-l14-336`: CLIP ViT-L/14 at 336 px (LLaVA-1.5's tower): hidden 1024, 16 heads, MLP 4096.
- `siglip-so400m`: SigLIP so400m/14 at 384 px (LLaVA-OneVision's tower): hidden 1152, 16 heads, MLP 4304.

Default sizes are reduced for CPU runs (2 layers, 1 image at the real resolution); --full:
the real depth (24 / 27) and 8 images. fp32 on CPU, bf16 on CUDA. The FLOP count is the GEMMs'
(projections, MLP, patch embedding, attention); the bytes are the pixels, the weights and the
output, each once.
"""

import copy

import pytest
import torch

import vlmops
from benchmarks.harness import pick

TOWERS = {
    "clip-vit-l14-336": dict(
        hidden_size=1024, num_attention_heads=16, intermediate_size=4096, image_size=336, patch_size=14
    ),
    "siglip-so400m": dict(
        hidden_size=1152, num_attention_heads=16, intermediate_size=4304, image_size=384, patch_size=14
    ),
}
# (layers, images, image side)
SHAPES = {
    "clip-vit-l14-336": {"default": (2, 1, 336), "full": (24, 8, 336), "tiny": (1, 1, 56)},
    "siglip-so400m": {"default": (2, 1, 384), "full": (27, 8, 384), "tiny": (1, 1, 56)},
}


def _tower(name, layers, side, device, dtype):
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    config_cls, model_cls = (
        (CLIPVisionConfig, CLIPVisionModel) if name.startswith("clip") else (SiglipVisionConfig, SiglipVisionModel)
    )
    torch.manual_seed(0)
    config = config_cls(**{**TOWERS[name], "image_size": side}, num_hidden_layers=layers)
    return model_cls(config).to(device=device, dtype=dtype).eval()


def _flops(name, layers, images, side):
    dims = TOWERS[name]
    D, M, P = dims["hidden_size"], dims["intermediate_size"], dims["patch_size"]
    L = (side // P) ** 2 + name.startswith("clip")
    per_layer = 2 * L * (4 * D * D + 2 * D * M) + 4 * L * L * D
    return images * (layers * per_layer + 2 * L * 3 * P * P * D)


@pytest.mark.parametrize("part", ["tower", "embeddings"])
@pytest.mark.parametrize("impl", ["vlmops", "transformers"])
@pytest.mark.parametrize("name", list(TOWERS))
def test_vision_tower(benchmark, request, device, name, impl, part):
    layers, images, side = pick(request, SHAPES[name])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = _tower(name, layers, side, device, dtype)
    pixel_values = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    with torch.no_grad():
        expected = model.embeddings(pixel_values) if part == "embeddings" else model(pixel_values).last_hidden_state
    if impl == "vlmops":
        model = copy.deepcopy(model)
        vlmops.patch_model(model)
    function = model.embeddings if part == "embeddings" else (lambda x: model(x).last_hidden_state)
    # Ideal traffic: the pixels and the weights read once, the output written once.
    weights = (model.embeddings if part == "embeddings" else model).parameters()
    moved = sum(t.numel() * t.element_size() for t in (pixel_values, expected, *weights))
    benchmark.group = f"clip_tower:{name}{'-embeddings' if part == 'embeddings' else ''}:fwd"
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        dtype=str(dtype).replace("torch.", ""),
        bytes=moved,
        flops=_flops(name, 0 if part == "embeddings" else layers, images, side),
    )
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-3
    with torch.no_grad():
        torch.testing.assert_close(function(pixel_values).float(), expected.float(), rtol=tol, atol=tol)
        benchmark(function, pixel_values)
