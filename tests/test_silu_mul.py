"""SwiGLU gating (vlmops.ops.silu_mul, torch.ops.vlmops.silu_mul / silu_mul_backward, the Triton
kernels of vlmops/triton/silu_mul.py) against transformers' gated MLP gating (`Qwen2_5_VLMLP`:
``act_fn(gate_proj(x)) * up_proj(x)``) and its autograd, the reference, opcheck, gradcheck, bad inputs
and hypothesis shapes and strides.

The Triton launchers run on CPU tensors under the interpreter (conftest sets TRITON_INTERPRET=1);
on a CUDA machine the same checks run through the public ops on CUDA tensors.
"""

import pytest
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.activations import SiLUActivation
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

import vlmops.triton.silu_mul as triton_silu_mul
from vlmops.ops.silu_mul import silu_mul
from vlmops.reference.silu_mul import silu_mul as reference_silu_mul
from vlmops.reference.silu_mul import silu_mul_backward as reference_silu_mul_backward
from vlmops.triton import rows_2d

LOW_PRECISION = [torch.bfloat16, torch.float16]
BACKENDS = [
    pytest.param("cpu", id="interpreter"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.requires_cuda),
]


def transformers_gating(gate, up):
    """The expression transformers' gated MLPs evaluate, with their own activation module."""
    return SiLUActivation()(gate) * up


def transformers_grads(gate, up, grad_out):
    """(grad_gate, grad_up) autograd computes for transformers' gating."""
    gate = gate.detach().clone().requires_grad_(True)
    up = up.detach().clone().requires_grad_(True)
    return torch.autograd.grad(transformers_gating(gate, up), (gate, up), grad_out)


def random_like(t, seed=5):
    """A seeded standard normal tensor of t's shape, dtype and device (e.g. a grad_out)."""
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(seed)).to(t.dtype).to(t.device)


def assert_low_precision_equal(value, expected):
    """Equal, but for rare one-ulp differences where PyTorch's loops compute an element's exp with
    std::exp (the tail of a vectorized loop) and the kernels with the vector exp."""
    ulp = torch.finfo(value.dtype).eps * expected.double().abs().clamp_min(torch.finfo(value.dtype).tiny)
    assert ((value.double() - expected.double()).abs() <= ulp).all(), max_error(value, expected)
    assert (value != expected).sum().item() <= max(1, value.numel() // 100)


def max_error(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_float32_close(value, expected, ulps=2):
    """Within `ulps` float32 ulps of expected (relative to the larger of |expected| and 1e-30)."""
    bound = ulps * torch.finfo(torch.float32).eps * expected.double().abs().clamp_min(1e-30)
    assert ((value.double() - expected.double()).abs() <= bound).all(), max_error(value, expected)


def assert_low_precision_close(value, ref64, torch_lowp, interpreted=False):
    """flash-attention's rule: error vs the float64 reference within 3x eager PyTorch's own error.
    The Triton interpreter converts float32 to bfloat16 by truncation (compiled kernels round to
    nearest even): interpreted bfloat16 results are checked element by element instead, within the
    two truncations (silu, then the product) of 2**-7 relative each."""
    if interpreted and value.dtype == torch.bfloat16:
        bound = 1.1 * 2**-6 * ref64.abs()
        assert ((value.double() - ref64).abs() <= bound).all(), max_error(value, ref64)
        return
    ours, theirs = max_error(value, ref64), max_error(torch_lowp, ref64)
    assert ours <= 3 * theirs + 1e-12, (ours, theirs)


def padded_rows(rows, cols, dtype, device="cpu", pad=16, scale=1.0, seed=0):
    """A [rows, cols] view of a buffer whose row stride is cols rounded up to a multiple of `pad`
    (how vlmops.nn.GatedMLP's RowAlignedLinear writes its GEMM outputs), plus garbage in the padding."""
    gen = torch.Generator().manual_seed(seed)
    width = -(-cols // pad) * pad + (pad if cols % pad == 0 else 0)
    buf = (torch.randn(rows, width, generator=gen) * scale).to(dtype).to(device)
    buf[:, cols:] = float("nan")  # never read
    return buf[:, :cols]


def layouts(dtype, device="cpu"):
    """Named (gate, up) pairs of shape [..., I] covering the stride cases of the kernels."""
    gen = torch.Generator().manual_seed(1)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype).to(device)

    fused = randn(2, 9, 2 * 37, scale=4.0)  # a fused gate_up projection: halves of one buffer
    wide = randn(5, 2 * 40, scale=4.0)
    return {
        "contiguous": (randn(7, 45, scale=4.0), randn(7, 45)),
        "padded_rows": (
            padded_rows(9, 3420 // 20, dtype, device, scale=4.0, seed=2),
            padded_rows(9, 3420 // 20, dtype, device, seed=3),
        ),
        "fused_gate_up_3d": (fused[..., :37], fused[..., 37:]),
        "transposed": (randn(33, 6, scale=4.0).t(), randn(6, 33)),
        "last_dim_strided": (wide[:, ::2], wide[:, 1::2]),
        "non_collapsible_3d": (randn(4, 5, 19, scale=4.0)[:, 1:4], randn(4, 3, 19)),
        "expanded_up": (randn(5, 23, scale=4.0), randn(23).expand(5, 23)),
        "one_dim": (randn(70, scale=4.0), randn(70)),
    }


# --- against transformers -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_qwen2_5_vl_mlp(dtype, padded):
    """The gating inside a tiny Qwen2_5_VLMLP: bf16/fp16 bitwise, fp32 within 2 ulp; with gate and up
    written by padded-row GEMMs (vlmops.nn.GatedMLP's layout) or as plain projections."""
    config = Qwen2_5_VLVisionConfig(hidden_size=32, intermediate_size=90, hidden_act="silu")
    mlp = modeling_qwen2_5_vl.Qwen2_5_VLMLP(config, bias=True).to(dtype)
    x = torch.randn(37, 32).to(dtype)
    with torch.no_grad():
        expected = mlp(x)
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        if padded:
            I, pad = gate.shape[-1], 6  # row stride 96: a multiple of 16
            gate = torch.cat((gate, torch.zeros(37, pad, dtype=dtype)), 1)[:, :I]
            up = torch.cat((up, torch.zeros(37, pad, dtype=dtype)), 1)[:, :I]
            assert gate.stride(0) == 96 and up.stride(0) == 96
        gating = mlp.act_fn(gate) * up
        out = silu_mul(gate, up)
        assert out.is_contiguous() and out.dtype == dtype
        if dtype == torch.float32:
            assert_float32_close(out, gating)
        else:
            assert torch.equal(out, gating)
            assert torch.equal(mlp.down_proj(out), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_backward_matches_transformers_autograd(dtype):
    gate, up = layouts(dtype)["padded_rows"]
    grad_out = random_like(gate)
    expected = transformers_grads(gate, up, grad_out)
    g, u = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
    grads = torch.autograd.grad(silu_mul(g, u), (g, u), grad_out)
    for got, want in zip(grads, expected):
        if dtype in LOW_PRECISION:
            assert_low_precision_equal(got, want)
        else:
            tol = 1e-12 if dtype == torch.float64 else 1e-6
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_reference_is_transformers_rounding(dtype):
    """The oracle is the transformers expression, rounding included, forward and backward."""
    gate, up = layouts(dtype)["contiguous"]
    grad_out = random_like(gate)
    assert torch.equal(reference_silu_mul(gate, up), transformers_gating(gate, up))
    for got, want in zip(reference_silu_mul_backward(grad_out, gate, up), transformers_grads(gate, up, grad_out)):
        if dtype in LOW_PRECISION:
            assert torch.equal(got, want)
        else:
            tol = 1e-12 if dtype == torch.float64 else 1e-6
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)


# --- the CPU op against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("layout", list(layouts(torch.float32)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_op_matches_reference_every_layout(layout, dtype):
    gate, up = layouts(dtype)[layout]
    grad_out = random_like(gate)
    out = torch.ops.vlmops.silu_mul(gate, up)
    grad_gate, grad_up = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    ref = reference_silu_mul(gate, up)
    ref_grads = reference_silu_mul_backward(grad_out, gate, up)
    assert out.is_contiguous() and grad_gate.is_contiguous() and grad_up.is_contiguous()
    if dtype in LOW_PRECISION:
        # Same float32 math and roundings: equal to eager PyTorch on every layout.
        for got, want in ((out, ref), (grad_gate, ref_grads[0]), (grad_up, ref_grads[1])):
            assert_low_precision_equal(got, want)
    elif dtype == torch.float32:
        assert_float32_close(out, ref)
        torch.testing.assert_close(grad_gate, ref_grads[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad_up, ref_grads[1], rtol=1e-6, atol=1e-6)
    else:
        torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(grad_gate, ref_grads[0], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(grad_up, ref_grads[1], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_error_within_pytorch_rounding(dtype):
    gate, up = layouts(dtype)["padded_rows"]
    grad_out = random_like(gate)
    ref64 = reference_silu_mul(gate.double(), up.double())
    assert_low_precision_close(silu_mul(gate, up), ref64, transformers_gating(gate, up))
    grads64 = reference_silu_mul_backward(grad_out.double(), gate.double(), up.double())
    grads = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    for got, ref, eager in zip(grads, grads64, transformers_grads(gate, up, grad_out)):
        assert_low_precision_close(got, ref64=ref, torch_lowp=eager)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,), (2, 0, 4)])
def test_empty(shape):
    gate, up = torch.randn(shape), torch.randn(shape)
    assert torch.ops.vlmops.silu_mul(gate, up).shape == shape
    grad_gate, grad_up = torch.ops.vlmops.silu_mul_backward(torch.randn(shape), gate, up)
    assert grad_gate.shape == shape and grad_up.shape == shape


def test_extreme_values():
    """Saturation as in eager: large negative gates give -0 (exp(-g) overflows to inf, no nan),
    large positive ones g itself, -inf and nan give nan."""
    gate = torch.tensor([-1e4, -100.0, -88.0, 0.0, 88.0, 100.0, 1e4, float("inf"), float("-inf"), float("nan")])
    up = torch.full_like(gate, 2.0)
    torch.testing.assert_close(
        torch.ops.vlmops.silu_mul(gate, up), transformers_gating(gate, up), equal_nan=True, rtol=0, atol=0
    )


# --- the Triton kernels ------------------------------------------------------------------------------


def triton_kernels(device):
    """The launchers themselves on CPU (interpreter); the public ops, which Triton owns, on CUDA."""
    if device == "cpu":
        return triton_silu_mul.silu_mul, triton_silu_mul.silu_mul_backward
    return torch.ops.vlmops.silu_mul, torch.ops.vlmops.silu_mul_backward


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("layout", list(layouts(torch.float32)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_triton_matches_reference(device, layout, dtype):
    forward, backward = triton_kernels(device)
    gate, up = layouts(dtype, device)[layout]
    grad_out = random_like(gate)
    out = forward(gate, up)
    grad_gate, grad_up = backward(grad_out, gate, up)
    assert out.is_contiguous() and grad_gate.is_contiguous() and grad_up.is_contiguous()
    ref = reference_silu_mul(gate, up)
    ref_grads = reference_silu_mul_backward(grad_out, gate, up)
    if dtype in LOW_PRECISION:
        interpreted = device == "cpu"
        ref64 = reference_silu_mul(gate.double(), up.double())
        grads64 = reference_silu_mul_backward(grad_out.double(), gate.double(), up.double())
        assert_low_precision_close(out, ref64, ref, interpreted)
        assert_low_precision_close(grad_gate, grads64[0], ref_grads[0], interpreted)
        assert_low_precision_close(grad_up, grads64[1], ref_grads[1], interpreted)
    else:
        # On a GPU, float32 exp is the ex2.approx path (a few ulp); the interpreter uses numpy's.
        tol = 1e-13 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
        torch.testing.assert_close(grad_gate, ref_grads[0], rtol=tol, atol=tol)
        torch.testing.assert_close(grad_up, ref_grads[1], rtol=tol, atol=tol)


def test_triton_rows_view_reads_in_place():
    """rows_2d: padded rows, fused halves and transposes are views of the input; only leading dims
    that do not collapse into one row stride are copied."""
    for layout in ("padded_rows", "fused_gate_up_3d", "transposed", "last_dim_strided", "expanded_up"):
        for t in layouts(torch.float32)[layout]:
            rows = rows_2d(t)
            assert rows.data_ptr() == t.data_ptr() and rows.shape == (t.numel() // t.shape[-1], t.shape[-1])
    gate = layouts(torch.float32)["non_collapsible_3d"][0]
    rows = rows_2d(gate)
    assert rows.is_contiguous() and torch.equal(rows, gate.reshape(-1, gate.shape[-1]))


def _scalar_layout(t):
    """t's values one element past a 16-byte boundary (rows of t's shape, contiguous): VEC = 1."""
    return torch.empty(t.numel() + 1, dtype=t.dtype)[1:].view(t.shape).copy_(t)


# (gate, up) layouts whose rows allow vectors, and the VEC each gets: contiguous inputs seen as one row
# (any I, here odd: 3420 / 20 * 3 = 513 elements per row), rows padded to 16 elements, halves of a fused
# projection whose I is a multiple of 8.
def _vector_layouts(dtype):
    gen = torch.Generator().manual_seed(5)
    full = 16 // torch.empty((), dtype=dtype).element_size()

    def randn(*shape):
        return (torch.randn(*shape, generator=gen) * 4).to(dtype)

    fused = randn(6, 2 * 1040)
    return {
        "contiguous_odd_rows": ((randn(8, 513), randn(8, 513)), full),
        "padded_rows": ((randn(9, 1040)[:, :1032], randn(9, 1040)[:, :1032]), full),
        "fused_halves": ((fused[:, :1040], fused[:, 1040:]), full),
        "padded_rows_4": ((randn(9, 176)[:, :172], randn(9, 176)[:, :172]), min(full, 4)),
    }


@pytest.mark.parametrize("layout", ["contiguous_odd_rows", "padded_rows", "fused_halves", "padded_rows_4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_triton_vector_path_matches_scalar_path(layout, dtype):
    """The launches with 16-byte (or narrower) vectors compute bitwise what the scalar launch computes."""
    (gate, up), vec = _vector_layouts(dtype)[layout]
    assert triton_silu_mul._launch_args(gate, up)[3] == vec
    grad_out = random_like(gate)
    scalar = [_scalar_layout(t) for t in (grad_out, gate, up)]
    assert triton_silu_mul._launch_args(*scalar)[3] == 1
    assert torch.equal(triton_silu_mul.silu_mul(gate, up), triton_silu_mul.silu_mul(*scalar[1:]))
    got, want = triton_silu_mul.silu_mul_backward(grad_out, gate, up), triton_silu_mul.silu_mul_backward(*scalar)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_triton_contiguous_inputs_are_one_row():
    """Contiguous gate and up (any row length) launch as one row of every element: whole 16-byte
    vectors even where the rows themselves are not 16-byte aligned (3420 bf16 = 6840 bytes)."""
    gate, up = torch.randn(6, 3420, dtype=torch.bfloat16), torch.randn(6, 3420, dtype=torch.bfloat16)
    (g, _), programs, args, vec, _ = triton_silu_mul._launch_args(gate, up)
    assert g.shape == (1, 6 * 3420) and g.data_ptr() == gate.data_ptr()
    assert (programs, args[0] * vec, vec) == (-(-6 * 3420 // 1024), 6 * 3420, 8)
    padded = torch.randn(6, 3424, dtype=torch.bfloat16)[:, :3420]
    _, programs, args, vec, _ = triton_silu_mul._launch_args(padded, padded)
    assert (programs, vec, args) == (6 * 4, 4, [3420 // 4, 3424 // 4, 1, 3424 // 4, 1])


@pytest.mark.requires_cuda
def test_cuda_op_matches_cpu_op():
    """bf16 on the GPU: the same roundings as the CPU kernel (round to nearest even), at most one
    bf16 ulp apart where the GPU's exp differs from Sleef's."""
    gate, up = layouts(torch.bfloat16)["padded_rows"]
    cpu = torch.ops.vlmops.silu_mul(gate, up)
    cuda = torch.ops.vlmops.silu_mul(gate.cuda(), up.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=2**-7, atol=0)


# --- op contracts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for layout in ("contiguous", "padded_rows", "transposed"):
        gate, up = (t.requires_grad_(True) for t in layouts(torch.float32, device)[layout])
        torch.library.opcheck(torch.ops.vlmops.silu_mul.default, (gate, up))
        grad_out = torch.randn(gate.shape, device=device)
        torch.library.opcheck(torch.ops.vlmops.silu_mul_backward.default, (grad_out, gate.detach(), up.detach()))


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "non_collapsible_3d"])
def test_gradcheck_float64(layout):
    gate, up = (
        t.clone().requires_grad_(True) if t.is_contiguous() else t.detach().requires_grad_(True)
        for t in layouts(torch.float64)[layout]
    )
    assert torch.autograd.gradcheck(silu_mul, (gate, up))


def test_compiles_fullgraph():
    gate, up = layouts(torch.float32)["padded_rows"]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def mlp_gating(gate, up):
        return silu_mul(gate, up) * 2

    assert torch.equal(mlp_gating(gate, up), silu_mul(gate, up) * 2)


# --- bad inputs ---------------------------------------------------------------------------------------

BAD_INPUTS = {
    "gate not a tensor": (lambda g, u: ([1.0], u), TypeError, "silu_mul: gate must be Tensor, got list"),
    "up not a tensor": (lambda g, u: (g, 2.0), TypeError, "silu_mul: up must be Tensor, got float"),
    "integer gate": (
        lambda g, u: (g.long(), u.long()),
        ValueError,
        "silu_mul: gate must be float32, float64, float16 or bfloat16, got Long",
    ),
    "up dtype": (lambda g, u: (g, u.double()), ValueError, "silu_mul: up dtype Double must match gate dtype Float"),
    "up shape": (
        lambda g, u: (g, u[:, :-1]),
        ValueError,
        r"silu_mul: up must be gate's shape = \[4, 6\], got shape \[4, 5\]",
    ),
    "0-dim gate": (lambda g, u: (g[0, 0], u[0, 0]), ValueError, "gate must be \\[..., I\\] with at least 1 dim"),
    "up device": (lambda g, u: (g, u.to("meta")), ValueError, "up is on meta but gate is on cpu"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise(case):
    change, error, match = BAD_INPUTS[case]
    gate, up = change(torch.randn(4, 6), torch.randn(4, 6))
    with pytest.raises(error, match=match):
        silu_mul(gate, up)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(4, 5), torch.randn(4, 6), torch.randn(4, 6)), r"grad_out must be gate's shape = \[4, 6\]"),
        (
            (torch.randn(4, 6, dtype=torch.float16), torch.randn(4, 6), torch.randn(4, 6)),
            "grad_out dtype Half must match gate dtype Float",
        ),
        (
            (torch.randn(4, 6), torch.randn(4, 6), torch.randn(3, 6)),
            r"up must be gate's shape = \[4, 6\], got shape \[3, 6\]",
        ),
        (
            (torch.randn(4, 6), torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)),
            "grad_out dtype Float must match gate dtype Double",
        ),
        ((torch.randn(()), torch.randn(()), torch.randn(())), "gate must be \\[..., I\\] with at least 1 dim"),
        (
            (torch.randn(4, 6, device="meta"), torch.randn(4, 6), torch.randn(4, 6)),
            "gate is on cpu but grad_out is on meta",
        ),
    ],
)
def test_backward_op_checks_its_arguments(args, match):
    """The C++ contract of the backward op, called directly: ValueError naming the argument."""
    with pytest.raises(ValueError, match="vlmops.silu_mul_backward: " + match):
        torch.ops.vlmops.silu_mul_backward(*args)


# --- hypothesis: shapes and strides -------------------------------------------------------------------


@st.composite
def strided_pair(draw):
    """gate and up [..., I] (1-3 dims, sizes including 0 and 1) cut from larger buffers with random
    padding, steps and a random permutation of the leading dims."""
    ndim = draw(st.integers(1, 3))
    shape = [draw(st.integers(0, 5)) for _ in range(ndim - 1)] + [draw(st.integers(0, 40))]

    def one(seed):
        steps = [draw(st.integers(1, 2)) for _ in range(ndim)]
        pads = [draw(st.integers(0, 3)) for _ in range(ndim)]
        order = draw(st.permutations(range(ndim - 1))) + [ndim - 1] if ndim > 1 else [0]
        big = [shape[d] * steps[d] + pads[d] for d in order]
        gen = torch.Generator().manual_seed(seed)
        buf = torch.randn(big, generator=gen) * 4
        inverse = [order.index(d) for d in range(ndim)]
        view = buf.permute(inverse)
        return view[tuple(slice(0, shape[d] * steps[d], steps[d]) for d in range(ndim))]

    return one(draw(st.integers(0, 2**16))), one(draw(st.integers(0, 2**16)))


@settings(max_examples=30, deadline=None)
@given(pair=strided_pair(), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_hypothesis_shapes_and_strides(pair, dtype):
    gate, up = (t.to(dtype) if dtype != torch.float32 else t for t in pair)
    grad_out = random_like(gate)
    out = silu_mul(gate, up)
    grads = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    ref, ref_grads = reference_silu_mul(gate, up), reference_silu_mul_backward(grad_out, gate, up)
    if dtype == torch.bfloat16:
        for got, want in ((out, ref), *zip(grads, ref_grads)):
            assert_low_precision_equal(got, want)
    else:
        assert_float32_close(out, ref)
        torch.testing.assert_close(grads, ref_grads, rtol=1e-6, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(pair=strided_pair())
def test_hypothesis_triton_interpreter(pair):
    gate, up = pair
    grad_out = random_like(gate)
    torch.testing.assert_close(triton_silu_mul.silu_mul(gate, up), reference_silu_mul(gate, up), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        triton_silu_mul.silu_mul_backward(grad_out, gate, up),
        reference_silu_mul_backward(grad_out, gate, up),
        rtol=1e-5,
        atol=1e-5,
    )
