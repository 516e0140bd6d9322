"""Multi-axis RoPE (`vlmops.apply_rope`) against what users run today.

- `qwen2-vl-vision`: the Qwen2-VL / Qwen2.5-VL vision tower, packed [N, H, D] q and k with 2D (h, w)
  positions: transformers' `Qwen2VLVisionRotaryEmbedding` (cos/sin tables from the positions) feeding
  `apply_rotary_pos_emb_vision`, the same under `torch.compile`, eager PyTorch (`vlmops.reference`),
  and on CUDA flash-attn's `apply_rotary_emb` on the same tables when installed.
- `qwen2.5-vl-7b-text`: the language model's 3D M-RoPE (mrope_section [16, 24, 24]) on [B, H, S, D]
  q (28 heads) and k (4 heads): `Qwen2_5_VLRotaryEmbedding` + `apply_rotary_pos_emb`, torch.compile of
  it, eager, and on CUDA Liger-Kernel's `liger_rotary_pos_emb` on the same tables when installed.

vlmops runs out of place (what the baselines do) and in place ("vlmops-inplace", forward only).
Bytes of an ideal kernel: forward reads and writes q and k once; forward+backward does it twice.
"""

import pytest
import torch

import vlmops
from benchmarks.harness import pick

# CPU targets of RoPE: forward at the vision shape (fp32) >= 3.5x transformers' rotary module +
# apply_rotary_pos_emb_vision and >= 2x torch.compile of that code.
CPU_TARGETS = [
    {
        "group": "rope:qwen2-vl-vision:fwd",
        "baseline": "transformers",
        "min_speedup": 3.5,
        "source": "vision forward >= 3.5x transformers (rotary module + apply_rotary_pos_emb_vision)",
    },
    {
        "group": "rope:qwen2-vl-vision:fwd",
        "baseline": "torch.compile",
        "min_speedup": 2.0,
        "source": "vision forward >= 2x torch.compile of the transformers code",
    },
]

# Vision: (grid side h = w in patches, heads, head_dim); N = side^2 tokens (128^2 = 16384, the
# Qwen2.5-VL shape, is also the default: it is the CPU target). Text: (batch, seq, q heads, kv heads, head_dim).
VISION_SHAPES = {"default": (128, 16, 80), "tiny": (4, 2, 16)}
TEXT_SHAPES = {"default": (1, 2048, 28, 4, 128), "full": (1, 8192, 28, 4, 128), "tiny": (1, 8, 4, 2, 16)}
IMPLS = ["vlmops", "vlmops-inplace", "vlmops-triton", "transformers", "torch.compile", "eager", "peer"]
DTYPE = torch.float32


def _role(impl: str) -> str:
    return "vlmops" if impl.startswith("vlmops") else "baseline"


def _prepare_vlmops(impl, mode, device, monkeypatch):
    if impl == "vlmops-inplace" and mode != "fwd":
        pytest.skip("in place is inference only (autograd needs the out-of-place op)")
    if impl == "vlmops-triton":
        if device != "cuda":
            pytest.skip("the Triton kernels need a CUDA device")
        monkeypatch.setenv("VLMOPS_CUDA_BACKEND", "triton")


def _run(function, q, k, mode):
    """(callable to time, its args): forward, or forward + backward through autograd.grad."""
    if mode == "fwd":
        return (lambda: function(q, k)), ()
    q.requires_grad_(True)
    k.requires_grad_(True)
    q_out, k_out = function(q, k)
    grads = (torch.randn_like(q_out), torch.randn_like(k_out))
    torch.autograd.grad((q_out, k_out), (q, k), grads)  # untimed: compiles torch.compile's backward

    def step():
        out = function(q, k)
        return torch.autograd.grad(out, (q, k), grads)

    return step, ()


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
def test_rope_qwen2_vl_vision(benchmark, request, device, monkeypatch, impl, mode):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding, apply_rotary_pos_emb_vision

    side, heads, head_dim = pick(request, VISION_SHAPES)
    N = side * side
    qk_bytes = 2 * N * heads * head_dim * DTYPE.itemsize
    benchmark.group = f"rope:qwen2-vl-vision:{mode}"
    benchmark.extra_info.update(
        impl=impl,
        role=_role(impl),
        bytes=(2 if mode == "fwd" else 4) * qk_bytes,
        flops=0,
        dtype=str(DTYPE).replace("torch.", ""),
    )
    if impl.startswith("vlmops"):
        _prepare_vlmops(impl, mode, device, monkeypatch)

    rotary = Qwen2VLVisionRotaryEmbedding(Qwen2VLVisionConfig(embed_dim=heads * head_dim, num_heads=heads)).to(device)
    grid_thw = torch.tensor([[1, side, side]], device=device)
    positions = vlmops.vision_rope_positions(grid_thw, 2, num_tokens=N)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(N, heads, head_dim, generator=gen, dtype=DTYPE).to(device)
    k = torch.randn(N, heads, head_dim, generator=gen, dtype=DTYPE).to(device)
    tables = vlmops.qwen_vision_rope_tables(rotary.inv_freq)

    def transformers_rope(q, k):
        cos, sin = rotary(q, positions)
        return apply_rotary_pos_emb_vision(q, k, cos, sin)

    if impl in ("vlmops", "vlmops-triton"):
        function = lambda q, k: vlmops.apply_rope(q, k, positions, *tables)  # noqa: E731
    elif impl == "vlmops-inplace":
        function = lambda q, k: vlmops.apply_rope(q, k, positions, *tables, inplace=True)  # noqa: E731
    elif impl == "transformers":
        function = transformers_rope
    elif impl == "torch.compile":
        function = torch.compile(transformers_rope, dynamic=False)
    elif impl == "eager":
        function = lambda q, k: tuple(  # noqa: E731
            t[0] for t in vlmops.reference.rope(q[None], k[None], positions[None], tables.axis, tables.inv_freq, True)
        )
    else:
        if device != "cuda":
            pytest.skip("flash-attn's rotary kernel needs a CUDA device")
        try:
            from flash_attn.layers.rotary import apply_rotary_emb
        except ImportError:
            pytest.skip("flash-attn not installed")

        def function(q, k):
            cos, sin = rotary(q, positions)
            half = head_dim // 2
            return (
                apply_rotary_emb(q[None], cos[:, :half], sin[:, :half])[0],
                apply_rotary_emb(k[None], cos[:, :half], sin[:, :half])[0],
            )

    expected = transformers_rope(q, k)
    got = function(q.clone(), k.clone())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    step, args = _run(function, q, k, mode)
    benchmark(step, *args)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
def test_rope_qwen2_5_vl_text(benchmark, request, device, monkeypatch, impl, mode):
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig

    B, S, heads, kv_heads, head_dim = pick(request, TEXT_SHAPES)
    qk_bytes = B * S * (heads + kv_heads) * head_dim * DTYPE.itemsize
    benchmark.group = f"rope:qwen2.5-vl-7b-text:{mode}"
    benchmark.extra_info.update(
        impl=impl,
        role=_role(impl),
        bytes=(2 if mode == "fwd" else 4) * qk_bytes,
        flops=0,
        dtype=str(DTYPE).replace("torch.", ""),
    )
    if impl.startswith("vlmops"):
        _prepare_vlmops(impl, mode, device, monkeypatch)

    section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]  # [16, 24, 24] at head_dim 128
    config = Qwen2_5_VLTextConfig(
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": section},
    )
    rotary = modeling_qwen2_5_vl.Qwen2_5_VLRotaryEmbedding(config).to(device)
    gen = torch.Generator().manual_seed(0)
    # t/h/w ids of an image span inside text: distinct per axis.
    position_ids = torch.randint(0, S, (3, B, S), generator=gen).to(device)
    q = torch.randn(B, heads, S, head_dim, generator=gen, dtype=DTYPE).to(device)
    k = torch.randn(B, kv_heads, S, head_dim, generator=gen, dtype=DTYPE).to(device)
    tables = vlmops.mrope_tables(rotary.inv_freq, section)
    positions = position_ids.permute(1, 2, 0)

    def transformers_rope(q, k):
        cos, sin = rotary(q, position_ids)
        return modeling_qwen2_5_vl.apply_rotary_pos_emb(q, k, cos, sin)

    if impl in ("vlmops", "vlmops-triton"):
        function = lambda q, k: vlmops.apply_rope(q, k, positions, *tables, layout="bhsd")  # noqa: E731
    elif impl == "vlmops-inplace":
        function = lambda q, k: vlmops.apply_rope(q, k, positions, *tables, layout="bhsd", inplace=True)  # noqa: E731
    elif impl == "transformers":
        function = transformers_rope
    elif impl == "torch.compile":
        function = torch.compile(transformers_rope, dynamic=False)
    elif impl == "eager":
        function = lambda q, k: tuple(  # noqa: E731
            t.transpose(1, 2)
            for t in vlmops.reference.rope(
                q.transpose(1, 2), k.transpose(1, 2), positions, tables.axis, tables.inv_freq, False
            )
        )
    else:
        if device != "cuda":
            pytest.skip("Liger-Kernel's M-RoPE is a Triton kernel for CUDA devices")
        try:
            from liger_kernel.transformers.rope import liger_rotary_pos_emb
        except ImportError:
            pytest.skip("liger-kernel not installed")

        # transformers 5.x's rotary module already merges the M-RoPE sections into [B, S, D] tables,
        # so Liger's table-driven rope kernel is its M-RoPE path here.
        def function(q, k):
            cos, sin = rotary(q, position_ids)
            return liger_rotary_pos_emb(q, k, cos, sin)

    expected = transformers_rope(q, k)
    got = function(q.clone(), k.clone())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    step, args = _run(function, q, k, mode)
    benchmark(step, *args)
