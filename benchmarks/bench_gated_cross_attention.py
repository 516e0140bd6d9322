"""Gated cross-attention (Llama 3.2 Vision, OpenFlamingo) against what these models run today.

Every implementation computes ``tanh(gate) * attention`` where a text row sees its image's keys and
rows before the first image get zero, on the same q ``[B, Lq, H, D]`` and k/v ``[B, Lk, Hk, D]``
(vlmops reads them in place; the baselines take the ``[B, H, L, D]`` views):
- `transformers`: what transformers' Mllama runs: ``sdpa_attention_forward`` (imported) with the
  additive ``[B, 1, Lq, Lk]`` mask of ``_prepare_cross_attention_mask`` (imported), then the
  full-text-row mask pass and the gate pass (Mllama shapes only);
- `dense-mask-sdpa`: one SDPA (``enable_gqa``) with a dense boolean ``[B, 1, Lq, Lk]`` mask, then the
  empty-row and gate passes (the boolean mask leaves rows that see nothing undefined);
- `compiled-eager`: ``torch.compile`` of transformers' ``eager_attention_forward`` (imported) with the
  additive mask and the same passes.
Masks and key ranges are built outside the timed call (a model builds them once per forward).

Shapes (--full sizes in brackets), float32 on CPU, bfloat16 on CUDA:
`mllama-11b-1img` H=32, Hk=8, D=128, Lq=512 [2048] text rows, the first 37 before one image of
4 x 1601 keys; `mllama-11b-4img` 4 such images, Lq=64 [2048], each text segment sees its image;
`openflamingo-9b` (MPT-7B: H=Hk=32, D=128) 5 images of 64 latents, Lq=512 [2048], an ``<image>``
every Lq/5 tokens, only_attend_immediate_media. Decode is one row per sample against the same keys
(the last image).
"""

import pytest
import torch
import torch.nn.functional as F

import vlmops
from benchmarks.harness import pick

# CPU targets of gated cross-attention, fp32 at the default (reduced) sizes, side by side.
CPU_TARGETS = [
    {
        "group": "gated_cross_attention:mllama-11b-1img:prefill",
        "baseline": "transformers",
        "min_speedup": 1.2,
        "source": ">= 1.2x the transformers Mllama cross-attention path, Lq=512, one image of 4x1601 keys, "
        "37 text rows before it",
    },
]

TILE_TOKENS = 1601
# (B, Lq, H, Hk, D, images, tokens per image, text rows before the first image) per tier.
SHAPES = {
    "mllama-11b-1img": {
        "default": (1, 512, 32, 8, 128, 1, 4 * TILE_TOKENS, 37),
        "full": (1, 2048, 32, 8, 128, 1, 4 * TILE_TOKENS, 37),
        "tiny": (1, 16, 4, 2, 32, 1, 40, 3),
    },
    "mllama-11b-4img": {
        "default": (1, 64, 32, 8, 128, 4, 4 * TILE_TOKENS, 37),
        "full": (1, 2048, 32, 8, 128, 4, 4 * TILE_TOKENS, 37),
        "tiny": (1, 16, 4, 2, 32, 2, 40, 3),
    },
    "openflamingo-9b": {
        "default": (1, 512, 32, 32, 128, 5, 64, 0),
        "full": (1, 2048, 32, 32, 128, 5, 64, 0),
        "tiny": (1, 16, 4, 4, 32, 2, 8, 0),
    },
}
SHAPE_NAMES = list(SHAPES)
IMPLS = ["vlmops", "transformers", "dense-mask-sdpa", "compiled-eager"]


def _dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device == "cuda" else torch.float32


def _visibility(shape_name, B, Lq, images, tokens, before, decode, device):
    """(kv_start, kv_end) int32 [B, Lq]: text segments after each image see that image (the
    Mllama processor's and OpenFlamingo's immediate-media rule); rows before the first image see
    nothing. Decode: one row that sees the last image."""
    if decode:
        start = torch.full((B, 1), (images - 1) * tokens, dtype=torch.int32, device=device)
        return start, start + tokens
    if shape_name.startswith("openflamingo"):
        locations = torch.zeros(B, Lq, dtype=torch.bool, device=device)
        locations[:, :: Lq // images] = True
        return vlmops.flamingo_kv_ranges(locations, tokens, True, num_media=images)
    segment = (Lq - before) // images
    image = ((torch.arange(Lq, device=device) - before).clamp(min=0) // segment).clamp(max=images - 1)
    seen = torch.arange(Lq, device=device) >= before
    start = torch.where(seen, image * tokens, 0).to(torch.int32).expand(B, Lq).contiguous()
    end = torch.where(seen, (image + 1) * tokens, 0).to(torch.int32).expand(B, Lq).contiguous()
    return start, end


class _AttentionModule(torch.nn.Module):
    """What transformers' attention functions read from the calling module."""

    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = False


@pytest.mark.parametrize("mode", ["prefill", "decode"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", SHAPE_NAMES)
def test_gated_cross_attention(benchmark, request, device, shape_name, impl, mode):
    B, Lq, H, Hk, D, images, tokens, before = pick(request, SHAPES[shape_name])
    decode = mode == "decode"
    Lq = 1 if decode else Lq
    Lk = images * tokens
    dtype = _dtype(device)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, Lq, H, D, generator=gen).to(device=device, dtype=dtype)
    k, v = (torch.randn(B, Lk, Hk, D, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    gate = torch.tensor([0.7], device=device, dtype=dtype)
    start, end = _visibility(shape_name, B, Lq, images, tokens, before, decode, device)
    pairs = int((end - start).sum()) * H
    # Ideal kernel: reads q, k, v once and writes out; 4 * D flops per visible (row, key, head).
    benchmark.group = f"gated_cross_attention:{shape_name}:{mode}"
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=(2 * q.numel() + k.numel() + v.numel()) * dtype.itemsize,
        flops=4 * pairs * D,
        dtype=str(dtype).replace("torch.", ""),
    )
    scale = D**-0.5
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    seen = (end > start)[:, None, :, None]  # the full-text-row mask, [B, 1, Lq, 1]
    if impl == "vlmops":
        attend = lambda: vlmops.gated_cross_attention(q, k, v, start, end, gate)  # noqa: E731
    else:
        if impl == "transformers" and shape_name.startswith("openflamingo"):
            pytest.skip("transformers has no OpenFlamingo model")
        if device == "cpu" and pick(request, {"default": False, "full": True}) and impl != "vlmops" and Lq > 1:
            pytest.skip("[B, Lq, Lk] masks at --full sizes on CPU: the CPU target is at the default sizes")
        keys = torch.arange(Lk, device=device)
        visible = (keys >= start[..., None]) & (keys < end[..., None])  # built outside the timed call
        if impl == "dense-mask-sdpa":
            mask = visible[:, None]

            def attend():
                out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, enable_gqa=True)
                return (torch.where(seen, out, 0) * gate.tanh()).transpose(1, 2)
        else:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward
            from transformers.models.mllama.modeling_mllama import eager_attention_forward

            # _prepare_cross_attention_mask's output: 0 where visible, finfo.min elsewhere, rows that
            # see nothing zeroed (they attend to everything, then get masked).
            additive = torch.where(visible | ~seen[:, 0], 0.0, torch.finfo(dtype).min).to(dtype)[:, None]
            module = _AttentionModule(H // Hk)
            function = sdpa_attention_forward if impl == "transformers" else eager_attention_forward

            def eager():
                out, _ = function(module, qt, kt, vt, additive, scaling=scale)  # [B, Lq, H, D]
                return out * seen[:, 0, :, :, None].to(dtype) * gate.tanh()

            if impl == "compiled-eager":
                if device == "cpu" and pick(request, {"default": False, "full": True}):
                    pytest.skip("compiling at --full sizes on CPU")
                compiled = torch.compile(eager, dynamic=False)
                attend = compiled
            else:
                attend = eager

    expected = vlmops.reference.gated_cross_attention(q.float(), k.float(), v.float(), start, end, gate.float())[0]
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    with torch.no_grad():
        torch.testing.assert_close(attend().float(), expected, rtol=tolerance, atol=tolerance)
        benchmark(attend)
