"""Adversarial inputs for pixel_shuffle, pixel_shuffle_backward, pixel_shuffle_layer_norm(_backward),
patch_embed(_backward) and the vlmops.nn modules built on them: every answer is right or a clear error
naming the argument (ValueError, or TypeError for a wrong type), never a crash or garbage.

- absurd int arguments (a scale of 2**32 used to divide by zero in the checks: SIGFPE), probed in a
  subprocess so that a crash fails a test instead of the run;
- degenerate and mismatched shapes (0-sized dims of a weight, wrong dims, a wrong position table);
- double backward: linear ops differentiate again, the others raise;
- strides: odd strides, size-1 dims with strides smaller than a row, stride 0 (expanded), views past
  2**31 elements of a big untouched allocation, NaN/Inf; hypothesis over strides and sizes;
- opcheck of the six ops on such inputs, and the references that stand in on an unbuilt checkout.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import RecordVlmopsCalls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlmops
from vlmops import reference
from vlmops.reference.patch_embed import patch_embed_backward as reference_patch_embed_backward
from vlmops.reference.pixel_shuffle import pixel_shuffle_backward as reference_shuffle_backward
from vlmops.reference.pixel_shuffle import pixel_shuffle_layer_norm_backward as reference_layer_norm_backward
from vlmops.reference.pixel_shuffle import pixel_shuffle_layer_norm_stats as reference_layer_norm_stats

OPS = torch.ops.vlmops
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTS = [0, -1, 1, 2**31, 2**32, 2**62, 2**63 - 1]


def run_python(code: str) -> subprocess.CompletedProcess:
    """code in a fresh interpreter importing this checkout's vlmops (a crash is its exit status)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def strided_like(values: torch.Tensor, sizes, strides, offset=0) -> torch.Tensor:
    """A view with `sizes` and `strides` (overlaps allowed) of a fresh buffer, filled from `values`
    where the view's elements land (one of them where they overlap)."""
    span = offset + sum((s - 1) * st for s, st in zip(sizes, strides) if s > 0) + 1
    base = torch.full((span,), float("nan") if values.is_floating_point() else 0, dtype=values.dtype)
    view = base.as_strided(sizes, strides, offset)
    if view.numel():
        index = torch.as_strided(torch.arange(span), sizes, strides, offset).flatten()
        base[index] = values.flatten()[: view.numel()]
    return view


# --- class 3: absurd int arguments, in a subprocess -------------------------------------------------


@pytest.fixture(scope="module")
def int_probes():
    """{case: "ok" | "ValueError: <message>" | other error} for every int argument of the four pixel
    shuffle ops and every value of INTS; "ok" means the result equals the reference's."""
    result = run_python(f"""
        import json, torch, vlmops
        from vlmops.reference import pixel_shuffle as ref
        from vlmops.reference.pixel_shuffle import pixel_shuffle_backward as ref_bwd
        ops = torch.ops.vlmops
        out = {{}}
        def probe(name, fn, expected):
            try:
                got = fn()
                got = got if isinstance(got, tuple) else (got,)
                want = expected() if expected else got
                want = want if isinstance(want, tuple) else (want,)
                ok = all(g.shape == w.shape and torch.allclose(g, w, equal_nan=True) for g, w in zip(got, want))
                out[name] = "ok" if ok else "wrong: " + str([tuple(g.shape) for g in got])
            except Exception as error:
                out[name] = type(error).__name__ + ": " + str(error).splitlines()[0]
        x, grad = torch.randn(1, 4, 4, 2), torch.randn(1, 2, 2, 8)
        for s in {INTS}:
            probe(f"pixel_shuffle:{{s}}", lambda: ops.pixel_shuffle(x, s), lambda: ref(x, s))
            probe(f"pixel_shuffle_backward:{{s}}", lambda: ops.pixel_shuffle_backward(grad, s),
                  lambda: ref_bwd(grad, s))
            probe(f"pixel_shuffle_layer_norm:{{s}}", lambda: ops.pixel_shuffle_layer_norm(x, s, None, None, 1e-5), None)
            # scale 1 keeps the grid: its gradient and statistics have x's grid
            g, stats = (torch.randn(1, 4, 4, 2), torch.ones(1, 4, 4)) if s == 1 else (grad, torch.ones(1, 2, 2))
            probe(f"pixel_shuffle_layer_norm_backward:{{s}}",
                  lambda: ops.pixel_shuffle_layer_norm_backward(g, x, stats, stats, None, s), None)
            # Empty grids divide by any scale: only the channel arithmetic can go wrong.
            empty, empty_grad = torch.randn(0, 0, 0, 1), torch.randn(0, 0, 0, 4)
            probe(f"pixel_shuffle:empty:{{s}}", lambda: ops.pixel_shuffle(empty, s), lambda: ref(empty, s))
            probe(f"pixel_shuffle_backward:empty:{{s}}", lambda: ops.pixel_shuffle_backward(empty_grad, s),
                  lambda: ref_bwd(empty_grad, s))
        print(json.dumps(out))
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "op", ["pixel_shuffle", "pixel_shuffle_backward", "pixel_shuffle_layer_norm", "pixel_shuffle_layer_norm_backward"]
)
@pytest.mark.parametrize("scale", INTS)
def test_absurd_scales_raise_value_error_naming_scale(int_probes, op, scale):
    outcome = int_probes[f"{op}:{scale}"]
    if scale == 1:
        assert outcome == "ok", outcome
    else:
        assert outcome.startswith(f"ValueError: vlmops.{op}: ") and "scale" in outcome, outcome


@pytest.mark.parametrize("op", ["pixel_shuffle", "pixel_shuffle_backward"])
@pytest.mark.parametrize("scale", INTS)
def test_scales_on_empty_grids_are_right_or_name_scale(int_probes, op, scale):
    outcome = int_probes[f"{op}:empty:{scale}"]
    if scale == 1 or (scale == 2**31 and op == "pixel_shuffle"):  # [0, 0, 0, 1] -> [0, 0, 0, 2**62]
        assert outcome == "ok", outcome
    else:  # below 1, s*s past int64, or 4 channels that are not a multiple of s*s
        assert outcome.startswith(f"ValueError: vlmops.{op}: ") and "scale" in outcome, outcome


def test_pixel_shuffle_backward_scale_2_pow_32_does_not_crash():
    # The checks computed scale*scale in int64: 2**64 wrapped to 0, and `channels % 0` raised SIGFPE.
    result = run_python("""
        import torch, vlmops
        try:
            torch.ops.vlmops.pixel_shuffle_backward(torch.randn(1, 2, 2, 8), 2**32)
        except ValueError as error:
            print(error)
    """)
    assert result.returncode == 0, result.returncode
    assert "vlmops.pixel_shuffle_backward: scale * scale = 4294967296 * 4294967296 overflows int64" in result.stdout


@pytest.mark.parametrize(
    "grid", [(0, 16), (-4, -4), (2**31, 0), (2**62, 2**62), (2**63 - 1, 1), (4,), (4.0, 4), 16, (True, 16), "44"]
)
def test_grid_argument_is_checked_and_named(grid):
    x = torch.randn(1, 16, 2)
    with pytest.raises(ValueError, match="grid"):
        vlmops.pixel_shuffle(x, 2, grid=grid)
    with pytest.raises(ValueError, match="grid"):
        vlmops.pixel_shuffle_layer_norm(x, 2, grid=grid)
    with pytest.raises(ValueError, match="grid"):
        vlmops.pixel_shuffle(x.view(1, 4, 4, 2), 2, grid=grid)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -1e-12])
def test_layer_norm_eps_must_be_finite_and_non_negative(eps):
    with pytest.raises(ValueError, match="pixel_shuffle_layer_norm: eps must be finite and >= 0"):
        vlmops.pixel_shuffle_layer_norm(torch.randn(1, 2, 2, 3), 2, eps=eps)


@pytest.mark.parametrize("rescale", [float("nan"), float("inf"), -float("inf")])
def test_patch_embed_rescale_must_be_finite(rescale):
    with pytest.raises(ValueError, match="patch_embed: rescale must be finite"):
        vlmops.patch_embed(torch.randn(1, 3, 4, 4), torch.randn(8, 3, 2, 2), rescale=rescale)


# --- class 7: degenerate and mismatched shapes name the argument ----------------------------------


def _pe(x_shape, w_shape, **kwargs):
    return lambda: vlmops.patch_embed(torch.randn(x_shape), torch.randn(w_shape), **kwargs)


@pytest.mark.parametrize(
    "call, argument",
    [
        (_pe((1, 3, 4, 4), (8, 3, 0, 4)), "weight"),  # was ZeroDivisionError
        (_pe((1, 3, 4, 4), (8, 3, 4, 0)), "weight"),
        (_pe((1, 0, 4, 4), (8, 0, 2, 2)), "weight"),
        (_pe((1, 3, 4, 4, 4), (8, 3, 0, 2, 2)), "weight"),
        (_pe((5, 0), (8, 3, 0, 2, 2)), "weight"),
        (_pe((1, 3, 4, 4), (0, 3, 2, 2)), "weight"),  # no outputs: nn.Conv2d refuses it too
        (_pe((5, 12), (0, 3, 2, 2)), "weight"),
        (_pe((1, 3, 4, 4), (8, 3, 2)), "weight"),
        (_pe((1, 3, 4, 4), (8, 3, 1, 1, 1, 1)), "weight"),
        (_pe((1, 3, 4, 4), ()), "weight"),
        (_pe((3, 4, 4), (8, 3, 2, 2)), "x"),
        (_pe((12,), (8, 3, 2, 2)), "x"),
        (_pe((), (8, 3, 2, 2)), "x"),
        (_pe((1, 3, 2, 4, 4), (8, 3, 2, 2)), "weight"),
        (_pe((1, 3, 5, 4), (8, 3, 2, 2)), "x"),
        (_pe((1, 3, 3, 4, 4), (8, 3, 2, 2, 2)), "x"),
        (_pe((5, 13), (8, 3, 2, 2)), "x"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), bias=torch.randn(())), "bias"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), bias=torch.randn(9)), "bias"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), mean=torch.randn(0)), "mean"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), std=torch.ones(3, 1)), "std"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), pos_embed=torch.randn(3, 8)), "pos_embed"),  # was IndexError-prone
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), pos_embed=torch.randn(4)), "pos_embed"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), pos_embed=torch.randn(4, 8), cls_token=torch.randn(8)), "pos_embed"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), cls_token=torch.randn(9)), "cls_token"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), cls_token=torch.randn(())), "cls_token"),
        (_pe((5, 12), (8, 3, 2, 2), pos_embed=torch.randn(5, 8)), "pos_embed"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), mean=torch.tensor([0.0, float("nan"), 0.0])), "mean"),
        (_pe((1, 3, 4, 4), (8, 3, 2, 2), std=torch.tensor([1.0, 1.0, float("inf")])), "std"),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 5, 4), 2), "x"),
        (lambda: vlmops.pixel_shuffle(torch.randn(4, 4), 2), "x"),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 2, 2, 2, 2), 2), "x"),
        (lambda: vlmops.pixel_shuffle(torch.randn(1, 0, 3, 2), 2), "x"),
        (lambda: vlmops.pixel_shuffle_layer_norm(torch.randn(1, 2, 2, 0), 2, torch.randn(1)), "weight"),
        (lambda: vlmops.pixel_shuffle_layer_norm(torch.randn(1, 2, 2, 3), 2, torch.randn(3, 4)), "weight"),
        (lambda: vlmops.pixel_shuffle_layer_norm(torch.randn(1, 2, 2, 3), 2, None, torch.randn(())), "bias"),
    ],
)
def test_degenerate_and_mismatched_shapes_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"vlmops\.\w+: (.* )?{argument}\b"):
        call()


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: OPS.pixel_shuffle_backward(torch.randn(1, 2, 2), 2), "grad_out"),
        (lambda: OPS.pixel_shuffle_backward(torch.randn(1, 2, 2, 8, dtype=torch.float64).int(), 2), "grad_out"),
        (
            lambda: OPS.pixel_shuffle_layer_norm_backward(
                torch.randn(1, 2, 2, 8, dtype=torch.float64),
                torch.randn(1, 4, 4, 2),
                torch.zeros(1, 2, 2),
                torch.zeros(1, 2, 2),
                None,
                2,
            ),
            "grad_out",
        ),
        (
            lambda: OPS.pixel_shuffle_layer_norm_backward(
                torch.randn(1, 2, 2, 8),
                torch.randn(1, 4, 4, 2),
                torch.zeros(1, 2, 2),
                torch.zeros(1, 2, 2, dtype=torch.float64),
                None,
                2,
            ),
            "rstd",
        ),
        (
            lambda: OPS.pixel_shuffle_layer_norm_backward(
                torch.randn(1, 2, 2, 8),
                torch.randn(1, 4, 4, 2),
                torch.zeros(1, 2, 2),
                torch.zeros(1, 2, 2),
                torch.randn(7),
                2,
            ),
            "weight",
        ),
        (
            lambda: OPS.pixel_shuffle_layer_norm_backward(
                torch.randn(1, 2, 2, 8),
                torch.randn(1, 4, 4, 2),
                torch.zeros(1, 2, 2, device="meta"),
                torch.zeros(1, 2, 2),
                None,
                2,
            ),
            "mean",
        ),
        (
            lambda: OPS.patch_embed_backward(
                torch.randn(1, 4, 8), torch.randn(1, 3, 4, 4), torch.randn(8, 3, 0, 2), None, None, None, True
            ),
            "weight",
        ),
        (
            lambda: OPS.patch_embed_backward(
                torch.randn(1, 5, 8), torch.randn(1, 3, 4, 4), torch.randn(8, 3, 2, 2), None, None, None, True
            ),
            "grad_patches",
        ),
        (
            lambda: OPS.patch_embed_backward(
                torch.randn(1, 4, 8, dtype=torch.float64),
                torch.randn(1, 3, 4, 4),
                torch.randn(8, 3, 2, 2),
                None,
                None,
                None,
                True,
            ),
            "grad_patches",
        ),
        (
            lambda: OPS.patch_embed_backward(
                torch.randn(1, 4, 8),
                torch.randn(1, 3, 4, 4),
                torch.randn(8, 3, 2, 2),
                torch.zeros(3),
                torch.zeros(3),
                None,
                True,
            ),
            "std",
        ),
    ],
)
def test_backward_ops_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"vlmops\.\w+: {argument}\b"):
        call()


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_nn_patch_embed_degenerate_proj_and_bad_rows():
    from vlmops.nn import PatchEmbed

    empty = PatchEmbed(proj=torch.nn.Conv3d(3, 0, (2, 2, 2), (2, 2, 2), bias=False))
    with pytest.raises(ValueError, match="patch_embed: weight must have D, C and a kernel of sizes >= 1"):
        empty(torch.randn(4, 24))  # was IndexError
    qwen = PatchEmbed(proj=torch.nn.Conv3d(3, 8, (2, 2, 2), (2, 2, 2)))
    with pytest.raises(ValueError, match="hidden_states of shape .* is not rows of C\\*T\\*P\\*P = 24"):
        qwen(torch.randn(5, 23))
    no_channels = PatchEmbed(proj=torch.nn.Conv3d(0, 8, (2, 2, 2), (2, 2, 2)))
    with pytest.raises(ValueError, match="patch_embed: weight must have D, C and a kernel of sizes >= 1"):
        no_channels(torch.randn(4, 0))


@pytest.mark.parametrize("ratio", [0.0, -0.5, float("inf"), float("nan"), 3.0, 0.3, 1e-300, 5e-324, "0.5"])
def test_pixel_shuffle_projector_downsample_ratio_is_checked(ratio):
    from vlmops.nn import PixelShuffleProjector

    projector = torch.nn.Module()
    projector.layer_norm, projector.linear_1 = torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)
    projector.act, projector.linear_2 = torch.nn.GELU(), torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="downsample_ratio must be 1/integer"):  # was ZeroDivisionError
        PixelShuffleProjector.from_internvl(projector, ratio)


def _siglip_config(**overrides):
    from transformers import SiglipVisionConfig

    kwargs = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        num_channels=3,
    )
    kwargs.update(overrides)
    return SiglipVisionConfig(**kwargs)


def test_vision_embeddings_name_pixel_values_and_patch_size():
    from vlmops.nn import SiglipVisionEmbeddings

    module = SiglipVisionEmbeddings(_siglip_config())
    assert module(torch.randn(2, 3, 28, 28)).shape == (2, 16, 16)
    # A grid of another size does not match the position table (num_patches): named, with the way out.
    with pytest.raises(ValueError, match="pixel_values of 35x28 make 20 patches .* interpolate_pos_encoding=True"):
        module(torch.randn(2, 3, 35, 28))
    with pytest.raises(ValueError, match="config.patch_size must be an int >= 1"):
        SiglipVisionEmbeddings(_siglip_config(patch_size=0))


# --- class 2: double backward ----------------------------------------------------------------------


def test_pixel_shuffle_and_its_backward_differentiate_any_number_of_times():
    x = torch.randn(2, 4, 6, 3, dtype=torch.float64).permute(0, 2, 1, 3).requires_grad_()  # [2, 6, 4, 3], strided
    g = torch.randn(2, 3, 2, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: OPS.pixel_shuffle(t, 2), (x,))
    assert torch.autograd.gradgradcheck(lambda t: OPS.pixel_shuffle_backward(t, 2), (g,))


@pytest.mark.parametrize("op", ["pixel_shuffle_layer_norm", "patch_embed"])
def test_double_backward_of_the_other_ops_raises(op):
    # It came back as None or zeros (the backward ops had no autograd); now it says it cannot.
    if op == "pixel_shuffle_layer_norm":
        x = torch.randn(2, 4, 4, 3, dtype=torch.float64, requires_grad=True)
        w = torch.randn(12, dtype=torch.float64, requires_grad=True)
        out = vlmops.pixel_shuffle_layer_norm(x, 2, w)
    else:
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        w = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
        out = vlmops.patch_embed(x, w)
    grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), (x, w), create_graph=True)
    for first in grads:
        with pytest.raises(RuntimeError, match=f"vlmops.{op}_backward cannot be differentiated"):
            torch.autograd.grad(first.square().sum(), (x, w))


def test_backward_computes_only_the_gradients_asked_for():
    x = torch.randn(2, 3, 4, 4)
    weight = torch.randn(5, 3, 2, 2)
    pos = torch.randn(4, 5, requires_grad=True)
    with RecordVlmopsCalls() as record:
        vlmops.patch_embed(x, weight, pos_embed=pos).sum().backward()
    assert record.calls == ["vlmops::patch_embed"], record.calls  # no GEMM backward for pos alone
    torch.testing.assert_close(pos.grad, torch.full((4, 5), 2.0))
    # Each subset of inputs: the gradients asked for are right, the others stay None.
    xs = torch.randn(1, 4, 4, 3, dtype=torch.float64)
    w, b = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    for wants in ((True, False, False), (False, True, False), (False, False, True)):
        leaves = [t.clone().requires_grad_(want) for t, want in zip((xs, w, b), wants)]
        expected = [t.clone().requires_grad_(want) for t, want in zip((xs, w, b), wants)]
        grad = torch.randn(1, 2, 2, 12, dtype=torch.float64)
        vlmops.pixel_shuffle_layer_norm(*leaves[:1], 2, *leaves[1:]).backward(grad)
        reference.pixel_shuffle_layer_norm(expected[0], 2, *expected[1:]).backward(grad)
        for got, want in zip(leaves, expected):
            assert (got.grad is None) == (want.grad is None)
            if want.grad is not None:
                torch.testing.assert_close(got.grad, want.grad)


# --- class 5: strides, big offsets, NaN/Inf ---------------------------------------------------------


def _layouts_4d(B, H, W, C):
    """x [B, H, W, C] in layouts a model or a hostile caller hands over, all with the same values."""
    values = torch.randn(B, H, W, C, dtype=torch.float64)
    contiguous = values.contiguous()
    yield "contiguous", contiguous
    yield "channels_strided", strided_like(values, (B, H, W, C), (H * W * C * 2, W * C * 2, C * 2, 2))
    yield "transposed", values.transpose(1, 2).contiguous().transpose(1, 2)
    # size-1 dims whose strides are smaller than a row (torch still calls the first contiguous)
    yield "size1_small_strides", strided_like(values[:1], (1, H, W, C), (1, W * C, C, 1))
    yield "size1_channel", strided_like(values[..., :1], (B, H, W, 1), (H * W, W, 1, 3))
    yield "expanded", values[:1, :1].expand(B, H, W, C)
    yield "channel_stride_0", values[..., :1].expand(B, H, W, C)


@pytest.mark.parametrize(
    "layout",
    [
        "contiguous",
        "channels_strided",
        "transposed",
        "size1_small_strides",
        "size1_channel",
        "expanded",
        "channel_stride_0",
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_pixel_shuffle_family_on_odd_strides(layout, dtype):
    x = dict(_layouts_4d(2, 4, 6, 3))[layout]
    x = x.to(dtype) if dtype == torch.float64 else strided_like(x.to(dtype), x.shape, x.stride())
    assert torch.equal(vlmops.pixel_shuffle(x, 2), reference.pixel_shuffle(x, 2))
    n = x.shape[3] * 4
    weight, bias = torch.randn(n).to(dtype), torch.randn(n).to(dtype)
    out, mean, rstd = OPS.pixel_shuffle_layer_norm(x, 2, weight, bias, 1e-5)
    want = reference_layer_norm_stats(x.double(), 2, weight.double(), bias.double(), 1e-5)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2}[dtype]
    for got, ref in zip((out, mean, rstd), want):
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * max(1.0, ref.abs().max().item()))
    # The gradient read through the same odd layout.
    grad = strided_like(torch.randn(out.shape).to(dtype), out.shape, tuple(s * 2 for s in out.contiguous().stride()))
    got = OPS.pixel_shuffle_layer_norm_backward(grad, x, mean, rstd, weight, 2)
    want = reference_layer_norm_backward(grad.double(), x.double(), mean, rstd, weight.double(), 2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol * max(1.0, w.abs().max().item()))
    assert torch.equal(OPS.pixel_shuffle_backward(grad, 2), reference_shuffle_backward(grad, 2))


@pytest.mark.parametrize("layout", ["contiguous", "channels_strided", "size1_small_strides", "expanded", "transposed"])
def test_patch_embed_on_odd_strides(layout):
    values = torch.randn(1, 3, 4, 6, dtype=torch.float64)
    weight = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    x = {
        "contiguous": values,
        "channels_strided": strided_like(values, values.shape, (200, 48, 12, 2)),
        "size1_small_strides": strided_like(values, values.shape, (1, 24, 6, 1)),
        "expanded": values[:, :1, :1].expand(1, 3, 4, 6),
        "transposed": values.transpose(2, 3).contiguous().transpose(2, 3),
    }[layout]
    # weight with a size-1 output dim whose stride is smaller than a row (D = 1 slice)
    w1 = strided_like(weight[:1], (1, 3, 2, 2), (1, 4, 2, 1))
    for w in (weight, w1, weight[:, :1].expand(5, 3, 2, 2)):
        want = F.conv2d(x, w, stride=2).flatten(2).transpose(1, 2)
        torch.testing.assert_close(vlmops.patch_embed(x, w), want, rtol=1e-12, atol=1e-12)
    # rows: a single row whose row stride is smaller than the row, and expanded rows
    rows = values.reshape(2, 36)[:, :12]
    for r in (strided_like(rows[:1], (1, 12), (1, 1)), rows[:1].expand(7, 12), strided_like(rows, (2, 12), (3, 1))):
        want = reference.patch_embed(r.contiguous(), weight)
        torch.testing.assert_close(vlmops.patch_embed(r, weight), want, rtol=1e-12, atol=1e-12)
        grad = strided_like(torch.randn(r.shape[0], 5, dtype=torch.float64), (r.shape[0], 5), (1, r.shape[0]))
        got = OPS.patch_embed_backward(grad, r, weight, None, None, None, True)
        want = reference_patch_embed_backward(grad, r, weight, None, None, None, True)
        for g, w_ in zip(got, want):
            torch.testing.assert_close(g, w_, rtol=1e-12, atol=1e-12)


def test_views_past_2_pow_31_elements_of_an_untouched_allocation():
    """Offsets and strides beyond int32, in a 4 GiB allocation of which only the viewed pages are touched."""
    try:
        storage = torch.empty(2**32 + 4096, dtype=torch.uint8)
    except RuntimeError as error:  # pragma: no cover - a machine that refuses the address space
        pytest.skip(f"no 4 GiB of address space: {error}")
    half = storage.view(torch.float16)  # 2**31 + 2048 elements
    # x [1, 2, 2, 3] float16 whose rows lie 2**30 elements apart, starting past 2**31 - 2**30.
    x = half.as_strided((1, 2, 2, 3), (0, 2**30, 3, 1), 2**31 - 2**30 + 7)
    x.copy_(torch.randn(1, 2, 2, 3).half())
    assert torch.equal(vlmops.pixel_shuffle(x, 2), reference.pixel_shuffle(x.clone(), 2))
    out, mean, rstd = OPS.pixel_shuffle_layer_norm(x, 2, None, None, 1e-5)
    want = reference_layer_norm_stats(x.clone().double(), 2, None, None, 1e-5)
    torch.testing.assert_close(mean.double(), want[1], rtol=1e-6, atol=1e-6)
    grad = half.as_strided((1, 1, 1, 12), (0, 0, 0, 2**26), 2**31 - 11 * 2**26 + 5)  # its last element: 2**31 + 5
    grad.copy_(torch.randn(1, 1, 1, 12).half())
    assert torch.equal(OPS.pixel_shuffle_backward(grad, 2), reference_shuffle_backward(grad.clone(), 2))
    got = OPS.pixel_shuffle_layer_norm_backward(grad, x, mean, rstd, None, 2)
    want = reference_layer_norm_backward(grad.clone().double(), x.clone().double(), mean, rstd, None, 2)
    torch.testing.assert_close(got[0].double(), want[0], rtol=2e-2, atol=2e-2)
    # uint8 pixels past 2**31 bytes in, with an image row stride of 2**29.
    pixels = storage.as_strided((1, 1, 4, 4), (0, 0, 2**29, 1), 2**31 + 100)
    pixels.copy_(torch.randint(0, 256, (1, 1, 4, 4), dtype=torch.uint8))
    weight = torch.randn(3, 1, 2, 2)
    got = vlmops.patch_embed(pixels, weight, rescale=1 / 255)
    torch.testing.assert_close(got, reference.patch_embed(pixels.clone(), weight, rescale=1 / 255))


def test_nan_and_inf_propagate_like_the_reference():
    x = torch.randn(1, 4, 4, 2)
    x[0, 0, 0, 0], x[0, 2, 3, 1], x[0, 3, 0, 0] = float("nan"), float("inf"), -float("inf")
    got, want = vlmops.pixel_shuffle(x, 2), reference.pixel_shuffle(x, 2)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # bit for bit, NaN included
    weight, bias = torch.randn(8), torch.randn(8)
    out = vlmops.pixel_shuffle_layer_norm(x, 2, weight, bias)
    want = reference.pixel_shuffle_layer_norm(x, 2, weight, bias)
    torch.testing.assert_close(out, want, equal_nan=True)
    assert out.isnan().all(-1).sum() == 3 and not out[0, 0, 1].isnan().any()  # only the rows holding them
    pixels = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    pixels[0, 1, 0, 0] = float("nan")
    weight = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    want = reference.patch_embed(pixels, weight)
    torch.testing.assert_close(vlmops.patch_embed(pixels, weight), want, equal_nan=True)


def test_layer_norm_statistics_of_rows_without_features_are_nan():
    # Rows of 0 features have no statistics: NaN (the reference's mean of nothing), not uninitialized memory.
    x = torch.randn(2, 4, 4, 0)
    out, mean, rstd = OPS.pixel_shuffle_layer_norm(x, 2, None, None, 1e-5)
    assert out.shape == (2, 2, 2, 0) and mean.isnan().all() and rstd.isnan().all()
    want = reference_layer_norm_stats(x, 2, None, None, 1e-5)
    for got, ref in zip((out, mean, rstd), want):
        torch.testing.assert_close(got, ref, equal_nan=True)
    grads = OPS.pixel_shuffle_layer_norm_backward(torch.randn(2, 2, 2, 0), x, mean, rstd, None, 2)
    assert [tuple(g.shape) for g in grads] == [(2, 4, 4, 0), (0,), (0,)]


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the launchers under the Triton interpreter")
@pytest.mark.parametrize("layout", ["size1_small_strides", "size1_channel", "expanded", "channel_stride_0"])
def test_triton_launchers_on_odd_strides_under_interpreter(layout):
    from vlmops.triton import patch_embed as triton_pe
    from vlmops.triton import pixel_shuffle as triton_ps

    x64 = dict(_layouts_4d(2, 4, 2, 3))[layout]
    x = strided_like(x64.float(), x64.shape, x64.stride())
    assert torch.equal(triton_ps.pixel_shuffle(x, 2), reference.pixel_shuffle(x, 2))
    n = x.shape[3] * 4
    weight = torch.randn(n)
    out, mean, rstd = triton_ps.pixel_shuffle_layer_norm(x, 2, weight, None, 1e-5)
    for got, want in zip((out, mean, rstd), reference_layer_norm_stats(x.double(), 2, weight.double(), None, 1e-5)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    grad = strided_like(torch.randn(out.shape), out.shape, (0,) + out.contiguous().stride()[1:])
    assert torch.equal(triton_ps.pixel_shuffle_backward(grad, 2), reference_shuffle_backward(grad, 2))
    got = triton_ps.pixel_shuffle_layer_norm_backward(grad, x, mean, rstd, weight, 2)
    want = reference_layer_norm_backward(grad.double(), x.double(), mean, rstd, weight.double(), 2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-4)
    # patch_embed: images read through the same odd strides ([B, C, H, W] = x permuted), a D = 1
    # weight whose size-1 dim has a stride smaller than its row.
    images = x.permute(0, 3, 1, 2)
    conv = strided_like(torch.randn(1, x.shape[3], 2, 2), (1, x.shape[3], 2, 2), (1, 4, 2, 1))
    torch.testing.assert_close(
        triton_pe.patch_embed(images, conv, None, None, None, None, None, None),
        reference.patch_embed(images, conv),
        rtol=1e-4,
        atol=1e-4,
    )


# --- hypothesis over strides and sizes ----------------------------------------------------------------


@st.composite
def strided_4d(draw, scale, max_size=3):
    """Sizes [B, H, W, C] (H, W multiples of scale; any may be 0 or 1) and arbitrary strides (0, smaller
    than a row, overlapping), as a view of a random buffer."""
    B = draw(st.integers(0, 2))
    H, W = (scale * draw(st.integers(0, max_size)) for _ in range(2))
    C = draw(st.integers(0, 5))
    sizes = (B, H, W, C)
    strides = tuple(draw(st.integers(0, 50)) for _ in range(4))
    offset = draw(st.integers(0, 7))
    span = offset + sum((s - 1) * t for s, t in zip(sizes, strides) if s > 0) + 1
    base = torch.randn(span, dtype=torch.float64)
    return base.as_strided(sizes, strides, offset)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), scale=st.integers(1, 3), affine=st.booleans())
def test_hypothesis_pixel_shuffle_family_strides(data, scale, affine):
    x = data.draw(strided_4d(scale))
    assert torch.equal(OPS.pixel_shuffle(x, scale), reference.pixel_shuffle(x, scale))
    B, H, W, C = x.shape
    n = C * scale * scale
    weight, bias = (torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)) if affine else (None,) * 2
    got = OPS.pixel_shuffle_layer_norm(x, scale, weight, bias, 1e-6)
    want = reference_layer_norm_stats(x, scale, weight, bias, 1e-6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, equal_nan=True)
    grad_values = torch.randn(B, H // scale, W // scale, n, dtype=torch.float64)
    grad_strides = tuple(data.draw(st.integers(0, 60)) for _ in range(4))
    grad = strided_like(grad_values, grad_values.shape, grad_strides)
    assert torch.equal(OPS.pixel_shuffle_backward(grad, scale), reference_shuffle_backward(grad, scale))
    got = OPS.pixel_shuffle_layer_norm_backward(grad, x, got[1], got[2], weight, scale)
    want = reference_layer_norm_backward(grad, x, want[1], want[2], weight, scale)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-8, equal_nan=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), form=st.sampled_from(["image", "video", "rows"]), uint8=st.booleans(), cls=st.booleans())
def test_hypothesis_patch_embed_strides(data, form, uint8, cls):
    C, D = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(3 if form == "video" else 2))
    grid = tuple(data.draw(st.integers(1, 2)) for _ in kernel)  # an empty grid is test_empty_grid's (conv refuses it)
    B = data.draw(st.integers(0, 2))
    if form == "rows":
        sizes = (data.draw(st.integers(0, 4)), C * math.prod(kernel))
    else:
        sizes = (B, C) + tuple(g * k for g, k in zip(grid, kernel))
    strides = tuple(data.draw(st.integers(0, 40)) for _ in sizes)
    values = torch.randint(0, 256, sizes) if uint8 else torch.randn(sizes, dtype=torch.float64)
    x = strided_like(values.to(torch.uint8) if uint8 else values, sizes, strides)
    weight = torch.randn(D, C, *kernel, dtype=torch.float64)
    w_strides = tuple(data.draw(st.integers(0, 30)) for _ in weight.shape)
    w = strided_like(weight, weight.shape, w_strides)
    mean = torch.randn(C, dtype=torch.float64) if uint8 else None
    std = torch.rand(C, dtype=torch.float64) + 0.5 if uint8 else None
    rescale = 1 / 255 if uint8 else None
    use_cls = cls and form != "rows"
    L = math.prod(grid) if form != "rows" else 0
    pos = torch.randn(int(use_cls) + L, D, dtype=torch.float64) if form != "rows" else None
    token = torch.randn(D, dtype=torch.float64) if use_cls else None
    got = vlmops.patch_embed(x, w, None, mean=mean, std=std, rescale=rescale, pos_embed=pos, cls_token=token)
    want = reference.patch_embed(x.contiguous(), w.contiguous(), None, mean, std, rescale, pos, token)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grad_patches = torch.randn(want[:, int(use_cls) :].shape if form != "rows" else want.shape, dtype=torch.float64)
    got = OPS.patch_embed_backward(grad_patches, x, w, mean, std, rescale, not uint8)
    want = reference_patch_embed_backward(grad_patches, x, w, mean, std, rescale, not uint8)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


# --- opcheck of the six ops on adversarial layouts -----------------------------------------------------


def test_opcheck_all_six_ops_on_odd_layouts():
    x = strided_like(torch.randn(2, 4, 6, 3), (2, 4, 6, 3), (1, 200, 9, 3))  # overlapping batch, strided rows
    weight, bias = torch.randn(12), torch.randn(12)
    torch.library.opcheck(OPS.pixel_shuffle, (x.requires_grad_(), 2))
    grad = strided_like(torch.randn(2, 2, 3, 12), (2, 2, 3, 12), (0, 40, 13, 1)).requires_grad_()
    torch.library.opcheck(OPS.pixel_shuffle_backward, (grad, 2))
    torch.library.opcheck(OPS.pixel_shuffle_layer_norm, (x, 2, weight.requires_grad_(), bias, 1e-5))
    _, mean, rstd = OPS.pixel_shuffle_layer_norm(x.detach(), 2, weight.detach(), bias, 1e-5)
    torch.library.opcheck(
        OPS.pixel_shuffle_layer_norm_backward, (grad.detach(), x.detach(), mean, rstd, weight.detach(), 2)
    )
    pixels = strided_like(torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8), (2, 3, 4, 6), (0, 30, 7, 1))
    conv = strided_like(torch.randn(5, 3, 2, 2), (5, 3, 2, 2), (1, 5, 2, 1)).requires_grad_()
    pos, cls = torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 2.0, 0.7])
    torch.library.opcheck(OPS.patch_embed, (pixels, conv, None, mean, std, 1 / 255, pos, cls))
    images = torch.randn(2, 6, 4, 3).permute(0, 3, 2, 1).requires_grad_()  # [2, 3, 4, 6], channels last
    torch.library.opcheck(OPS.patch_embed, (images, conv, torch.randn(5), None, None, None, None, None))
    grad_patches = strided_like(torch.randn(2, 6, 5), (2, 6, 5), (0, 5, 1))
    for compute_grad_x in (True, False):
        torch.library.opcheck(
            OPS.patch_embed_backward, (grad_patches, images.detach(), conv.detach(), mean, std, 0.5, compute_grad_x)
        )


# --- the references behind an unbuilt checkout ------------------------------------------------------------


def test_unbuilt_checkout_runs_the_references_with_the_ops_signatures(tmp_path):
    """With vlmops._C missing, the wrappers and registry.op run the references: same results as the ops."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 3, dtype=torch.float64)
    weight, bias = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    pixels = torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)
    conv = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 2.0, 0.7])
    pos = torch.randn(7, 5, dtype=torch.float64)
    cls = torch.randn(5, dtype=torch.float64)
    out, mu, rs = OPS.pixel_shuffle_layer_norm(x, 2, weight, bias, 1e-5)
    grad, grad_patches = torch.randn_like(out), torch.randn(2, 6, 5, dtype=torch.float64)
    images = pixels.double()
    calls = {
        "pixel_shuffle": (x, 2),
        "pixel_shuffle_backward": (grad, 2),
        "pixel_shuffle_layer_norm": (x, 2, weight, bias, 1e-5),
        "pixel_shuffle_layer_norm_backward": (grad, x, mu, rs, weight, 2),
        "patch_embed": (pixels, conv, None, mean, std, 1 / 255, pos, cls),
        "patch_embed_backward": (grad_patches, images, conv, mean, std, 0.5, True),
    }
    torch.save(calls, tmp_path / "calls.pt")
    result = run_python(f"""
        import importlib.abc, sys, warnings, torch

        class NoNative(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "vlmops._C":
                    raise ImportError("vlmops._C is not built")

        sys.meta_path.insert(0, NoNative())
        import vlmops
        import vlmops.triton.patch_embed, vlmops.triton.pixel_shuffle  # import without the native library
        from vlmops.ops import registry
        assert not vlmops.build_info()["native"]
        calls = torch.load({str(tmp_path / "calls.pt")!r})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = {{name: registry.op(name)(*args) for name, args in calls.items()}}
            x, w, b = calls["pixel_shuffle_layer_norm"][:1] + calls["pixel_shuffle_layer_norm"][2:4]
            results["wrapper"] = (vlmops.pixel_shuffle(x.flatten(1, 2), 2, grid=(4, 6)),
                                  vlmops.pixel_shuffle_layer_norm(x, 2, w, b),
                                  vlmops.patch_embed(*calls["patch_embed"][:2], mean=calls["patch_embed"][3],
                                                     std=calls["patch_embed"][4], rescale=1 / 255))
        torch.save(results, {str(tmp_path / "results.pt")!r})
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    results = torch.load(tmp_path / "results.pt")
    for name, args in calls.items():
        want = getattr(OPS, name)(*args)
        got = results[name]
        assert type(got) is type(want), name
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert g.shape == w.shape and g.dtype == w.dtype, name
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=name)
    shuffled, normalized, embedded = results["wrapper"]
    torch.testing.assert_close(shuffled, vlmops.pixel_shuffle(x, 2).flatten(1, 2))
    torch.testing.assert_close(normalized, vlmops.pixel_shuffle_layer_norm(x, 2, weight, bias))
    torch.testing.assert_close(embedded, vlmops.patch_embed(pixels, conv, mean=mean, std=std, rescale=1 / 255))
