"""Llama 3.2 Vision's cross-attention layer with and without the dense ``[B, 1, Lq, Lk]`` mask.

Each timed call is what one forward spends on the mask plus one cross-attention layer reading its
keys and values from the cache (every decode step, and every layer after the first image's
projection): it builds the layer's mask input from the processor's ``cross_attention_mask``
``[B, Lq, n_images, n_tiles]``, then runs the layer (q/o projections, q norm, attention):
- `transformers`: ``_prepare_cross_attention_mask`` (the ``[B, 1, Lq, Lk]`` additive mask and the
  full-text-row mask) and ``MllamaTextCrossAttention`` with SDPA;
- `vlmops-dense-mask`: the same mask and ``vlmops.nn.MllamaCrossAttention`` reading one mask entry
  per tile (what ``patch_model``'s layer rule alone runs);
- `vlmops`: the key ranges and full-text-row mask of ``vlmops.transformers.mllama_rules
  .mllama_cross_attention_inputs`` (no dense mask) and the same vlmops layer (what ``patch_model``
  runs with the model rule).
The harness records each entry's peak memory (outputs included, inputs and cache excluded): the
dense mask and its temporaries show there. A model builds the mask once per forward and its
cross-attention layers (8 in Llama 3.2 11B Vision) share it.

Shapes (--full sizes in brackets), float32 on CPU, bfloat16 on CUDA: `mllama-4img` 4 images of 4
tiles x 1601 tokens (25616 keys), H=8, Hk=2, D=128 [the 11B's H=32, Hk=8, D=128], Lq=256 [2048] text
rows, the first 37 before the first image, each text segment sees its image. Decode is one row that
sees the last image.
"""

import pytest
import torch

from benchmarks.harness import pick

TILE_TOKENS = 1601
# (B, Lq, H, Hk, D, images, tiles per image, tokens per tile, text rows before the first image)
SHAPES = {
    "mllama-4img": {
        "default": (1, 256, 8, 2, 128, 4, 4, TILE_TOKENS, 37),
        "full": (1, 2048, 32, 8, 128, 4, 4, TILE_TOKENS, 37),
        "tiny": (1, 16, 4, 2, 32, 2, 2, 5, 3),
    },
}
IMPLS = ["vlmops", "vlmops-dense-mask", "transformers"]


def _cross_attention_mask(B, Lq, images, tiles, before, decode, device):
    """[B, Lq, images, tiles] int64, the processor's form: text segments after each image see its
    tiles, rows before the first image see nothing; decode: one row that sees the last image."""
    mask = torch.zeros(B, Lq, images, tiles, dtype=torch.int64, device=device)
    if decode:
        mask[:, :, -1] = 1
        return mask
    segment = (Lq - before) // images
    for image in range(images):
        stop = Lq if image == images - 1 else before + (image + 1) * segment
        mask[:, before + image * segment : stop, image] = 1
    return mask


@pytest.mark.parametrize("mode", ["prefill", "decode"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_mllama_cross_attention_layer(benchmark, request, device, shape_name, impl, mode):
    from transformers import MllamaTextConfig
    from transformers.cache_utils import DynamicCache
    from transformers.models.mllama.modeling_mllama import MllamaTextCrossAttention, _prepare_cross_attention_mask

    from vlmops.nn import MllamaCrossAttention
    from vlmops.transformers.mllama_rules import mllama_cross_attention_inputs

    B, Lq, H, Hk, D, images, tiles, tokens, before = pick(request, SHAPES[shape_name])
    decode = mode == "decode"
    Lq = 1 if decode else Lq
    Lk = images * tiles * tokens
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = MllamaTextConfig(hidden_size=H * D, num_attention_heads=H, num_key_value_heads=Hk)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    attention = MllamaTextCrossAttention(config, layer_idx=0).to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, Lq, H * D, generator=gen).to(device=device, dtype=dtype)
    k, v = (torch.randn(B, Hk, Lk, D, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    cache = DynamicCache()
    cache.update(k, v, 0)
    mask = _cross_attention_mask(B, Lq, images, tiles, before, decode, device)

    benchmark.group = f"mllama_cross_attention_layer:{shape_name}:{mode}"
    seen = mask.flatten(2).sum(-1) * tokens  # keys each row attends to (rows that see none: all)
    pairs = int(torch.where(seen > 0, seen, Lk).sum()) * H
    weights = 2 * (H * D) ** 2  # q_proj and o_proj
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        # Ideal: reads hidden states, the cached keys and values, the weights; writes the output.
        bytes=(2 * hidden.numel() + k.numel() + v.numel() + weights) * dtype.itemsize,
        flops=2 * B * Lq * weights + 4 * pairs * D,
        dtype=str(dtype).replace("torch.", ""),
    )

    if impl == "transformers":

        def call():
            dense, _ = _prepare_cross_attention_mask(mask, num_vision_tokens=tokens, dtype=dtype)
            return attention(hidden, cache=cache, attention_mask=dense)[0]
    else:
        layer = MllamaCrossAttention.from_mllama(attention, tokens_per_tile=tokens)
        if impl == "vlmops":

            def call():
                ranges, _ = mllama_cross_attention_inputs(mask, tokens, dtype)
                return layer(hidden, cache=cache, attention_mask=ranges)[0]
        else:

            def call():
                dense, _ = _prepare_cross_attention_mask(mask, num_vision_tokens=tokens, dtype=dtype)
                return layer(hidden, cache=cache, attention_mask=dense)[0]

    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    with torch.no_grad():
        dense, _ = _prepare_cross_attention_mask(mask, num_vision_tokens=tokens, dtype=dtype)
        expected = attention(hidden, cache=cache, attention_mask=dense)[0]
        del dense
        torch.testing.assert_close(call(), expected, rtol=tolerance, atol=tolerance)
        benchmark(call)
