"""The Qwen2.5-VL language model's M-RoPE as ``patch_model`` runs it, against what users run today.

One entry is the rotary work of one forward of the Qwen2.5-VL-7B language model (28 q heads, 4 kv
heads, head_dim 128, mrope_section [16, 24, 24], 28 decoder layers): the text model's rotary module,
called once, then the rotation of every layer's q ``[B, 28, S, 128]`` and k ``[B, 4, S, 128]`` (each
layer rotates the previous layer's output, so no rotation can be skipped or merged):

- `vlmops`: what the patched model runs (the "rope" rule of ``vlmops.transformers.qwen_text_rules``):
  ``vlmops.nn.MRotaryEmbedding(output="rope")`` returns the positions and per-pair tables, and each
  layer rotates q and k with ``vlmops.apply_rope`` (angles in registers, no cos/sin table);
- `transformers`: ``Qwen2_5_VLRotaryEmbedding`` (cos/sin ``[B, S, 128]`` with the sections merged)
  and ``apply_rotary_pos_emb`` in each layer; `torch.compile`: the rotary module and the per-layer
  rotation compiled (each once), as the layers' matmuls separate them in a compiled model;
- `peer`: on CUDA, Liger-Kernel's M-RoPE kernel (``liger_multimodal_rotary_pos_emb``, which takes the
  per-axis cos/sin ``[3, B, S, 128]`` and picks the sections itself) when installed.

Cases: `prefill-2048` (and `prefill-8192` with --full): one sequence with an image inside text, its
t/h/w position ids from ``vlmops.mrope_position_ids`` (``get_rope_index``'s semantics); `decode-b32`:
32 sequences, one new token each, at positions past their prompt and rope delta (t = h = w).
All out of place, as the models run. Bytes of an ideal kernel: q and k read and written once per layer.
"""

import pytest
import torch

import vlmops
from benchmarks.harness import pick, require_peer

# (q heads, kv heads, head_dim, mrope_section): the model's, or a toy one for the harness self-test.
GEOMETRY = {"default": (28, 4, 128, [16, 24, 24]), "tiny": (4, 2, 16, [2, 3, 3])}
THETA = 1e6
# case -> per tier: (batch, tokens per sequence, image grid (t, h, w) in patches or None, layers)
CASES = {
    "prefill-2048": {"default": (1, 2048, (1, 56, 56), 28), "tiny": (1, 24, (1, 4, 4), 2)},
    "prefill-8192": {"default": (1, 8192, (1, 112, 112), 28), "tiny": (1, 24, (1, 4, 4), 2)},
    "decode-b32": {"default": (32, 1, None, 28), "tiny": (2, 1, None, 2)},
}
FULL_ONLY = {"prefill-8192"}
IMPLS = ["vlmops", "transformers", "torch.compile", "peer"]
DTYPE = torch.bfloat16
MERGE = 2  # Qwen2.5-VL's spatial_merge_size


def _position_ids(batch, tokens, grid, device):
    """[3, B, S] int64: a prompt of text, one image of ``grid`` patches and text (get_rope_index's
    positions), or for decoding (grid None) one text token per sequence past its prompt and rope delta."""
    if grid is None:
        past = torch.arange(batch, device=device) * 37 + 500  # prompt lengths + rope deltas per sequence
        return past.view(1, batch, 1).expand(3, batch, 1).contiguous()
    image_tokens = grid[0] * grid[1] * grid[2] // MERGE**2
    types = torch.zeros(batch, tokens, dtype=torch.long, device=device)
    types[:, 16 : 16 + image_tokens] = 1
    position_ids, _ = vlmops.mrope_position_ids(
        types, torch.tensor([grid] * batch, device=device), spatial_merge_size=MERGE
    )
    return position_ids


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.full_only) if c in FULL_ONLY else c for c in CASES])
def test_text_mrope_qwen2_5_vl_7b(benchmark, request, device, impl, case):
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig

    from vlmops.nn import MRotaryEmbedding

    batch, tokens, grid, layers = pick(request, CASES[case])
    heads, kv_heads, head_dim, section = pick(request, GEOMETRY)
    benchmark.group = f"text-mrope:qwen2.5-vl-7b-{case}:fwd"
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=layers * 2 * batch * tokens * (heads + kv_heads) * head_dim * DTYPE.itemsize,
        flops=0,
        dtype=str(DTYPE).replace("torch.", ""),
        layers=layers,
    )
    config = Qwen2_5_VLTextConfig(
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rope_parameters={"rope_type": "default", "rope_theta": THETA, "mrope_section": section},
    )
    rotary = modeling_qwen2_5_vl.Qwen2_5_VLRotaryEmbedding(config).to(device)
    position_ids = _position_ids(batch, tokens, grid, device)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, tokens, heads, head_dim, generator=gen).to(device, DTYPE).transpose(1, 2)
    k = torch.randn(batch, tokens, kv_heads, head_dim, generator=gen).to(device, DTYPE).transpose(1, 2)

    # Each implementation: tables(q), once per forward, and rotate(q, k, tables), once per layer.
    if impl == "vlmops":
        mrope_rotary = MRotaryEmbedding.from_module(rotary, interleaved=False, output="rope")

        def tables(q):
            return mrope_rotary(q, position_ids)

        def rotate(q, k, mrope):
            return vlmops.apply_rope(q, k, mrope.positions, *mrope.tables, layout="bhsd")
    elif impl in ("transformers", "torch.compile"):

        def tables(q):
            return rotary(q, position_ids)

        def rotate(q, k, cos_sin):
            return modeling_qwen2_5_vl.apply_rotary_pos_emb(q, k, *cos_sin)

        if impl == "torch.compile":
            # Compiled per piece, as in a compiled model where each layer's matmuls separate the rotations.
            tables, rotate = torch.compile(tables, dynamic=False), torch.compile(rotate, dynamic=False)
    else:
        require_peer("liger_kernel", device=device)
        from liger_kernel.transformers.qwen2vl_mrope import liger_multimodal_rotary_pos_emb

        def tables(q):
            freqs = position_ids[..., None].float() * rotary.inv_freq.float()
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos().to(q.dtype), angles.sin().to(q.dtype)

        def rotate(q, k, cos_sin):
            return liger_multimodal_rotary_pos_emb(q, k, *cos_sin, section)

    def forward(q, k):
        """One forward's rotary work: the tables once, then every layer rotates the previous one's q and k."""
        layer_tables = tables(q)
        for _ in range(layers):
            q, k = rotate(q, k, layer_tables)
        return q, k

    # One layer against transformers' (the peer may rotate its inputs in place: it gets copies).
    expected = modeling_qwen2_5_vl.apply_rotary_pos_emb(q, k, *rotary(q, position_ids))
    got = rotate(q.clone(), k.clone(), tables(q))
    # bf16: both round cos/sin and the products to bf16; the angles' cos/sin may differ by one ulp.
    torch.testing.assert_close(got, expected, rtol=1.6e-2, atol=2e-2)
    benchmark(forward, q, k)
