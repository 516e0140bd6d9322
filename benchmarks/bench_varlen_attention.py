"""Block-diagonal packed (varlen) attention against what vision towers run today.

Baselines, all on the same packed q/k/v [N, H, D]:
- `transformers-sdpa-loop`: transformers' `sdpa_attention_forward` called per image on
  `torch.split` chunks of the [1, H, N, D] views, which is what `Qwen2_5_VLVisionAttention` (and
  Qwen2-VL / Qwen3-VL) do without flash-attn;
- `dense-mask-sdpa`: Pixtral's way, one SDPA over all tokens with the additive N x N mask of
  transformers' `pixtral.generate_block_attention_mask` (built outside the timed call);
- `flex-attention`: `torch.compile`d FlexAttention with a document block mask (built outside the
  timed call; its build time is the separate `<shape>:mask-build` group);
- `torch-varlen-attn`: `torch.nn.attention.varlen.varlen_attn` (torch 2.10+, GPU only) as it
  chooses: cuDNN on sm90/sm100 with cuDNN >= 9.18 and segments over 128 tokens, otherwise FA2 (the
  entry records which in `varlen_attn_kernel`);
- `torch-varlen-attn-fa2`: the FA2 kernel that varlen_attn runs without cuDNN
  (`aten._flash_attention_forward` on the packed tensors), whatever cuDNN is installed;
- `flash-attn`: `flash_attn_varlen_func` when installed (GPU only).

`vlmops` is vlmops' own kernel (`backend="vlmops"`), never routed to torch.

Shapes (H=16, D=80 for Qwen2.5-VL's vision tower unless noted; --full sizes in brackets):
`qwen2.5-vl-4img` images of 256-1024 tokens [1024-4096]; `qwen2.5-vl-8img` 8 images of 512 [1024]
tokens; `qwen2.5-vl-video` 16 [64] frames of 256 tokens; `qwen2.5-vl-window` 64-token windows over
4096 [16384] tokens; `siglip-so400m` (D=72) 4 [16] images of 729 tokens; `internvit-6b` (H=25,
D=128) 2 [8] tiles of 1025 tokens; `internvit-300m` (D=64) 4 [8] tiles of 1025 tokens. float32 on CPU, bfloat16 on CUDA.
"""

import pytest
import torch
import torch.nn.functional as F

import vlmops
from benchmarks.harness import pick, require_peer

# CPU targets of varlen attention, fp32 at the --full sizes, side by side in one run.
CPU_TARGETS = [
    {
        "group": "varlen_attention:qwen2.5-vl-4img:fwd",
        "baseline": "transformers-sdpa-loop",
        "min_speedup": 1.0,
        "source": ">= 1.0x the transformers sdpa per-image loop, 4 images of 1024-4096 tokens",
    },
    {
        "group": "varlen_attention:qwen2.5-vl-8img:fwd",
        "baseline": "dense-mask-sdpa",
        "min_speedup": 3.0,
        "source": ">= 3x dense-mask SDPA with 8 images of 1024 tokens",
    },
]

# (segment lengths, H, D) per tier.
SHAPES = {
    "qwen2.5-vl-4img": {
        "default": ([256, 512, 768, 1024], 16, 80),
        "full": ([1024, 2048, 3072, 4096], 16, 80),
        "tiny": ([8, 16], 2, 32),
    },
    "qwen2.5-vl-8img": {"default": ([512] * 8, 16, 80), "full": ([1024] * 8, 16, 80), "tiny": ([8] * 3, 2, 32)},
    "qwen2.5-vl-video": {"default": ([256] * 16, 16, 80), "full": ([256] * 64, 16, 80), "tiny": ([8] * 3, 2, 32)},
    "qwen2.5-vl-window": {"default": ([64] * 64, 16, 80), "full": ([64] * 256, 16, 80), "tiny": ([8] * 3, 2, 32)},
    "siglip-so400m": {"default": ([729] * 4, 16, 72), "full": ([729] * 16, 16, 72), "tiny": ([8] * 3, 2, 32)},
    "internvit-6b": {"default": ([1025] * 2, 25, 128), "full": ([1025] * 8, 25, 128), "tiny": ([8] * 3, 2, 32)},
    "internvit-300m": {"default": ([1025] * 4, 16, 64), "full": ([1025] * 8, 16, 64), "tiny": ([8] * 3, 2, 32)},
}
SHAPE_NAMES = list(SHAPES)
IMPLS = [
    "vlmops",
    "torch-varlen-attn",
    "torch-varlen-attn-fa2",
    "transformers-sdpa-loop",
    "dense-mask-sdpa",
    "flex-attention",
    "flash-attn",
]


def _dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device == "cuda" else torch.float32


def _inputs(lengths, H, D, dtype, device, requires_grad):
    gen = torch.Generator().manual_seed(0)
    N = sum(lengths)
    q, k, v = (torch.randn(N, H, D, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=device)
    return q, k, v, cu


def _transformers_sdpa_loop(lengths, scale):
    """Qwen2_5_VLVisionAttention's non-flash path: split the [1, H, N, D] views per image, attend each."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionAttention

    module = Qwen2_5_VLVisionAttention(Qwen2_5_VLVisionConfig(hidden_size=32, num_heads=1)).eval()

    def attend(q, k, v):
        splits = [torch.split(t.transpose(0, 1).unsqueeze(0), lengths, dim=2) for t in (q, k, v)]
        outs = [
            sdpa_attention_forward(module, a, b, c, None, scaling=scale, is_causal=False)[0] for a, b, c in zip(*splits)
        ]
        return torch.cat(outs, dim=1).squeeze(0)  # sdpa_attention_forward returns [1, n, H, D]

    return attend


def _dense_mask_sdpa(lengths, q, scale):
    """Pixtral's way: one SDPA with transformers' block-diagonal additive mask over all N tokens."""
    from transformers.models.pixtral.modeling_pixtral import generate_block_attention_mask

    mask = generate_block_attention_mask(lengths, q.unsqueeze(0))

    def attend(q, k, v):
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask, scale=scale
        )
        return out[0].transpose(0, 1)

    return attend


def _document_ids(lengths, device):
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))


def _flex_attention(lengths, q, scale):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    documents = _document_ids(lengths, q.device)
    N = q.shape[0]
    block_mask = create_block_mask(
        lambda b, h, qi, ki: documents[qi] == documents[ki], None, None, N, N, device=q.device
    )
    compiled = torch.compile(flex_attention, dynamic=False)

    def attend(q, k, v):
        out = compiled(
            q.transpose(0, 1)[None],
            k.transpose(0, 1)[None],
            v.transpose(0, 1)[None],
            block_mask=block_mask,
            scale=scale,
        )
        return out[0].transpose(0, 1)

    return attend


def _flash_attn(lengths, cu, scale):
    from flash_attn import flash_attn_varlen_func

    max_seqlen = max(lengths)
    return lambda q, k, v: flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen, max_seqlen, softmax_scale=scale)


def _torch_varlen_attn(lengths, cu, scale):
    """torch.nn.attention.varlen.varlen_attn with the true maximum lengths, and the kernel it picks."""
    varlen = pytest.importorskip("torch.nn.attention.varlen", reason=f"torch {torch.__version__} has no varlen_attn")
    max_len = max(lengths)

    def attend(q, k, v):
        return varlen.varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale)

    return attend, getattr(varlen, "_can_use_cudnn", None)


def _torch_fa2(lengths, cu, scale):
    """The FA2 kernel torch's varlen_attn runs without cuDNN, called on the packed tensors."""
    if not hasattr(torch.ops.aten, "_flash_attention_forward"):
        pytest.skip(f"torch {torch.__version__} has no aten._flash_attention_forward")
    max_len = max(lengths)

    def attend(q, k, v):
        return torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, max_len, max_len, 0.0, False, False, scale=scale
        )[0]

    return attend


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", SHAPE_NAMES)
def test_varlen_attention(benchmark, request, device, shape_name, impl, mode):
    lengths, H, D = pick(request, SHAPES[shape_name])
    dtype = _dtype(device)
    N, pairs = sum(lengths), sum(n * n for n in lengths)
    # Ideal kernel: reads q, k, v and writes out (+ reads dO, out and writes dq, dk, dv backward);
    # 4 * pairs * H * D flops forward (QK^T and PV), 2.5x that more backward (5 GEMMs, recompute).
    backward = mode == "fwd+bwd"
    moved = (4 + (6 if backward else 0)) * N * H * D * dtype.itemsize
    flops = 4 * pairs * H * D * (3.5 if backward else 1)
    benchmark.group = f"varlen_attention:{shape_name}:{mode}"
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=moved,
        flops=flops,
        dtype=str(dtype).replace("torch.", ""),
    )
    scale = D**-0.5
    q, k, v, cu = _inputs(lengths, H, D, dtype, device, backward)
    if impl == "vlmops":
        attend = lambda q, k, v: vlmops.varlen_attention(q, k, v, cu, backend="vlmops")  # noqa: E731
    elif impl == "torch-varlen-attn":
        if device != "cuda":
            pytest.skip("torch's varlen_attn needs a CUDA device")
        attend, can_use_cudnn = _torch_varlen_attn(lengths, cu, scale)
        try:  # torch's private chooser, whose signature may change between releases
            kernel = "cudnn" if can_use_cudnn(q, k, v, max(lengths), [-1, -1]) else "fa2"
        except TypeError:
            kernel = "unknown"
        benchmark.extra_info["varlen_attn_kernel"] = kernel
    elif impl == "torch-varlen-attn-fa2":
        if device != "cuda":
            pytest.skip("FA2 needs a CUDA device")
        attend = _torch_fa2(lengths, cu, scale)
    elif impl == "transformers-sdpa-loop":
        attend = _transformers_sdpa_loop(lengths, scale)
    elif impl == "dense-mask-sdpa":
        if device == "cpu" and pick(request, {"default": False, "full": True}) and shape_name != "qwen2.5-vl-8img":
            pytest.skip("N x N mask: at --full sizes on CPU only the 8-image target shape is run")
        if device == "cpu" and backward and not pick(request, {"default": False, "full": True}):
            pytest.skip(
                "N x N mask backward: minutes of `make bench` on CPU for no target (the CPU "
                "targets are forward); run at --full and on CUDA"
            )
        attend = _dense_mask_sdpa(lengths, q.detach(), scale)
    elif impl == "flex-attention":
        if device == "cpu":
            pytest.skip(
                "FlexAttention on CPU compiles for minutes per shape and runs slower than the "
                "per-image loop; measured on CUDA"
            )
        attend = _flex_attention(lengths, q.detach(), scale)
    else:
        require_peer("flash_attn", device=device)
        attend = _flash_attn(lengths, cu, scale)

    expected = vlmops.reference.varlen_attention(q.detach(), k.detach(), v.detach(), cu)[0]
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    if backward:
        grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
        out = attend(q, k, v)
        torch.testing.assert_close(out.detach(), expected, rtol=tolerance, atol=tolerance)
        torch.autograd.grad(out, (q, k, v), grad_out)
        benchmark(lambda: torch.autograd.grad(attend(q, k, v), (q, k, v), grad_out))
    else:
        with torch.no_grad():
            torch.testing.assert_close(attend(q, k, v), expected, rtol=tolerance, atol=tolerance)
            benchmark(attend, q, k, v)


@pytest.mark.parametrize("shape_name", ["qwen2.5-vl-window", "qwen2.5-vl-4img"])
def test_flex_attention_mask_build(benchmark, request, device, shape_name):
    """What FlexAttention pays before any attention: the document block mask (vlmops needs none)."""
    lengths, H, D = pick(request, SHAPES[shape_name])
    N = sum(lengths)
    benchmark.group = f"varlen_attention:{shape_name}:mask-build"
    benchmark.extra_info.update(impl="flex-attention", role="baseline", bytes=0, flops=0)
    if device == "cpu":
        pytest.skip("measured on CUDA with the FlexAttention entries")
    from torch.nn.attention.flex_attention import create_block_mask

    documents = _document_ids(lengths, device)
    benchmark(
        lambda: create_block_mask(lambda b, h, qi, ki: documents[qi] == documents[ki], None, None, N, N, device=device)
    )
