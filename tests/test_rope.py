"""Multi-axis RoPE: vlmops.apply_rope and torch.ops.vlmops.rope / rope_ against transformers' own
rotary functions (every variant), the reference, autograd, opcheck, bad inputs and hypothesis shapes."""

import pytest
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Phi3Config, PixtralVisionConfig
from transformers.models.llama import modeling_llama
from transformers.models.phi3 import modeling_phi3
from transformers.models.pixtral import modeling_pixtral
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig, Qwen2_5_VLVisionConfig
from transformers.models.qwen2_vl import modeling_qwen2_vl
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig
from transformers.models.qwen3_vl import modeling_qwen3_vl
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig, Qwen3VLVisionConfig
from transformers.vision_utils import get_vision_position_ids

import vlmops
from vlmops import reference

# Grids exercising non-square images, videos (t > 1) and several images in one packed sequence.
VISION_GRIDS = [
    [[1, 4, 6]],
    [[1, 8, 4], [2, 4, 4], [1, 6, 10]],
    [[3, 2, 8]],
]

QWEN_VISION = {
    "qwen2_vl": (
        modeling_qwen2_vl.Qwen2VLVisionRotaryEmbedding,
        modeling_qwen2_vl.apply_rotary_pos_emb_vision,
        lambda d, h: Qwen2VLVisionConfig(embed_dim=d * h, num_heads=h),
    ),
    "qwen2_5_vl": (
        modeling_qwen2_5_vl.Qwen2_5_VLVisionRotaryEmbedding,
        modeling_qwen2_5_vl.apply_rotary_pos_emb_vision,
        lambda d, h: Qwen2_5_VLVisionConfig(hidden_size=d * h, num_heads=h),
    ),
    "qwen3_vl": (
        modeling_qwen3_vl.Qwen3VLVisionRotaryEmbedding,
        modeling_qwen3_vl.apply_rotary_pos_emb_vision,
        lambda d, h: Qwen3VLVisionConfig(hidden_size=d * h, num_heads=h),
    ),
}


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("model", list(QWEN_VISION))
@pytest.mark.parametrize("grid", VISION_GRIDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("inplace", [False, True])
def test_qwen_vision_matches_transformers_bitwise(model, grid, dtype, inplace):
    rotary_cls, apply_vision, make_config = QWEN_VISION[model]
    head_dim, heads = 80, 2
    emb = rotary_cls(make_config(head_dim, heads))
    grid_thw = torch.tensor(grid)
    positions = get_vision_position_ids(grid_thw, 2)
    q = torch.randn(positions.shape[0], heads, head_dim).to(dtype)
    k = torch.randn(positions.shape[0], heads, head_dim).to(dtype)
    cos, sin = emb(q, positions)
    q_hf, k_hf = apply_vision(q, k, cos, sin)
    tables = vlmops.qwen_vision_rope_tables(emb.inv_freq)
    q_in, k_in = q.clone(), k.clone()
    q_out, k_out = vlmops.apply_rope(q_in, k_in, positions, *tables, inplace=inplace)
    # float32 math, rounded once: identical to transformers in every dtype.
    assert torch.equal(q_out, q_hf) and torch.equal(k_out, k_hf)
    if inplace:
        assert q_out is q_in and k_out is k_in


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_pixtral_matches_transformers(dtype):
    cfg = PixtralVisionConfig(hidden_size=64, num_attention_heads=2, head_dim=32)
    emb = modeling_pixtral.PixtralVisionRotaryEmbedding(cfg)
    positions = vlmops.pixtral_rope_positions(torch.tensor([[3, 5], [4, 6]]))
    N = positions.shape[0]
    # Pixtral's attention rotates [B, H, S, D] views with cos/sin in the activation dtype.
    q = torch.randn(1, N, 2, 32).to(dtype).transpose(1, 2)
    k = torch.randn(1, N, 2, 32).to(dtype).transpose(1, 2)
    cos, sin = emb(q, positions)
    q_hf, k_hf = modeling_pixtral.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=0)
    tables = vlmops.pixtral_rope_tables(emb.inv_freq)
    q_out, k_out = vlmops.apply_rope(q, k, positions[None], *tables, layout="bhsd")
    # Activation-dtype cos/sin and rounded products reproduce eager bf16/fp16 exactly.
    assert torch.equal(q_out, q_hf) and torch.equal(k_out, k_hf)


def _text_case(model):
    theta = {"qwen2_vl": 1e6, "qwen2_5_vl": 1e6, "qwen3_vl": 5e6}[model]
    if model == "qwen3_vl":
        cfg = Qwen3VLTextConfig(
            hidden_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": [6, 5, 5]},
        )
        emb = modeling_qwen3_vl.Qwen3VLTextRotaryEmbedding(cfg)
        return (
            emb,
            modeling_qwen3_vl.apply_rotary_pos_emb,
            vlmops.interleaved_mrope_tables(emb.inv_freq, emb.mrope_section),
        )
    config_cls, module = {
        "qwen2_vl": (Qwen2VLTextConfig, modeling_qwen2_vl),
        "qwen2_5_vl": (Qwen2_5_VLTextConfig, modeling_qwen2_5_vl),
    }[model]
    cfg = config_cls(
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": [4, 6, 6]},
    )
    rotary_cls = (
        modeling_qwen2_vl.Qwen2VLRotaryEmbedding
        if model == "qwen2_vl"
        else modeling_qwen2_5_vl.Qwen2_5_VLRotaryEmbedding
    )
    emb = rotary_cls(cfg)
    return emb, module.apply_rotary_pos_emb, vlmops.mrope_tables(emb.inv_freq, emb.mrope_section)


@pytest.mark.parametrize("model", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_text_mrope_matches_transformers(model, dtype):
    emb, apply_rope_hf, tables = _text_case(model)
    B, S, head_dim = 2, 37, 32
    # Distinct t/h/w ids (as in an image span) so a wrong axis or section shows.
    position_ids = torch.randint(0, 500, (3, B, S))
    q = torch.randn(B, 4, S, head_dim).to(dtype)  # the text attention's [B, H, S, D]; GQA k with 2 heads
    k = torch.randn(B, 2, S, head_dim).to(dtype)
    cos, sin = emb(q, position_ids)
    q_hf, k_hf = apply_rope_hf(q, k, cos, sin)
    q_out, k_out = vlmops.apply_rope(q, k, position_ids.permute(1, 2, 0), *tables, layout="bhsd")
    assert torch.equal(q_out, q_hf) and torch.equal(k_out, k_hf)


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_1d_rope_matches_llama(layout):
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=1)
    emb = modeling_llama.LlamaRotaryEmbedding(cfg)
    B, S = 2, 19
    position_ids = torch.arange(S).expand(B, S) + torch.tensor([[0], [7]])
    q = torch.randn(B, S, 4, 16)
    k = torch.randn(B, S, 1, 16)
    cos, sin = emb(q, position_ids)
    q_hf, k_hf = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)
    if layout == "bhsd":
        q, k, q_hf, k_hf = (t.transpose(1, 2) for t in (q, k, q_hf, k_hf))
    q_out, k_out = vlmops.apply_rope(q, k, position_ids[..., None], *vlmops.rope_1d_tables(emb.inv_freq), layout=layout)
    assert torch.equal(q_out, q_hf) and torch.equal(k_out, k_hf)


def test_partial_rotary_matches_phi3():
    cfg = Phi3Config(hidden_size=64, num_attention_heads=2, num_key_value_heads=2, partial_rotary_factor=0.5)
    emb = modeling_phi3.Phi3RotaryEmbedding(cfg)
    B, S = 1, 23
    position_ids = torch.arange(S)[None]
    q = torch.randn(B, 2, S, 32)
    k = torch.randn(B, 2, S, 32)
    cos, sin = emb(q, position_ids)
    q_hf, k_hf = modeling_phi3.apply_rotary_pos_emb(q, k, cos, sin)
    tables = vlmops.rope_1d_tables(emb.inv_freq)
    assert 2 * tables.axis.shape[0] < 32
    q_out, k_out = vlmops.apply_rope(q, k, position_ids[..., None], *tables, layout="bhsd")
    assert torch.equal(q_out, q_hf) and torch.equal(k_out, k_hf)


def test_rope_inv_freq_matches_transformers():
    emb = modeling_qwen2_vl.Qwen2VLVisionRotaryEmbedding(Qwen2VLVisionConfig(embed_dim=1280, num_heads=16))
    assert torch.equal(vlmops.rope_inv_freq(40, 10000.0), emb.inv_freq)


def _random_problem(B, S, H, Hk, D, P, A, dtype, device="cpu", pos_dtype=torch.long):
    g = torch.Generator().manual_seed(B * 1000 + S * 100 + H * 10 + D + P)
    q = torch.randn(B, S, H, D, generator=g).to(dtype).to(device)
    k = torch.randn(B, S, Hk, D, generator=g).to(dtype).to(device)
    positions = torch.randint(-50, 4000, (B, S, A), generator=g).to(pos_dtype).to(device)
    axis = torch.randint(0, A, (P,), generator=g).to(device)
    inv_freq = vlmops.rope_inv_freq(2 * P, 10000.0).to(device)
    return q, k, positions, axis, inv_freq


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fp32_math", [True, False])
@pytest.mark.parametrize("inverse", [False, True])
def test_op_matches_reference(device, dtype, fp32_math, inverse):
    q, k, positions, axis, inv_freq = _random_problem(2, 13, 3, 1, 24, 10, 3, dtype, device, torch.int32)
    q_out, k_out = torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, fp32_math, inverse)
    q_ref, k_ref = reference.rope(q, k, positions.long(), axis, inv_freq, fp32_math, inverse)
    if dtype == torch.float64:
        # libm vs PyTorch cos/sin in float64 differ in the last ulp.
        torch.testing.assert_close(q_out, q_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(k_out, k_ref, rtol=1e-12, atol=1e-12)
    elif dtype == torch.float32 and device == "cuda":
        # The reference's torch.cos/sin on the GPU are CUDA's cosf/sinf (within 2 ulp); the kernel's are
        # correctly rounded, so float32 agrees to a few ulp there (bf16/fp16 rounding hides it).
        torch.testing.assert_close(q_out, q_ref, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(k_out, k_ref, rtol=2e-6, atol=2e-6)
    else:
        assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)
    q_in, k_in = q.clone(), k.clone()
    torch.ops.vlmops.rope_(q_in, k_in, positions, axis, inv_freq, fp32_math, inverse)
    assert torch.equal(q_in, q_out) and torch.equal(k_in, k_out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fp32_math", [True, False])
def test_low_precision_error_within_pytorch_rounding(dtype, fp32_math):
    """flash-attention's rule: error vs a float64 reference at most 2x eager PyTorch's own error."""
    q, k, positions, axis, inv_freq = _random_problem(1, 64, 4, 2, 64, 32, 2, dtype)
    q64, k64 = reference.rope(q.double(), k.double(), positions, axis, inv_freq, True)
    q_out, k_out = torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, fp32_math)
    q_pt, k_pt = reference.rope(q, k, positions, axis, inv_freq, fp32_math)
    assert max_err(q_out, q64) <= 2 * max_err(q_pt, q64) + 1e-12
    assert max_err(k_out, k64) <= 2 * max_err(k_pt, k64) + 1e-12


def test_strided_inputs_are_read_in_place():
    """q and k sliced out of a packed qkv projection [N, 3, H, D] (non-contiguous) and a strided head_dim."""
    N, H, D, P = 29, 3, 16, 8
    qkv = torch.randn(N, 3, H, D)
    q, k = qkv[:, 0], qkv[:, 1]
    positions = torch.randint(0, 64, (N, 6))[:, ::2]  # strided positions [N, 3]
    axis = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0])
    inv_freq = vlmops.rope_inv_freq(2 * P, 100.0)
    q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, True)
    q_ref, k_ref = reference.rope(q[None], k[None], positions[None], axis, inv_freq, True)
    assert torch.equal(q_out, q_ref[0]) and torch.equal(k_out, k_ref[0])
    # A non-unit stride on head_dim takes the generic path.
    wide = torch.randn(N, H, 2 * D)
    q_s, k_s = wide[..., ::2], wide[..., 1::2]
    q_out, k_out = vlmops.apply_rope(q_s, k_s, positions, axis, inv_freq, True)
    q_ref, k_ref = reference.rope(q_s[None], k_s[None], positions[None], axis, inv_freq, True)
    assert torch.equal(q_out, q_ref[0]) and torch.equal(k_out, k_ref[0])
    # In place on the slices: q and k rotated inside qkv, v untouched.
    q_ref, k_ref = reference.rope(q[None], k[None], positions[None], axis, inv_freq, True)
    v_before = qkv[:, 2].clone()
    vlmops.apply_rope(q, k, positions, axis, inv_freq, True, inplace=True)
    assert torch.equal(qkv[:, 0], q_ref[0]) and torch.equal(qkv[:, 1], k_ref[0])
    assert torch.equal(qkv[:, 2], v_before)


def test_backward_matches_autograd_through_reference():
    q, k, positions, axis, inv_freq = _random_problem(2, 11, 4, 2, 20, 8, 3, torch.float32)
    q.requires_grad_(True)
    k.requires_grad_(True)
    q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, True, layout="bshd")
    gq, gk = torch.randn_like(q_out), torch.randn_like(k_out)
    grads = torch.autograd.grad((q_out, k_out), (q, k), (gq, gk))
    q_ref, k_ref = reference.rope(q, k, positions, axis, inv_freq, True)
    grads_ref = torch.autograd.grad((q_ref, k_ref), (q, k), (gq, gk))
    torch.testing.assert_close(grads[0], grads_ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[1], grads_ref[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["nhd", "bhsd"])
def test_gradcheck_float64(layout):
    q, k, positions, axis, inv_freq = _random_problem(1, 5, 2, 1, 10, 4, 2, torch.float64)
    if layout == "nhd":
        q, k, positions = q[0], k[0], positions[0]
    else:
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    q.requires_grad_(True)
    k.requires_grad_(True)

    def f(q, k):
        return vlmops.apply_rope(q, k, positions, axis, inv_freq, False, layout=layout)

    assert torch.autograd.gradcheck(f, (q, k))
    assert torch.autograd.gradgradcheck(f, (q, k))


def test_opcheck():
    q, k, positions, axis, inv_freq = _random_problem(2, 7, 3, 1, 12, 5, 3, torch.float32)
    q.requires_grad_(True)
    k.requires_grad_(True)
    for fp32_math, inverse in [(True, False), (False, True)]:
        torch.library.opcheck(torch.ops.vlmops.rope.default, (q, k, positions, axis, inv_freq, fp32_math, inverse))
    q_t, k_t = q.detach().transpose(1, 2).contiguous().transpose(1, 2), k.detach().clone()
    torch.library.opcheck(torch.ops.vlmops.rope_.default, (q_t, k_t, positions, axis, inv_freq, True, False))


def test_packed_operands_are_one_batch():
    """q [N, H, D], k [N, H_kv, D], positions [N, A] straight to the ops: a batch of one, without the
    wrapper's views; outputs keep the packed shape and q's memory layout."""
    q, k, positions, axis, inv_freq = _random_problem(1, 7, 3, 1, 12, 5, 3, torch.float32)
    q, k, positions = q[0].transpose(0, 1).contiguous().transpose(0, 1), k[0], positions[0]
    q.requires_grad_(True)
    k.requires_grad_(True)
    q_out, k_out = torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, True)
    expected = reference.rope(q[None], k[None], positions[None], axis, inv_freq, True)
    torch.testing.assert_close((q_out, k_out), (expected[0][0], expected[1][0]))
    assert q_out.stride() == q.stride()
    torch.library.opcheck(torch.ops.vlmops.rope.default, (q, k, positions, axis, inv_freq, False, True))
    q_in, k_in = q.detach().clone(), k.detach().clone()
    torch.ops.vlmops.rope_(q_in, k_in, positions, axis, inv_freq, True)
    torch.testing.assert_close((q_in, k_in), (q_out.detach(), k_out.detach()))


def test_compiles_fullgraph():
    q, k, positions, axis, inv_freq = _random_problem(1, 9, 2, 2, 16, 8, 2, torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(q, k):
        return vlmops.apply_rope(q, k, positions, axis, inv_freq, True, layout="bshd")

    q_out, k_out = f(q, k)
    q_ref, k_ref = reference.rope(q, k, positions, axis, inv_freq, True)
    assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    S=st.integers(0, 9),
    H=st.integers(1, 3),
    Hk=st.integers(1, 3),
    P=st.integers(1, 8),
    extra=st.integers(0, 5),
    A=st.integers(1, 3),
    layout=st.sampled_from(["nhd", "bshd", "bhsd"]),
    fp32_math=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    inplace=st.booleans(),
)
def test_hypothesis_shapes(B, S, H, Hk, P, extra, A, layout, fp32_math, dtype, inplace):
    D = 2 * P + extra
    if layout == "nhd":
        B = 1
    q, k, positions, axis, inv_freq = _random_problem(B, S, H, Hk, D, P, A, dtype)
    q_ref, k_ref = reference.rope(q, k, positions, axis, inv_freq, fp32_math)
    if layout == "nhd":
        q, k, positions, q_ref, k_ref = q[0], k[0], positions[0], q_ref[0], k_ref[0]
    elif layout == "bhsd":
        q, k, q_ref, k_ref = (t.transpose(1, 2) for t in (q, k, q_ref, k_ref))
    q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, fp32_math, layout=layout, inplace=inplace)
    assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)


def _good():
    q, k, positions, axis, inv_freq = _random_problem(1, 6, 2, 1, 8, 4, 2, torch.float32)
    return dict(q=q[0], k=k[0], positions=positions[0], axis=axis, inv_freq=inv_freq, fp32_math=True)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(positions=torch.zeros(6, 2)), ValueError, "rope: positions must be int64 or int32, got Float"),
        (
            dict(positions=torch.zeros(5, 2, dtype=torch.long)),
            ValueError,
            r"positions must be \[B, S, A\] = \[1, 6, A >= 1\]",
        ),
        (
            dict(positions=torch.zeros(6, dtype=torch.long)),
            ValueError,
            r"apply_rope: positions must be \[N, A\] for layout 'nhd'",
        ),
        (dict(axis=torch.zeros(3, dtype=torch.long)), ValueError, r"inv_freq must be \[P\] = \[3\] like axis"),
        (dict(axis=torch.zeros(4, dtype=torch.int32)), ValueError, "axis must be Long, got Int"),
        (dict(inv_freq=torch.ones(4, dtype=torch.float64)), ValueError, "inv_freq must be Float, got Double"),
        (
            dict(axis=torch.zeros(5, dtype=torch.long), inv_freq=torch.ones(5)),
            ValueError,
            "rotary_dim = 2 \\* len\\(axis\\) = 2 \\* 5 exceeds head_dim 8",
        ),
        (dict(k=torch.randn(6, 1, 6)), ValueError, r"k must be \[B, S, H_kv, D\] = \[1, 6, H_kv, 8\] like q"),
        (dict(k=torch.randn(6, 1, 8, dtype=torch.float64)), ValueError, "k dtype Double must match q dtype Float"),
        (
            dict(q=torch.randn(6, 8)),
            ValueError,
            r"apply_rope: q must be \[N, H, D\] for layout 'nhd', got shape \(6, 8\)",
        ),
        (dict(q=torch.zeros(6, 2, 8, dtype=torch.long)), ValueError, "q must be float32, float64, float16 or bfloat16"),
        (dict(axis=torch.zeros(4, dtype=torch.long, device="meta")), ValueError, "axis is on meta but q is on cpu"),
        (dict(q=[1.0]), TypeError, "rope: q must be Tensor, got list"),
        (dict(fp32_math="yes"), TypeError, "rope: fp32_math must be bool, got str"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    args = {**_good(), **change}
    with pytest.raises(error, match=match):
        vlmops.apply_rope(**args)


def test_bad_layout_axis_and_inplace_grad():
    args = _good()
    with pytest.raises(ValueError, match="layout must be one of"):
        vlmops.apply_rope(**args, layout="sbhd")
    with pytest.raises(RuntimeError, match="rope_ cannot be differentiated: it writes q and k in place"):
        vlmops.apply_rope(**{**args, "q": args["q"].requires_grad_(True)}, inplace=True)
    # An axis beyond the positions' columns: the CPU op reads the table and rejects it.
    bad_axis = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"axis\[2\] = 2 must be in \[0, A\) = \[0, 2\)"):
        vlmops.apply_rope(**{**args, "q": args["q"].detach(), "axis": bad_axis})


def test_direct_op_checks():
    a = _good()
    q, k = a["q"][None], a["k"][None]
    with pytest.raises(
        ValueError, match=r"rope: q must be \[B, S, H, D\] or packed \[N, H, D\] \(4 dims\), got shape \[2, 8\]"
    ):
        torch.ops.vlmops.rope(a["q"][0], k, a["positions"][None], a["axis"], a["inv_freq"], True)
    with pytest.raises(ValueError, match=r"rope: k must be \[N, H_kv, D\] like the packed q \[N, H, D\]"):
        torch.ops.vlmops.rope(a["q"], k, a["positions"], a["axis"], a["inv_freq"], True)
    with pytest.raises(ValueError, match=r"rope_: positions must be \[N, A\] like the packed q \[N, H, D\]"):
        torch.ops.vlmops.rope_(a["q"].detach(), a["k"], a["positions"][None], a["axis"], a["inv_freq"], True)
    with pytest.raises(ValueError, match="positions must be int64 or int32"):
        torch.ops.vlmops.rope(q, k, a["positions"][None].float(), a["axis"], a["inv_freq"], True)
    with pytest.raises(ValueError, match=r"inv_freq must be \[P\] = \[4\] like axis"):
        torch.ops.vlmops.rope(q, k, a["positions"][None], a["axis"], a["inv_freq"][:3], True)
    with pytest.raises(ValueError, match="rope_: q may address the same memory from several elements"):
        torch.ops.vlmops.rope_(q[:, :1].expand(-1, 6, -1, -1), k, a["positions"][None], a["axis"], a["inv_freq"], True)
    with pytest.raises(ValueError, match="rope_: q and k may share memory"):
        torch.ops.vlmops.rope_(q, q, a["positions"][None], a["axis"], a["inv_freq"], True)


# Each convention x layout pair once (not the full product): the Triton interpreter is slow.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype, fp32_math, layout",
    [
        (torch.float32, True, "bshd"),
        (torch.float32, False, "bhsd"),
        (torch.bfloat16, False, "bshd"),
        (torch.bfloat16, True, "bhsd"),
        (torch.float64, False, "bshd"),
    ],
)
def test_triton_kernel_matches_reference(device, dtype, fp32_math, layout):
    """The Triton kernel (under the interpreter on CPU): GQA, partial rotary, strided layouts, in place."""
    from vlmops.triton.rope import rope_triton, rope_triton_

    q, k, positions, axis, inv_freq = _random_problem(2, 3, 3, 2, 22, 7, 3, dtype, device)
    if layout == "bhsd":  # [B, H, S, D] memory seen as a strided [B, S, H, D]
        q, k = q.transpose(1, 2).contiguous().transpose(1, 2), k.transpose(1, 2).contiguous().transpose(1, 2)
    for inverse in (False, True):
        q_ref, k_ref = reference.rope(q, k, positions, axis, inv_freq, fp32_math, inverse)
        q_out, k_out = rope_triton(q, k, positions, axis, inv_freq, fp32_math, inverse)
        if dtype == torch.bfloat16:
            # Triton's cos/sin may differ from PyTorch's by an ulp, which can flip a bf16 rounding.
            q64, k64 = reference.rope(q.double(), k.double(), positions, axis, inv_freq, True, inverse)
            assert max_err(q_out, q64) <= 3 * max_err(q_ref, q64)
            assert max_err(k_out, k64) <= 3 * max_err(k_ref, k64)
        else:
            tol = 1e-12 if dtype == torch.float64 else 2e-6
            torch.testing.assert_close(q_out, q_ref, rtol=tol, atol=tol)
            torch.testing.assert_close(k_out, k_ref, rtol=tol, atol=tol)
        assert q_out.stride() == q.stride()
        q_in, k_in = q.clone(), k.clone()
        rope_triton_(q_in, k_in, positions, axis, inv_freq, fp32_math, inverse)
        assert torch.equal(q_in, q_out) and torch.equal(k_in, k_out)


def _scalar_layout(t):
    """t's values in memory one element past a 16-byte boundary: every launch with it runs VEC = 1."""
    return torch.empty(t.numel() + 1, dtype=t.dtype)[1:].view(t.shape).copy_(t)


# (B, S, H, Hk, D, P, A): Qwen2.5-VL vision heads (80 = 2 * 40), a partial rotary (dims [16, 24) pass
# through), and enough tokens for several blocks of pairs; GQA everywhere.
VECTOR_PROBLEMS = [(1, 37, 3, 2, 80, 40, 2), (2, 9, 3, 1, 24, 8, 3), (1, 300, 5, 3, 16, 8, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("problem", VECTOR_PROBLEMS)
@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_triton_vector_path_matches_scalar_path(dtype, problem, layout):
    """16-byte runs (VEC = 16 bytes / element size) compute bitwise what the scalar path computes, out
    of place and in place, with the heads split over several programs (the interpreter's grid aims at 4
    programs) and partial rotary dims copied."""
    from vlmops.triton.rope import _grid, _vec, rope_triton, rope_triton_

    q, k, positions, axis, inv_freq = _random_problem(*problem, dtype)
    if layout == "bhsd":
        q, k = q.transpose(1, 2).contiguous().transpose(1, 2), k.transpose(1, 2).contiguous().transpose(1, 2)
    P = problem[5]
    assert _vec(q, k, q, k, P) == 16 // q.element_size()
    qs, ks = _scalar_layout(q), _scalar_layout(k)
    assert _vec(qs, ks, qs, ks, P) == 1
    grid, _ = _grid(q.shape[0] * q.shape[1], P, q.shape[2] + k.shape[2], q.device)
    assert grid[1] > 1  # the heads run in several groups
    for fp32_math, inverse in ((True, False), (False, True)):
        q_out, k_out = rope_triton(q, k, positions, axis, inv_freq, fp32_math, inverse)
        q_ref, k_ref = rope_triton(qs, ks, positions, axis, inv_freq, fp32_math, inverse)
        assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)
        q_in, k_in = q.clone(), k.clone()
        rope_triton_(q_in, k_in, positions, axis, inv_freq, fp32_math, inverse)
        assert torch.equal(q_in, q_out) and torch.equal(k_in, k_out)
        if dtype == torch.float64:
            q64, k64 = reference.rope(q, k, positions, axis, inv_freq, fp32_math, inverse)
            torch.testing.assert_close(q_out, q64, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(k_out, k64, rtol=1e-12, atol=1e-12)


def test_triton_vector_width_follows_alignment():
    """VEC shrinks to what every head row allows: P, the token and head strides of all four tensors,
    the data pointers; a head_dim stride other than 1 runs scalar."""
    from vlmops.triton.rope import _vec

    q, k = torch.randn(1, 4, 2, 16, dtype=torch.bfloat16), torch.randn(1, 4, 1, 16, dtype=torch.bfloat16)
    assert _vec(q, k, q, k, 8) == 8
    assert _vec(q, k, q, k, 4) == 4  # P = 4: x[i + P] is 8-byte aligned only
    padded = torch.randn(1, 4, 2, 18, dtype=torch.bfloat16)[..., :16]  # head stride 18
    assert _vec(padded, k, padded, k, 8) == 2
    offset = torch.randn(1 * 4 * 2 * 16 + 4, dtype=torch.bfloat16)[4:].view(1, 4, 2, 16)
    assert _vec(offset, k, q, k, 8) == 4  # 8 bytes past a 16-byte boundary
    strided = torch.randn(1, 4, 2, 32, dtype=torch.bfloat16)[..., ::2]
    assert _vec(strided, k, q, k, 8) == 1


@pytest.mark.requires_cuda
def test_cuda_backends_agree_and_backward(monkeypatch):
    q, k, positions, axis, inv_freq = _random_problem(2, 33, 4, 2, 64, 32, 3, torch.float32, "cuda")
    q_cuda, k_cuda = torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, True)
    monkeypatch.setenv("VLMOPS_CUDA_BACKEND", "triton")
    q_tr, k_tr = torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, True)
    torch.testing.assert_close(q_tr, q_cuda, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(k_tr, k_cuda, rtol=2e-6, atol=2e-6)
    q_in, k_in = q.clone(), k.clone()
    torch.ops.vlmops.rope_(q_in, k_in, positions, axis, inv_freq, True)
    assert torch.equal(q_in, q_tr) and torch.equal(k_in, k_tr)
    monkeypatch.delenv("VLMOPS_CUDA_BACKEND")
    q64, k64 = (t.double().requires_grad_(True) for t in (q[:, :4], k[:, :4]))
    assert torch.autograd.gradcheck(
        lambda a, b: vlmops.apply_rope(a, b, positions[:, :4], axis, inv_freq, True, layout="bshd"), (q64, k64)
    )


@pytest.mark.requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("D", "P", "offset"),
    [
        (80, 40, 0),  # 16-byte accesses
        (72, 36, 0),  # half/bfloat16: 8-byte accesses (P is not a multiple of 8)
        (80, 32, 0),  # a copied tail of 16 dims, in vectors
        (66, 33, 0),  # single elements
        (80, 40, 1),  # rows off the 16-byte boundary: single elements
    ],
)
def test_cuda_vector_widths_match_the_cpu_kernel(dtype, D, P, offset):
    """The CUDA C++ kernel moves 16 bytes, 8 bytes or one element per access, as the layouts allow; every
    width gives the CPU kernel's result (the same rotate_pair math), in and out of place, to the cos/sin
    difference of the two (see test_op_matches_reference); a misplaced element would be off by O(1)."""
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1e-2}[dtype]
    q, k, positions, axis, inv_freq = _random_problem(2, 9, 3, 2, D, P, 3, dtype)
    buffer = torch.empty(q.numel() + offset, dtype=dtype, device="cuda")
    q_cuda = buffer[offset:].view(q.shape).copy_(q)
    args = (positions.cuda(), axis.cuda(), inv_freq.cuda())
    for fp32_math in (True, False):
        expected = torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, fp32_math)
        got = torch.ops.vlmops.rope(q_cuda, k.cuda(), *args, fp32_math)
        torch.testing.assert_close((got[0].cpu(), got[1].cpu()), expected, rtol=tol, atol=tol)
        q_in, k_in = q_cuda.clone(), k.cuda()
        torch.ops.vlmops.rope_(q_in, k_in, *args, fp32_math)
        torch.testing.assert_close((q_in.cpu(), k_in.cpu()), expected, rtol=tol, atol=tol)
