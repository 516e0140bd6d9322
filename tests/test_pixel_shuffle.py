"""Pixel shuffle and fused pixel shuffle + LayerNorm: kernels vs the reference and vs transformers."""

import pytest
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector
from transformers.models.internvl.modeling_internvl import InternVLModel

import vlmops
from vlmops import _native
from vlmops import reference as ref
from vlmops.ops import registry

OPS = torch.ops.vlmops


def make_x(B, H, W, C, *, dtype=torch.float32, device="cpu", layout="contiguous", seed=0):
    """x [B, H, W, C] in one of the layouts models hand over."""
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        x = torch.randn(B, H, W, C, generator=g, dtype=torch.float64)
    elif layout == "drop_cls":  # vision_tokens[:, 1:, :] viewed as a grid: strided, not copied
        x = torch.randn(B, H * W + 1, C, generator=g, dtype=torch.float64)[:, 1:, :].unflatten(1, (H, W))
    elif layout == "channels_first":  # [B, C, H, W] permuted: channel stride != 1
        x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).permute(0, 2, 3, 1)
    else:
        raise AssertionError(layout)
    return x.to(device=device, dtype=dtype)


LAYOUTS = ["contiguous", "drop_cls", "channels_first"]


def internvl_shuffle(x4, scale):
    """transformers' InternVL pixel shuffle (it does not use `self`)."""
    return InternVLModel.pixel_shuffle(None, x4, scale_factor=1.0 / scale)


# ---------------------------------------------------------------- pixel_shuffle: exact permutation


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_pixel_shuffle_matches_reference_exactly(device, layout, scale, dtype):
    x = make_x(2, 2 * scale, 3 * scale, 5, dtype=dtype, device=device, layout=layout)
    out = vlmops.pixel_shuffle(x, scale)
    assert out.shape == (2, 2, 3, 5 * scale * scale)
    assert out.is_contiguous()
    assert torch.equal(out, ref.pixel_shuffle(x, scale))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixel_shuffle_matches_transformers(device, scale):
    # InternVL on a non-square grid (4-D); Idefics3 / SmolVLM on square token sequences (3-D).
    # InternVL checks `H % scale_factor` in floating point, so it only accepts scales whose
    # reciprocal is exact in binary (2, 4): scale 3 is Idefics3-only.
    if scale != 3:
        x4 = make_x(2, 2 * scale, 3 * scale, 6, device=device, layout="drop_cls")
        assert torch.equal(vlmops.pixel_shuffle(x4, scale), internvl_shuffle(x4.contiguous(), scale))
    x3 = make_x(2, 4 * scale, 4 * scale, 6, device=device).flatten(1, 2)
    expected = Idefics3Connector.pixel_shuffle(None, x3, scale_factor=scale)
    assert torch.equal(vlmops.pixel_shuffle(x3, scale), expected)


def test_pixel_shuffle_flat_input_with_grid_and_no_copy():
    tokens = torch.randn(2, 1 + 4 * 6, 3)
    x = tokens[:, 1:, :]
    out = vlmops.pixel_shuffle(x, 2, grid=(4, 6))
    assert out.shape == (2, 6, 12)
    assert torch.equal(out, ref.pixel_shuffle(x.reshape(2, 4, 6, 3), 2).flatten(1, 2))


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    h=st.integers(0, 4),
    w=st.integers(1, 4),
    scale=st.integers(1, 4),
    C=st.integers(1, 17),
    layout=st.sampled_from(LAYOUTS),
)
def test_pixel_shuffle_hypothesis(B, h, w, scale, C, layout):
    x = make_x(B, h * scale, w * scale, C, layout=layout, seed=B * 1000 + C)
    assert torch.equal(vlmops.pixel_shuffle(x, scale), ref.pixel_shuffle(x, scale))
    grad = torch.randn(B, h, w, C * scale * scale)
    assert torch.equal(OPS.pixel_shuffle_backward(grad, scale), _inverse(grad, scale))


def _inverse(grad, scale):
    """The adjoint of the reference shuffle, by autograd through it."""
    B, Ho, Wo, n = grad.shape
    x = torch.zeros(B, Ho * scale, Wo * scale, n // (scale * scale), dtype=grad.dtype, requires_grad=True)
    (ref.pixel_shuffle(x, scale) * grad).sum().backward()
    return x.grad


# ---------------------------------------------------------------- fused pixel shuffle + LayerNorm


def bf16_rule(out, expected64, baseline):
    """flash-attention's rule: our low-precision error vs a float64 reference is within a small
    factor of PyTorch's own low-precision error on the same computation."""
    ours = (out.double() - expected64).abs().max().item()
    theirs = (baseline.double() - expected64).abs().max().item()
    assert ours <= 3 * theirs + 1e-6, (ours, theirs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm_matches_reference_fp32_fp64(device, layout, scale, affine):
    C = 12
    n = C * scale * scale
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        x = make_x(2, 2 * scale, 3 * scale, C, dtype=dtype, device=device, layout=layout) * 3 + 1.5
        weight = torch.randn(n, dtype=dtype, device=device) if affine != "none" else None
        bias = torch.randn(n, dtype=dtype, device=device) if affine == "both" else None
        out = vlmops.pixel_shuffle_layer_norm(x, scale, weight, bias, eps=1e-6)
        expected = ref.pixel_shuffle_layer_norm(x, scale, weight, bias, eps=1e-6)
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layer_norm_low_precision_within_rounding(device, dtype):
    x = make_x(2, 8, 8, 64, dtype=dtype, device=device, layout="drop_cls")
    weight = torch.randn(256, device=device).to(dtype)
    bias = torch.randn(256, device=device).to(dtype)
    out = vlmops.pixel_shuffle_layer_norm(x, 2, weight, bias)
    expected64 = ref.pixel_shuffle_layer_norm(x.double(), 2, weight.double(), bias.double())
    bf16_rule(out, expected64, ref.pixel_shuffle_layer_norm(x, 2, weight, bias))


@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_matches_transformers_internvl_path(device):
    # InternVL: pixel_shuffle(scale_factor=0.5), reshape to tokens, then the projector's LayerNorm(4C).
    C, scale = 32, 2
    layer_norm = torch.nn.LayerNorm(C * scale * scale).to(device)
    with torch.no_grad():
        layer_norm.weight.normal_()
        layer_norm.bias.normal_()
    tokens = make_x(2, 8, 8, C, device=device).flatten(1, 2)
    expected = layer_norm(internvl_shuffle(tokens.unflatten(1, (8, 8)), scale).reshape(2, -1, C * scale * scale))
    out = vlmops.pixel_shuffle_layer_norm(tokens, scale, layer_norm.weight, layer_norm.bias, eps=layer_norm.eps)
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5)


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    h=st.integers(0, 3),
    w=st.integers(1, 3),
    scale=st.integers(1, 4),
    C=st.integers(1, 40),
    layout=st.sampled_from(LAYOUTS),
)
def test_layer_norm_hypothesis(B, h, w, scale, C, layout):
    x = make_x(B, h * scale, w * scale, C, layout=layout, seed=C)
    n = C * scale * scale
    weight, bias = torch.randn(n), torch.randn(n)
    out = vlmops.pixel_shuffle_layer_norm(x, scale, weight, bias)
    torch.testing.assert_close(out, ref.pixel_shuffle_layer_norm(x, scale, weight, bias), rtol=2e-5, atol=2e-5)


# ---------------------------------------------------------------- autograd


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_float64(device, layout):
    x = make_x(2, 4, 6, 3, dtype=torch.float64, device=device, layout=layout).requires_grad_()
    weight = torch.randn(12, dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.randn(12, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: vlmops.pixel_shuffle(a, 2), (x,))
    assert torch.autograd.gradgradcheck(lambda a: vlmops.pixel_shuffle(a, 2), (x,))
    assert torch.autograd.gradcheck(lambda a, w, b: vlmops.pixel_shuffle_layer_norm(a, 2, w, b), (x, weight, bias))
    assert torch.autograd.gradcheck(lambda a: vlmops.pixel_shuffle_layer_norm(a, 2), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_matches_autograd_through_reference(device, dtype):
    x = make_x(3, 8, 4, 16, dtype=dtype, device=device, layout="drop_cls")
    weight = torch.randn(64, device=device).to(dtype)
    bias = torch.randn(64, device=device).to(dtype)
    grad = torch.randn(3, 4, 2, 64, device=device).to(dtype)

    def grads(fn, x, weight, bias):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        fn(*leaves).backward(grad)
        return [t.grad for t in leaves]

    ours = grads(lambda a, w, b: vlmops.pixel_shuffle_layer_norm(a, 2, w, b), x, weight, bias)
    if dtype == torch.float32:
        for got, want in zip(ours, grads(lambda a, w, b: ref.pixel_shuffle_layer_norm(a, 2, w, b), x, weight, bias)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    else:
        want64 = grads(
            lambda a, w, b: ref.pixel_shuffle_layer_norm(a, 2, w, b), x.double(), weight.double(), bias.double()
        )
        torch_low = grads(lambda a, w, b: ref.pixel_shuffle_layer_norm(a, 2, w, b), x, weight, bias)
        for got, want, baseline in zip(ours, want64, torch_low):
            bf16_rule(got, want, baseline)


# ---------------------------------------------------------------- op registration: opcheck, compile


def _sample_args(device):
    x = make_x(2, 4, 6, 3, device=device, layout="drop_cls")
    weight, bias = torch.randn(12, device=device), torch.randn(12, device=device)
    out, mean, rstd = OPS.pixel_shuffle_layer_norm(x, 2, weight, bias, 1e-5)
    grad = torch.randn_like(out)
    return x, weight, bias, mean, rstd, grad


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, weight, bias, mean, rstd, grad = _sample_args(device)
    x.requires_grad_()
    weight.requires_grad_()
    bias.requires_grad_()
    torch.library.opcheck(OPS.pixel_shuffle, (x, 2))
    torch.library.opcheck(OPS.pixel_shuffle_backward, (grad, 2))
    torch.library.opcheck(OPS.pixel_shuffle_layer_norm, (x, 2, weight, bias, 1e-5))
    torch.library.opcheck(OPS.pixel_shuffle_layer_norm, (x, 2, None, None, 1e-5))
    torch.library.opcheck(OPS.pixel_shuffle_layer_norm_backward, (grad, x.detach(), mean, rstd, weight.detach(), 2))


def test_compile_fullgraph():
    x, weight, bias, *_ = _sample_args("cpu")
    x = x.flatten(1, 2)

    def fn(x, weight, bias):
        return vlmops.pixel_shuffle_layer_norm(x, 2, weight, bias, grid=(4, 6)) + vlmops.pixel_shuffle(
            x, 2, grid=(4, 6)
        )

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, weight, bias), fn(x, weight, bias))


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: vlmops.pixel_shuffle(torch.randn(4, 4), 2), ValueError, r"x must be \[B, H, W, C\] \(4 dims\)"),
        (lambda: vlmops.pixel_shuffle(torch.zeros(1, 4, 4, 2, dtype=torch.int64), 2), ValueError, "x must be float32"),
        (lambda: vlmops.pixel_shuffle([1.0], 2), TypeError, "pixel_shuffle: x must be Tensor, got list"),
        (
            lambda: vlmops.pixel_shuffle(torch.randn(1, 4, 6, 2), 4),
            ValueError,
            r"grid \(H, W\) = \(4, 6\) of x is not divisible by scale 4",
        ),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 24, 2), 2), ValueError, "not a square grid; pass grid"),
        (
            lambda: vlmops.pixel_shuffle(torch.randn(1, 24, 2), 2, grid=(4, 5)),
            ValueError,
            "holds 20 tokens but x has 24",
        ),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 4, 4, 2), 2, grid=(2, 8)), ValueError, "does not match x"),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 4, 4, 2), 0), ValueError, "scale must be >= 1"),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 4, 4, 2), 2.0), TypeError, "scale must be int, got float"),
        (
            lambda: vlmops.pixel_shuffle_layer_norm(torch.randn(1, 4, 4, 2), 2, torch.randn(7)),
            ValueError,
            r"weight must be \[s\*s\*C\] = \[8\]",
        ),
        (
            lambda: vlmops.pixel_shuffle_layer_norm(
                torch.randn(1, 4, 4, 2), 2, None, torch.randn(8, dtype=torch.float64)
            ),
            ValueError,
            "bias dtype Double must match x dtype Float",
        ),
        (
            lambda: vlmops.pixel_shuffle_layer_norm(torch.randn(1, 4, 4, 2), 2, torch.randn(8, device="meta")),
            ValueError,
            "weight is on meta",
        ),
        (
            lambda: vlmops.pixel_shuffle_layer_norm(torch.randn(1, 4, 4, 2), 2, eps=-1.0),
            ValueError,
            "eps must be finite and >= 0",
        ),
        # The ops, called directly, check the same contract.
        (lambda: OPS.pixel_shuffle(torch.randn(1, 16, 2), 2), ValueError, r"x must be \[B, H, W, C\]"),
        (lambda: OPS.pixel_shuffle(torch.randn(1, 3, 4, 2), 2), ValueError, "not divisible by scale 2"),
        (lambda: OPS.pixel_shuffle(torch.zeros(1, 4, 4, 2, dtype=torch.int32), 2), ValueError, "x must be float32"),
        (
            lambda: OPS.pixel_shuffle_backward(torch.randn(1, 2, 2, 6), 2),
            ValueError,
            "grad_out has 6 channels, not a multiple of scale",
        ),
        (
            lambda: OPS.pixel_shuffle_layer_norm(torch.randn(1, 4, 4, 2), 2, torch.randn(5), None, 1e-5),
            ValueError,
            r"weight must be \[s\*s\*C\] = \[8\]",
        ),
        (
            lambda: OPS.pixel_shuffle_layer_norm_backward(
                torch.randn(1, 2, 2, 8), torch.randn(1, 4, 6, 2), torch.randn(1, 2, 2), torch.randn(1, 2, 2), None, 2
            ),
            ValueError,
            "grad_out must be the shuffled shape of x",
        ),
        (
            lambda: OPS.pixel_shuffle_layer_norm_backward(
                torch.randn(1, 2, 2, 8), torch.randn(1, 4, 4, 2), torch.randn(1, 2, 3), torch.randn(1, 2, 2), None, 2
            ),
            ValueError,
            r"mean must be \[B, H/s, W/s\]",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- fallback without the native library


@pytest.mark.parametrize("name", ["pixel_shuffle_layer_norm", "pixel_shuffle"])
def test_reference_fallback_has_the_op_outputs(monkeypatch, name):
    # What registry.op binds on an unbuilt checkout: the op's reference, same signature and outputs.
    monkeypatch.setattr(_native, "_C", None)
    x = make_x(1, 4, 4, 3)
    args = (x, 2, None, None, 1e-5) if name == "pixel_shuffle_layer_norm" else (x, 2)
    fallback = registry.op(name)(*args)
    expected = getattr(OPS, name)(*args)
    for got, want in zip(
        fallback if isinstance(fallback, tuple) else (fallback,),
        expected if isinstance(expected, tuple) else (expected,),
    ):
        torch.testing.assert_close(got, want)
