"""RMSNorm: vlmops.ops.rms_norm and torch.ops.vlmops.rms_norm / rms_norm_backward against transformers'
Qwen2_5_VLRMSNorm, the reference, autograd, opcheck, bad inputs, strided views, hypothesis shapes, and
the Triton kernels (the CUDA owner) under the interpreter on CPU."""

import pytest
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

from vlmops.ops.rms_norm import rms_norm
from vlmops.reference.rms_norm import rms_norm as reference

DTYPE_PAIRS = [  # (x dtype, weight dtype or None)
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.bfloat16),
    (torch.float64, torch.float64),
    (torch.float16, torch.float64),
    (torch.float32, None),
    (torch.bfloat16, None),
]


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def ulp_close(a, b, ulps, x_dtype=None):
    """|a - b| <= ulps units in the last place (relative to |b|) of a's dtype, or of x_dtype when it is
    coarser (the normalized value is rounded to x's dtype before the product with the weight)."""
    eps = max(torch.finfo(a.dtype).eps, torch.finfo(x_dtype or a.dtype).eps)
    return bool(((a.double() - b.double()).abs() <= ulps * eps * b.double().abs() + 1e-30).all())


def _module(C, dtype, gen):
    norm = Qwen2_5_VLRMSNorm(C, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(C, generator=gen))
    return norm


def _exact_sum_input(shape, dtype, gen):
    """Values k/8 with |k| <= 64: every square and every partial sum is exact in float32, so the mean
    does not depend on the summation order and results must equal transformers' bit for bit."""
    return (torch.randint(-64, 65, shape, generator=gen) / 8).to(dtype)


@pytest.mark.parametrize("x_dtype,w_dtype", [p for p in DTYPE_PAIRS if p[1] is not None and p[0] != torch.float64])
@pytest.mark.parametrize("C", [1280, 37])
def test_matches_transformers_bitwise(x_dtype, w_dtype, C):
    gen = torch.Generator().manual_seed(0)
    norm = _module(C, w_dtype, gen)
    x = _exact_sum_input((3, 11, C), x_dtype, gen)
    expected = norm(x).detach()
    got = rms_norm(x, norm.weight.detach(), norm.variance_epsilon)
    assert got.dtype == expected.dtype == torch.promote_types(x_dtype, w_dtype)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "x_dtype,w_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)],
)
def test_random_inputs_match_transformers(x_dtype, w_dtype):
    """Gaussian rows of the vision tower's width: the mean's summation order differs from torch's, so
    float32 agrees to a few ulp; bfloat16 output is identical but for rare 1-ulp roundings."""
    gen = torch.Generator().manual_seed(1)
    norm = _module(1280, w_dtype, gen)
    x = torch.randn(64, 1280, generator=gen).to(x_dtype)
    expected = norm(x).detach()
    got = rms_norm(x, norm.weight.detach())
    assert got.dtype == expected.dtype
    if got.dtype == torch.float32 and x_dtype == torch.float32:
        assert ulp_close(got, expected, 4)
    else:
        assert ulp_close(got, expected, 1)
        assert (got != expected).float().mean().item() < 1e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_dtype,w_dtype", DTYPE_PAIRS)
def test_op_matches_reference(device, x_dtype, w_dtype):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 9, 50, generator=gen).to(device, x_dtype)
    w = None if w_dtype is None else torch.randn(50, generator=gen).to(device, w_dtype)
    out, rstd = torch.ops.vlmops.rms_norm(x, w, 1e-5)
    out_ref, rstd_ref = reference(x, w, 1e-5)
    assert out.dtype == out_ref.dtype and rstd.dtype == rstd_ref.dtype and rstd.shape == (4, 9)
    if x_dtype == torch.float64:
        torch.testing.assert_close(rstd, rstd_ref, rtol=1e-14, atol=0)
        torch.testing.assert_close(out, out_ref, rtol=1e-14, atol=1e-14)
    else:
        torch.testing.assert_close(rstd, rstd_ref, rtol=3e-7, atol=0)
        assert ulp_close(out, out_ref, 4 if out.dtype == x_dtype == torch.float32 else 1, x_dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_within_pytorch_rounding(dtype):
    """flash-attention's rule, forward and backward: error vs a float64 oracle at most 3x eager PyTorch's."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, 256, generator=gen).to(dtype)
    w = (1 + 0.1 * torch.randn(256, generator=gen)).to(dtype)
    g = torch.randn(32, 256, generator=gen).to(dtype)

    def forward_backward(fn, x, w, g):
        x = x.detach().clone().requires_grad_(True)
        w = w.detach().clone().requires_grad_(True)
        out = fn(x, w)
        return (out, *torch.autograd.grad(out, (x, w), g.to(out.dtype)))

    ours = forward_backward(lambda x, w: rms_norm(x, w), x, w, g)
    eager = forward_backward(lambda x, w: reference(x, w)[0], x, w, g)
    oracle = forward_backward(lambda x, w: reference(x, w)[0], x.double(), w.double(), g.double())
    for mine, pytorch, exact in zip(ours, eager, oracle):
        assert mine.dtype == pytorch.dtype
        assert max_err(mine, exact) <= 3 * max_err(pytorch, exact) + 1e-12


def test_strided_rows_are_read_in_place():
    """A padded buffer's buf[:, :C] view, a transposed batch and a strided last dim: results equal the
    contiguous input's (bit for bit with a unit-stride last dim, which runs the same vector loops), and
    no copy of x happens in the op (forward and backward)."""
    gen = torch.Generator().manual_seed(4)
    C = 96
    w = torch.randn(C, generator=gen)
    buf = torch.randn(40, C + 24, generator=gen)
    padded = buf[:, :C]
    batch_t = torch.randn(5, 6, C, generator=gen).transpose(0, 1)
    strided_c = torch.randn(7, 2 * C, generator=gen)[:, ::2]

    def same(a, b, exact):
        if exact:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    for x in (padded, batch_t, strided_c):
        exact = x.stride(-1) == 1
        out, rstd = torch.ops.vlmops.rms_norm(x, w, 1e-6)
        out_c, rstd_c = torch.ops.vlmops.rms_norm(x.contiguous(), w, 1e-6)
        same(out, out_c, exact)
        same(rstd, rstd_c, exact)
        g = torch.randn(x.shape, generator=gen)
        grads_c = torch.ops.vlmops.rms_norm_backward(g, x.contiguous(), w, rstd)
        grads = torch.ops.vlmops.rms_norm_backward(g, x, w, rstd)
        same(grads[0], grads_c[0], exact)
        same(grads[1], grads_c[1], exact)
        # grad_out strided along C (its transposed layout) takes the scalar loop.
        grads_t = torch.ops.vlmops.rms_norm_backward(g.transpose(0, 1).contiguous().transpose(0, 1), x, w, rstd)
        same(grads_t[0], grads_c[0], False)
        same(grads_t[1], grads_c[1], False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out, rstd = torch.ops.vlmops.rms_norm(padded, w, 1e-6)
        torch.ops.vlmops.rms_norm_backward(torch.ones(C).expand(40, C), padded, w, rstd)
    copies = [
        e.name for e in prof.events() if e.name in ("aten::clone", "aten::copy_", "aten::_to_copy", "aten::contiguous")
    ]
    assert copies == []


def test_backward_matches_autograd_through_reference():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, 40, generator=gen, requires_grad=True)
    w = torch.randn(40, generator=gen, requires_grad=True)
    g = torch.randn(3, 7, 40, generator=gen)
    grads = torch.autograd.grad(rms_norm(x, w), (x, w), g)
    grads_ref = torch.autograd.grad(reference(x, w)[0], (x, w), g)
    torch.testing.assert_close(grads[0], grads_ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads_ref[1], rtol=1e-5, atol=1e-5)
    (grad_x,) = torch.autograd.grad(rms_norm(x, None), (x,), g)
    torch.testing.assert_close(grad_x, torch.autograd.grad(reference(x)[0], (x,), g)[0], rtol=1e-5, atol=1e-5)


def test_grad_weight_is_deterministic_and_thread_count_independent():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2000, 64, generator=gen)
    w = torch.randn(64, generator=gen)
    g = torch.randn(2000, 64, generator=gen)
    _, rstd = torch.ops.vlmops.rms_norm(x, w, 1e-6)
    first = torch.ops.vlmops.rms_norm_backward(g, x, w, rstd)[1]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.ops.vlmops.rms_norm_backward(g, x, w, rstd)[1]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, single)
    assert torch.equal(first, torch.ops.vlmops.rms_norm_backward(g, x, w, rstd)[1])


@pytest.mark.parametrize("with_weight", [True, False])
def test_gradcheck_float64(with_weight):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, generator=gen, dtype=torch.float64, requires_grad=True)
    if with_weight:
        assert torch.autograd.gradcheck(lambda x, w: rms_norm(x, w, 1e-3), (x, w))
    else:
        assert torch.autograd.gradcheck(lambda x: rms_norm(x, None, 1e-3), (x,))


def test_opcheck():
    gen = torch.Generator().manual_seed(8)
    for x_dtype, w_dtype in [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, None)]:
        x = torch.randn(2, 5, 12, generator=gen).to(x_dtype).requires_grad_(True)
        w = None if w_dtype is None else torch.randn(12, generator=gen).to(w_dtype).requires_grad_(True)
        torch.library.opcheck(torch.ops.vlmops.rms_norm.default, (x, w, 1e-6))
        out, rstd = torch.ops.vlmops.rms_norm(x.detach(), None if w is None else w.detach(), 1e-6)
        torch.library.opcheck(
            torch.ops.vlmops.rms_norm_backward.default,
            (torch.randn_like(out), x.detach(), None if w is None else w.detach(), rstd),
        )


def test_compiles_fullgraph():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 32, generator=gen)
    w = torch.randn(32, generator=gen)
    f = torch.compile(lambda x, w: rms_norm(x, w), fullgraph=True, backend="aot_eager")
    assert torch.equal(f(x, w), rms_norm(x, w))


def test_edge_shapes():
    w = torch.randn(8)
    out, rstd = torch.ops.vlmops.rms_norm(torch.randn(0, 8), w, 1e-6)
    assert out.shape == (0, 8) and rstd.shape == (0,)
    x1 = torch.randn(8)
    out, rstd = torch.ops.vlmops.rms_norm(x1, w, 1e-6)
    out_ref, rstd_ref = reference(x1, w, 1e-6)
    assert rstd.shape == () and ulp_close(out, out_ref, 4)
    zero = torch.zeros(2, 8)
    assert torch.equal(rms_norm(zero, w, 0.1), torch.zeros(2, 8))  # eps keeps all-zero rows finite


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: rms_norm([1.0], None), TypeError, "rms_norm: x must be Tensor, got list"),
        (lambda: rms_norm(torch.tensor(1.0), None), ValueError, "x must be .* at least 1 dim"),
        (lambda: rms_norm(torch.ones(2, 4, dtype=torch.int32), None), ValueError, "x must be float32, .*got Int"),
        (lambda: rms_norm(torch.ones(2, 4), torch.ones(5)), ValueError, r"weight must be \[C\] = \[4\]"),
        (lambda: rms_norm(torch.ones(2, 4), torch.ones(1, 4)), ValueError, r"weight must be \[C\]"),
        (lambda: rms_norm(torch.ones(2, 4), torch.ones(4, dtype=torch.int64)), ValueError, "weight must be float32"),
        (lambda: rms_norm(torch.ones(2, 4), torch.ones(4, device="meta")), ValueError, "weight is on meta"),
        (lambda: rms_norm(torch.ones(2, 4), None, -1.0), ValueError, "eps must be finite and >= 0"),
        (lambda: rms_norm(torch.ones(2, 4), None, float("nan")), ValueError, "eps must be finite and >= 0"),
        (lambda: rms_norm(torch.ones(2, 4), None, "1e-6"), TypeError, "eps must be float"),
        # The op itself (the C++ contract), called directly.
        (lambda: torch.ops.vlmops.rms_norm(torch.ones(2, 4), torch.ones(3), 1e-6), ValueError, "weight must be"),
        (lambda: torch.ops.vlmops.rms_norm(torch.ones(2, 4, dtype=torch.int64), None, 1e-6), ValueError, "x must be"),
        (lambda: torch.ops.vlmops.rms_norm(torch.ones(2, 4), None, -1.0), ValueError, "eps must be"),
        (
            lambda: torch.ops.vlmops.rms_norm_backward(torch.ones(2, 5), torch.ones(2, 4), None, torch.ones(2)),
            ValueError,
            "grad_out must be x's shape",
        ),
        (
            lambda: torch.ops.vlmops.rms_norm_backward(
                torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(2, 4), None, torch.ones(2)
            ),
            ValueError,
            "grad_out must be Float",
        ),
        (
            lambda: torch.ops.vlmops.rms_norm_backward(torch.ones(2, 4), torch.ones(2, 4), None, torch.ones(3)),
            ValueError,
            r"rstd must be x.shape\[:-1\]",
        ),
        (
            lambda: torch.ops.vlmops.rms_norm_backward(
                torch.ones(2, 4), torch.ones(2, 4), None, torch.ones(2, dtype=torch.float64)
            ),
            ValueError,
            "rstd must be Float",
        ),
    ],
)
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@settings(max_examples=20, deadline=None)
@given(
    lead=st.lists(st.integers(0, 4), min_size=0, max_size=2),
    C=st.integers(1, 70),
    pad=st.integers(0, 5),
    transpose=st.booleans(),
    x_dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    w_dtype=st.sampled_from([None, torch.float32, torch.bfloat16]),
    seed=st.integers(0, 1000),
)
def test_hypothesis_shapes_and_strides(lead, C, pad, transpose, x_dtype, w_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, C + pad, generator=gen).to(x_dtype)[..., :C]
    if transpose and len(lead) == 2:
        x = x.transpose(0, 1)
    w = None if w_dtype is None else torch.randn(C, generator=gen).to(w_dtype)
    out, rstd = torch.ops.vlmops.rms_norm(x, w, 1e-6)
    out_ref, rstd_ref = reference(x, w, 1e-6)
    assert out.shape == x.shape and rstd.shape == x.shape[:-1] and out.dtype == out_ref.dtype
    torch.testing.assert_close(rstd, rstd_ref, rtol=3e-7, atol=0)
    assert ulp_close(out, out_ref, 4 if out.dtype == x_dtype == torch.float32 else 1, x_dtype)
    g = torch.randn(x.shape, generator=gen).to(out.dtype)
    grad_x, grad_w = torch.ops.vlmops.rms_norm_backward(g, x, w, rstd)
    if w is None:
        assert grad_w.shape == (0,)
    else:
        assert grad_w.dtype == w.dtype

    def autograd_grads(x, w, g):
        x = x.detach().clone().requires_grad_(True)
        w = None if w is None else w.detach().clone().requires_grad_(True)
        return torch.autograd.grad(reference(x, w, 1e-6)[0], [x] + ([] if w is None else [w]), g)

    # The input gradient cancels (1 - x^2 rstd^2 is tiny for C = 1): the rule is PyTorch's own error
    # (autograd through the reference in x's dtype) against float64, times 3.
    exact = autograd_grads(x.double(), None if w is None else w.double(), g.double())
    eager = autograd_grads(x, w, g)
    if x.numel():
        for mine, pytorch, oracle in zip((grad_x, grad_w), eager, exact):
            slack = 4 * torch.finfo(x_dtype).eps * max(1.0, oracle.abs().max().item())
            assert max_err(mine, oracle) <= 3 * max_err(pytorch, oracle) + slack


# Triton kernels (the CUDA owner of the op) under the interpreter on CPU tensors; max_block_c=16
# forces the chunked loop for rows wider than 16.
@pytest.mark.parametrize("max_block_c", [8192, 16])
@pytest.mark.parametrize(
    "x_dtype,w_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float64),
        (torch.float16, None),
    ],
)
def test_triton_forward_and_backward_match_reference(max_block_c, x_dtype, w_dtype):
    from vlmops.triton import rms_norm as triton_rms_norm

    gen = torch.Generator().manual_seed(10)
    x = torch.randn(3, 7, 56, generator=gen).to(x_dtype)[:, :, :40]  # padded rows, read through strides
    w = None if w_dtype is None else torch.randn(40, generator=gen).to(w_dtype)
    out, rstd = triton_rms_norm.rms_norm(x, w, 1e-6, max_block_c=max_block_c)
    out_ref, rstd_ref = reference(x, w, 1e-6)
    assert out.dtype == out_ref.dtype and rstd.dtype == rstd_ref.dtype and rstd.shape == (3, 7)
    exact = x_dtype == torch.float64
    torch.testing.assert_close(rstd, rstd_ref, rtol=1e-14 if exact else 3e-7, atol=0)
    if exact:
        torch.testing.assert_close(out, out_ref, rtol=1e-14, atol=1e-14)
    else:
        # h is rounded to x's dtype, then the product: a 1-ulp h (rsqrt, 1/C) can move out by 2 ulps.
        assert ulp_close(out, out_ref, 4 if out.dtype == x_dtype == torch.float32 else 2, x_dtype)
    g = torch.randn(x.shape, generator=gen).to(out.dtype)
    grad_x, grad_w = triton_rms_norm.rms_norm_backward(g, x, w, rstd, max_block_c=max_block_c)
    cpu_grad_x, cpu_grad_w = torch.ops.vlmops.rms_norm_backward(g, x, w, rstd)
    tol = 1e-12 if exact else 2e-5 if x_dtype == torch.float32 else 2e-2
    torch.testing.assert_close(grad_x.double(), cpu_grad_x.double(), rtol=tol, atol=tol)
    assert grad_w.shape == cpu_grad_w.shape and grad_w.dtype == cpu_grad_w.dtype
    torch.testing.assert_close(grad_w.double(), cpu_grad_w.double(), rtol=tol, atol=tol)


def test_double_backward_raises():
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(rms_norm(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="rms_norm_backward cannot be differentiated"):
        grad_x.sum().backward()


def test_backward_reference_matches_autograd():
    from vlmops.reference.rms_norm import rms_norm_backward as reference_backward

    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 16, dtype=torch.float64)
    out, rstd = reference(x, w, 1e-6)
    expected = torch.autograd.grad(out, (x, w), g)
    got = reference_backward(g, x.detach(), w.detach(), rstd.detach())
    torch.testing.assert_close(got, expected)
