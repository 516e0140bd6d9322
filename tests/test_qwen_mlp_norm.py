"""The drop-in Qwen2.5-VL MLP and RMSNorm modules against the transformers modules they replace:
``vlmops.nn.RowAlignedLinear`` (F.linear's values, written with 64-byte-aligned rows),
``vlmops.nn.GatedMLP`` (``Qwen2_5_VLMLP``) and ``vlmops.nn.RMSNorm`` (``Qwen2_5_VLRMSNorm``), and the
Qwen2.5-VL "norm" / "mlp" patch kinds."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import RecordVlmopsCalls
from torch import nn
from transformers import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLMLP,
    Qwen2_5_VLRMSNorm,
)

import vlmops
from vlmops.nn import GatedMLP, RMSNorm, RowAlignedLinear


@pytest.mark.parametrize(
    "dtype, out_features, padded",
    [
        (torch.float32, 30, 32),  # 120-byte rows -> 128
        (torch.float32, 3420, 3424),  # Qwen2.5-VL's vision intermediate size
        (torch.bfloat16, 3420, 3424),
        (torch.float64, 24, 24),  # 192 bytes: aligned already
    ],
)
def test_row_aligned_linear_is_f_linear_with_padded_rows(dtype, out_features, padded):
    torch.manual_seed(0)
    linear = nn.Linear(48, out_features).to(dtype)
    aligned = RowAlignedLinear.from_linear(linear)
    assert aligned.weight is linear.weight and aligned.bias is linear.bias
    assert list(aligned.state_dict()) == list(linear.state_dict())
    x = torch.randn(3, 5, 48, dtype=dtype)
    got = aligned(x)
    assert got.shape == (3, 5, out_features) and got.stride() == (5 * padded, padded, 1)
    torch.testing.assert_close(got, F.linear(x, linear.weight, linear.bias), rtol=1e-6, atol=1e-6)


def test_row_aligned_linear_without_bias_and_its_backward():
    torch.manual_seed(0)
    linear = nn.Linear(16, 30, bias=False, dtype=torch.float64)
    aligned = RowAlignedLinear.from_linear(linear)
    x = torch.randn(7, 16, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(aligned(x), F.linear(x, linear.weight))
    assert torch.autograd.gradcheck(aligned, (x,))
    with_bias = RowAlignedLinear.from_linear(nn.Linear(16, 30, dtype=torch.float64))
    assert torch.autograd.gradcheck(with_bias, (x,))
    (grad_w, grad_b) = torch.autograd.grad(with_bias(x).square().sum(), (with_bias.weight, with_bias.bias))
    reference = F.linear(x, with_bias.weight, with_bias.bias).square().sum()
    expected_w, expected_b = torch.autograd.grad(reference, (with_bias.weight, with_bias.bias))
    torch.testing.assert_close(grad_w, expected_w)
    torch.testing.assert_close(grad_b, expected_b)


def test_row_aligned_linear_compiles_fullgraph():
    torch.manual_seed(0)
    aligned = RowAlignedLinear.from_linear(nn.Linear(16, 30))
    x = torch.randn(7, 16)
    compiled = torch.compile(aligned, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), F.linear(x, aligned.weight, aligned.bias))


def qwen_mlp(dtype, intermediate=100):
    config = Qwen2_5_VLVisionConfig(hidden_size=64, intermediate_size=intermediate)
    torch.manual_seed(0)
    return Qwen2_5_VLMLP(config, bias=True).to(dtype).eval()


def test_gated_mlp_matches_qwen2_5_vl_mlp():
    mlp = qwen_mlp(torch.float32)
    gated = GatedMLP(mlp)
    assert list(gated.state_dict()) == list(mlp.state_dict())
    assert all(a is b for a, b in zip(gated.parameters(), mlp.parameters()))
    x = torch.randn(2, 9, 64, requires_grad=True)
    with RecordVlmopsCalls() as recorder:
        got = gated(x)
    assert "vlmops::silu_mul" in recorder.calls
    expected = mlp(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(got.sum(), (x, mlp.gate_proj.weight, mlp.up_proj.bias))
    expected_grads = torch.autograd.grad(expected.sum(), (x, mlp.gate_proj.weight, mlp.up_proj.bias))
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gated_mlp_bf16_matches_transformers_rounding():
    mlp = qwen_mlp(torch.bfloat16)
    x = torch.randn(33, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        # Same GEMMs, and silu_mul rounds as act_fn(gate) * up does: the bf16 results are identical.
        torch.testing.assert_close(GatedMLP(mlp)(x), mlp(x), rtol=0, atol=0)


def test_gated_mlp_refuses_another_activation():
    mlp = qwen_mlp(torch.float32)
    mlp.act_fn = nn.GELU()
    with pytest.raises(ValueError, match="act_fn"):
        GatedMLP(mlp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_module_matches_qwen2_5_vl_rms_norm(dtype):
    torch.manual_seed(0)
    norm = Qwen2_5_VLRMSNorm(64, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    drop_in = RMSNorm(norm)
    assert drop_in.weight is norm.weight and list(drop_in.state_dict()) == list(norm.state_dict())
    x = torch.randn(4, 7, 64, dtype=dtype)
    with torch.no_grad():
        tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0, atol=0)
        torch.testing.assert_close(drop_in(x), norm(x), **tolerance)
        padded = torch.randn(4, 7, 80, dtype=dtype)[..., :64]  # strided rows are read in place
        torch.testing.assert_close(drop_in(padded), norm(padded), **tolerance)


def test_qwen2_5_vl_norm_and_mlp_kinds():
    config = Qwen2_5_VLVisionConfig(
        depth=2,
        hidden_size=64,
        num_heads=2,
        intermediate_size=100,
        out_hidden_size=64,
        fullatt_block_indexes=[1],
        window_size=56,
    )
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(config, attn_implementation="sdpa").eval()
    grid = torch.tensor([[1, 8, 12], [1, 6, 10]])
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    only_norm = copy.deepcopy(tower)
    report = vlmops.patch_model(only_norm, ops=["norm"])
    # norm1 and norm2 of each block and the merger's ln_q.
    assert sorted(r.path for r in report.replacements) == [
        "blocks.0.norm1",
        "blocks.0.norm2",
        "blocks.1.norm1",
        "blocks.1.norm2",
        "merger.ln_q",
    ]
    only_mlp = copy.deepcopy(tower)
    report = vlmops.patch_model(only_mlp, ops=["mlp"])
    assert [(r.path, r.old, r.new) for r in report.replacements] == [
        (f"blocks.{i}.mlp", "Qwen2_5_VLMLP", "vlmops.nn.GatedMLP") for i in range(2)
    ]
    with torch.no_grad():
        expected = tower(pixels, grid_thw=grid).pooler_output
        for patched, op in ((only_norm, "vlmops::rms_norm"), (only_mlp, "vlmops::silu_mul")):
            with RecordVlmopsCalls() as recorder:
                got = patched(pixels, grid_thw=grid).pooler_output
            assert set(recorder.calls) == {op}
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
