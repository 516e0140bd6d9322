"""Adversarial inputs for the attention ops, vlmops.varlen_attention and vlmops.gated_cross_attention,
forward and backward, against vlmops.reference (float64):

- layouts BLAS cannot read as they are: size-1 dims whose stride is smaller than the head dim (torch
  calls such a tensor contiguous), strides past 2^31 (views of a large untouched allocation), expanded
  (stride-0) operands and gradients, a head dim strided or of size 1; hypothesis over all of them;
- the Triton launchers (under the interpreter) on the same layouts and on head offsets past 2^31;
- NaN/Inf values, empty segments and rows, bad cu_seqlens and key ranges;
- double backward, which raises;
- errors that name the argument, from the wrappers and from the ops' C++ entries (the contract).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmops
from vlmops.reference.gated_cross_attention import gated_cross_attention as gated_reference
from vlmops.reference.gated_cross_attention import gated_cross_attention_backward as gated_reference_backward
from vlmops.reference.varlen_attention import varlen_attention as varlen_reference
from vlmops.reference.varlen_attention import varlen_attention_backward as varlen_reference_backward

REPO = Path(__file__).resolve().parents[1]  # subprocesses import this checkout's vlmops

varlen_op = torch.ops.vlmops.varlen_attention
varlen_backward_op = torch.ops.vlmops.varlen_attention_backward
gated_op = torch.ops.vlmops.gated_cross_attention
gated_backward_op = torch.ops.vlmops.gated_cross_attention_backward


def cu_of(lengths):
    return torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int32)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def with_strides(values, strides, offset=0):
    """A tensor equal to `values` laid out with `strides` (and a storage offset) in a fresh storage.
    Stride-0 dims must hold equal values along them (build such values with expand)."""
    shape = values.shape
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides)) if values.numel() else 1
    t = torch.zeros(offset + span, dtype=values.dtype).as_strided(shape, strides, offset)
    target, source = t, values
    for d, (size, stride) in enumerate(zip(shape, strides)):
        if stride == 0 and size > 1:  # write one slice of an expanded dim
            target, source = target.narrow(d, 0, 1), source.narrow(d, 0, 1)
    target.copy_(source)
    return t


def one_token_small_stride(values):
    """values [1, ...] with the size-1 dim's stride smaller than the row (1, or 0 for rows of 1 element):
    is_contiguous() stays True."""
    strides = list(values.contiguous().stride())
    strides[0] = min(1, values.shape[-1] - 1)
    t = with_strides(values, strides)
    assert t.is_contiguous() and t.stride(0) < t.shape[-1]
    return t


def assert_close(got, expected, tol=1e-10):
    torch.testing.assert_close(got.double(), expected.double(), rtol=tol, atol=tol, equal_nan=True)


def check_varlen(q, k, v, cu_q, cu_k, grad_out, scale=None):
    """The op (forward and backward, called directly) on the given layouts vs the reference on plain copies."""
    plain = [t.contiguous() for t in (q, k, v, grad_out)]
    out, lse = varlen_op(q, k, v, cu_q, cu_k, None, None, scale)
    ref_out, ref_lse = varlen_reference(*plain[:3], cu_q, cu_k, softmax_scale=scale)
    assert_close(out, ref_out)
    assert_close(lse, ref_lse)
    grads = varlen_backward_op(grad_out, q, k, v, out, lse, cu_q, cu_k, None, None, scale)
    ref_grads = varlen_reference_backward(plain[3], *plain[:3], ref_out, ref_lse, cu_q, cu_k, softmax_scale=scale)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


def check_gated(q, k, v, start, end, gate, grad_out, scale=None):
    plain = [t.contiguous() for t in (q, k, v, grad_out)]
    out, lse = gated_op(q, k, v, start, end, gate, scale)
    ref_out, ref_lse = gated_reference(*plain[:3], start, end, gate, scale)
    assert_close(out, ref_out)
    assert_close(lse, ref_lse)
    grads = gated_backward_op(grad_out, q, k, v, out, lse, start, end, gate, scale)
    ref_grads = gated_reference_backward(plain[3], *plain[:3], ref_out, ref_lse, start, end, gate, scale)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


# ---- layouts BLAS cannot take as they are (class 1) --------------------------------------------------


@pytest.mark.parametrize("operand", ["q", "k", "v", "grad_out"])
@pytest.mark.parametrize("D", [1, 64, 80])
def test_varlen_one_token_with_a_stride_smaller_than_the_row(operand, D):
    # One query (q, grad_out) or one key (k, v) whose size-1 dim has stride 1 < D: is_contiguous() is
    # True, and BLAS must never see that stride as a leading dimension.
    Nq, Nk = (1, 6) if operand in ("q", "grad_out") else (5, 1)
    tensors = dict(
        q=randn(Nq, 2, D, seed=1),
        k=randn(Nk, 2, D, seed=2),
        v=randn(Nk, 2, D, seed=3),
        grad_out=randn(Nq, 2, D, seed=4),
    )
    tensors[operand] = one_token_small_stride(tensors[operand])
    check_varlen(tensors["q"], tensors["k"], tensors["v"], cu_of([Nq]), cu_of([Nk]), tensors["grad_out"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_one_token_small_stride_in_float32_and_bfloat16(dtype):
    # A 1-token q of float32 (read in place) and of bfloat16 (converted to float32 first, strides kept).
    q = one_token_small_stride(randn(1, 4, 64, seed=5, dtype=dtype))
    k, v = randn(7, 4, 64, seed=6, dtype=dtype), randn(7, 4, 64, seed=7, dtype=dtype)
    out = vlmops.varlen_attention(q, k, v, cu_of([1]), cu_of([7]))
    ref, _ = varlen_reference(q.double(), k.double(), v.double(), cu_of([1]), cu_of([7]))
    assert (out.double() - ref).abs().max().item() < (1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("operand", ["q", "k", "v", "grad_out"])
@pytest.mark.parametrize("D", [1, 64])
def test_gated_one_row_or_key_with_a_stride_smaller_than_the_row(operand, D):
    # Lq = 1 (decode) for q/grad_out, Lk = 1 for k/v; B = 1 and Hk = 1 with arbitrary strides too.
    Lq, Lk = (1, 6) if operand in ("q", "grad_out") else (4, 1)
    tensors = dict(
        q=randn(1, Lq, 2, D, seed=1),
        k=randn(1, Lk, 1, D, seed=2),
        v=randn(1, Lk, 1, D, seed=3),
        grad_out=randn(1, Lq, 2, D, seed=4),
    )
    t = tensors[operand]
    strides = list(t.stride())
    strides[0], strides[1] = 3, 1  # B = 1 and the size-1 token dim, both smaller than a row
    if t.shape[2] == 1:
        strides[2] = 2
    tensors[operand] = with_strides(t, strides)
    start = torch.zeros(1, Lq, dtype=torch.int32)
    end = torch.full((1, Lq), Lk, dtype=torch.int32)
    end[0, 0] = max(Lk - 1, 1)
    check_gated(
        tensors["q"],
        tensors["k"],
        tensors["v"],
        start,
        end,
        torch.tensor([0.3], dtype=torch.float64),
        tensors["grad_out"],
    )


def untouched(numel, dtype):
    """A 1-D tensor of numel elements in a fresh allocation whose pages stay unmapped until written."""
    try:
        return torch.empty(numel * dtype.itemsize, dtype=torch.uint8).view(dtype)
    except RuntimeError as error:  # pragma: no cover - without that much address space
        pytest.skip(f"cannot reserve {numel * dtype.itemsize} bytes: {error}")


def test_varlen_token_stride_past_2_31_is_copied_not_truncated():
    # k's token stride 2^31 + 64 (float32) does not fit a BLAS int: the kernel copies k once instead of
    # handing BLAS a truncated leading dimension.
    D, stride = 64, 2**31 + 64
    k_values, q, v = randn(2, 1, D, seed=1, dtype=torch.float32), randn(3, 1, D, seed=2), randn(2, 1, D, seed=3)
    k = untouched(stride + D, torch.float32).as_strided((2, 1, D), (stride, D, 1))
    k.copy_(k_values)
    q, v = q.float(), v.float()
    cu_q, cu_k = cu_of([3]), cu_of([2])
    out, lse = vlmops.varlen_attention(q, k, v, cu_q, cu_k, return_lse=True)
    ref, _ = varlen_reference(q.double(), k_values.double(), v.double(), cu_q, cu_k)
    assert (out.double() - ref).abs().max().item() < 1e-5
    grads = varlen_backward_op(torch.ones_like(out), q, k, v, out, lse, cu_q, cu_k)
    ref_grads = varlen_reference_backward(
        torch.ones(3, 1, D, dtype=torch.float64), q.double(), k_values.double(), v.double(), ref, None, cu_q, cu_k
    )
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max().item() < 1e-4


def test_gated_key_stride_past_2_31_is_copied_not_truncated():
    D, stride = 32, 2**31 + 32
    v_values, q, k = randn(1, 2, 1, D, seed=1), randn(1, 2, 2, D, seed=2), randn(1, 2, 1, D, seed=3)
    v = untouched(stride + D, torch.float32).as_strided((1, 2, 1, D), (2 * stride, stride, D, 1))
    v.copy_(v_values)
    q, k = q.float(), k.float()
    start, end = torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([[2, 2]], dtype=torch.int32)
    out = vlmops.gated_cross_attention(q, k, v, start, end)
    ref, _ = gated_reference(q.double(), k.double(), v_values, start, end)
    assert (out.double() - ref).abs().max().item() < 1e-5


def test_head_offsets_past_2_31_read_the_right_heads():
    # Head stride 2^30 with 3 heads: the last head starts 2^31 elements in.
    D, stride = 16, 2**30
    values = randn(2, 3, D, seed=4, dtype=torch.float32)
    q = untouched(2 * stride + 2 * D + D, torch.float32).as_strided((2, 3, D), (D, stride, 1))
    q.copy_(values)
    k, v = randn(4, 3, D, seed=5, dtype=torch.float32), randn(4, 3, D, seed=6, dtype=torch.float32)
    out = vlmops.varlen_attention(q, k, v, cu_of([2]), cu_of([4]))
    ref, _ = varlen_reference(values.double(), k.double(), v.double(), cu_of([2]), cu_of([4]))
    assert (out.double() - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("op", ["varlen", "gated"])
def test_expanded_operands_and_gradients(op):
    # Stride-0 dims: q broadcast over tokens, k over heads, v entirely, grad_out from out.sum().
    if op == "varlen":
        q = randn(1, 2, 24, seed=1).expand(6, 2, 24)
        k = randn(5, 1, 24, seed=2).expand(5, 2, 24)
        v = randn(1, 1, 1, seed=3).expand(5, 2, 24)
        check_varlen(q, k, v, cu_of([2, 4]), cu_of([3, 2]), torch.ones(()).double().expand(6, 2, 24))
    else:
        q = randn(2, 1, 4, 24, seed=1).expand(2, 5, 4, 24)
        k = randn(2, 7, 1, 24, seed=2).expand(2, 7, 2, 24)
        v = randn(1, 7, 2, 24, seed=3).expand(2, 7, 2, 24)
        start, end = torch.tensor([[0, 0, 2, 2, 5]] * 2, dtype=torch.int32), torch.full((2, 5), 7, dtype=torch.int32)
        check_gated(q, k, v, start, end, None, torch.ones(()).double().expand(2, 5, 4, 24))


@pytest.mark.parametrize("op", ["varlen", "gated"])
def test_head_dim_strided_or_of_size_one_with_any_stride(op):
    # D strided (every other element) is copied; D = 1 reads whatever its stride.
    if op == "varlen":
        check_varlen(
            randn(5, 2, 48, seed=1)[..., ::2],
            randn(5, 2, 24, seed=2),
            randn(5, 2, 48, seed=3)[..., 1::2],
            cu_of([5]),
            cu_of([5]),
            randn(5, 2, 48, seed=4)[..., ::2],
        )
        check_varlen(
            with_strides(randn(5, 2, 1, seed=5), (2, 1, 3)),
            with_strides(randn(5, 2, 1, seed=6), (2, 1, 7)),
            with_strides(randn(5, 2, 1, seed=7), (1, 5, 0)),
            cu_of([2, 3]),
            cu_of([4, 1]),
            with_strides(randn(5, 2, 1, seed=8), (2, 1, 9)),
        )
    else:
        start, end = torch.tensor([[0, 1, 0]], dtype=torch.int32), torch.tensor([[4, 4, 0]], dtype=torch.int32)
        check_gated(
            randn(1, 3, 2, 48, seed=1)[..., ::2],
            randn(1, 4, 1, 24, seed=2),
            randn(1, 4, 1, 48, seed=3)[..., ::2],
            start,
            end,
            None,
            randn(1, 3, 2, 48, seed=4)[..., 1::2],
        )
        check_gated(
            with_strides(randn(1, 3, 2, 1, seed=5), (1, 2, 1, 5)),
            with_strides(randn(1, 4, 1, 1), (0, 1, 1, 3)),
            randn(1, 4, 1, 1, seed=6),
            start,
            end,
            torch.tensor(0.5, dtype=torch.float64),
            with_strides(randn(1, 3, 2, 1, seed=7), (6, 2, 1, 11)),
        )


# Hypothesis over layouts: for each operand a dim order (the last dim need not be innermost), padding
# between rows, arbitrary strides for size-1 dims, and expanded (stride-0) dims.


@st.composite
def layouts(draw, values):
    """`values` laid out as drawn: the result compares equal to values (up to broadcast along expanded dims)."""
    ndim = values.dim()
    expanded = [d for d in range(ndim) if values.shape[d] > 1 and draw(st.booleans()) and draw(st.booleans())]
    for d in expanded:
        values = values.narrow(d, 0, 1).expand(values.shape)
    order = draw(st.permutations(range(ndim)))
    strides = [0] * ndim
    running = 1
    for d in reversed(order):  # the last of `order` is the innermost
        size = values.shape[d]
        if d in expanded:
            strides[d] = 0
        elif size == 1:
            strides[d] = draw(st.integers(0, 3 * values.shape[-1] + 5))
        else:
            strides[d] = running
            running *= size + draw(st.sampled_from([0, 0, 1, 3]))
    return with_strides(values, strides, offset=draw(st.integers(0, 3)))


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    q_lengths=st.lists(st.sampled_from([0, 1, 1, 2, 5]), min_size=1, max_size=3),
    k_lengths=st.lists(st.sampled_from([0, 1, 1, 3]), min_size=3, max_size=3),
    heads=st.sampled_from([(1, 1), (2, 1), (3, 3), (4, 2)]),
    D=st.sampled_from([1, 2, 7, 16, 33]),
    scale=st.sampled_from([None, 0.7]),
)
def test_varlen_any_layout_matches_reference(data, q_lengths, k_lengths, heads, D, scale):
    k_lengths = k_lengths[: len(q_lengths)]
    (H, Hk), Nq, Nk = heads, sum(q_lengths), sum(k_lengths)
    q = data.draw(layouts(randn(Nq, H, D, seed=1)))
    k = data.draw(layouts(randn(Nk, Hk, D, seed=2)))
    v = data.draw(layouts(randn(Nk, Hk, D, seed=3)))
    grad_out = data.draw(layouts(randn(Nq, H, D, seed=4)))
    check_varlen(q, k, v, cu_of(q_lengths), cu_of(k_lengths), grad_out, scale)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    B=st.sampled_from([1, 2]),
    Lq=st.sampled_from([1, 3]),
    Lk=st.sampled_from([1, 4]),
    heads=st.sampled_from([(1, 1), (2, 1), (4, 2)]),
    D=st.sampled_from([1, 3, 16, 33]),
    gated=st.booleans(),
    seed=st.integers(0, 100),
)
def test_gated_any_layout_matches_reference(data, B, Lq, Lk, heads, D, gated, seed):
    H, Hk = heads
    q = data.draw(layouts(randn(B, Lq, H, D, seed=1)))
    k = data.draw(layouts(randn(B, Lk, Hk, D, seed=2)))
    v = data.draw(layouts(randn(B, Lk, Hk, D, seed=3)))
    grad_out = data.draw(layouts(randn(B, Lq, H, D, seed=4)))
    gen = torch.Generator().manual_seed(seed)
    a, c = torch.randint(0, Lk + 1, (2, B, Lq), generator=gen)
    start, end = torch.minimum(a, c).int(), torch.maximum(a, c).int()
    gate = data.draw(layouts(randn(1, seed=5))) if gated else None
    check_gated(q, k, v, start, end, gate, grad_out)


@pytest.mark.parametrize("op", ["varlen", "gated"])
def test_opcheck_on_adversarial_layouts(op):
    if op == "varlen":
        q = one_token_small_stride(randn(1, 2, 8, seed=1))
        k, v = randn(3, 1, 8, seed=2).expand(3, 2, 8), randn(3, 2, 8, seed=3)
        cu_q, cu_k = cu_of([1]), cu_of([3])
        torch.library.opcheck(varlen_op.default, (q.requires_grad_(), k, v, cu_q, cu_k, None, None, None))
        out, lse = varlen_op(q, k, v, cu_q, cu_k)
        torch.library.opcheck(
            varlen_backward_op.default,
            (
                torch.ones(()).double().expand(1, 2, 8),
                q.detach(),
                k,
                v,
                out.detach(),
                lse,
                cu_q,
                cu_k,
                None,
                None,
                None,
            ),
        )
    else:
        q = with_strides(randn(1, 1, 2, 8, seed=1), (1, 1, 8, 1))
        k, v = randn(1, 3, 1, 8, seed=2).expand(1, 3, 2, 8), randn(1, 3, 2, 8, seed=3)
        start, end = torch.zeros(1, 1, dtype=torch.int32), torch.full((1, 1), 3, dtype=torch.int32)
        gate = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
        torch.library.opcheck(gated_op.default, (q.requires_grad_(), k, v, start, end, gate, None))
        out, lse = gated_op(q, k, v, start, end, gate, None)
        torch.library.opcheck(
            gated_backward_op.default,
            (
                torch.ones(()).double().expand(1, 1, 2, 8),
                q.detach(),
                k,
                v,
                out.detach(),
                lse,
                start,
                end,
                gate.detach(),
                None,
            ),
        )


# ---- the Triton launchers on the same layouts (interpreter) ----------------------------------------------


def test_triton_launchers_one_token_small_strides_and_size_one_head_dim():
    from vlmops.triton import gated_cross_attention as triton_gated
    from vlmops.triton import varlen_attention as triton_varlen

    for D in (1, 64):
        q = one_token_small_stride(randn(1, 2, D, seed=1, dtype=torch.float32))
        k = one_token_small_stride(randn(1, 1, D, seed=2, dtype=torch.float32))
        v = one_token_small_stride(randn(1, 1, D, seed=3, dtype=torch.float32))
        cu = cu_of([1])
        out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=16, block_n=16)
        ref, ref_lse = varlen_reference(q.double(), k.double(), v.double(), cu, cu)
        assert (out.double() - ref).abs().max().item() < 1e-5
        grads = triton_varlen.varlen_attention_backward(
            one_token_small_stride(torch.ones(1, 2, D)), q, k, v, out, lse, cu, cu, block_m=16, block_n=16
        )
        ref_grads = varlen_reference_backward(
            torch.ones(1, 2, D, dtype=torch.float64), q.double(), k.double(), v.double(), ref, ref_lse, cu, cu
        )
        for g, r in zip(grads, ref_grads):
            assert (g.double() - r).abs().max().item() < 1e-4
        qg = with_strides(randn(1, 1, 2, D, seed=4, dtype=torch.float32), (1, 1, D, 1))
        kg = with_strides(randn(1, 1, 1, D, seed=5, dtype=torch.float32), (2, 1, 1, 1))
        start, end = torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, 1, dtype=torch.int32)
        out, _ = triton_gated.gated_cross_attention(qg, kg, kg, start, end, torch.tensor(0.4), block_m=16, block_n=16)
        ref, _ = gated_reference(qg.double(), kg.double(), kg.double(), start, end, torch.tensor(0.4).double())
        assert (out.double() - ref).abs().max().item() < 1e-5


_TRITON_HEAD_OFFSETS = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from vlmops.reference import gated_cross_attention as gated_reference
    from vlmops.reference import varlen_attention as varlen_reference
    from vlmops.triton import gated_cross_attention as triton_gated
    from vlmops.triton import varlen_attention as triton_varlen

    D, stride = 32, 2**30
    values = torch.randn(5, 3, D).half()
    # Head stride 2^30 with 3 heads: the last head starts 2^31 elements in.
    q = torch.empty(2 * stride + 5 * D, dtype=torch.float16).as_strided((5, 3, D), (D, stride, 1)).copy_(values)
    k, v = torch.randn(5, 3, D).half(), torch.randn(5, 3, D).half()
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    out, _ = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=16, block_n=16)
    ref, _ = varlen_reference(values.double(), k.double(), v.double(), cu, cu)
    print("varlen", (out.double() - ref).abs().max().item())
    qg = q.unsqueeze(0)
    start, end = torch.zeros(1, 5, dtype=torch.int32), torch.full((1, 5), 5, dtype=torch.int32)
    out, _ = triton_gated.gated_cross_attention(qg, k[None], v[None], start, end, block_m=16, block_n=16)
    ref, _ = gated_reference(values[None].double(), k[None].double(), v[None].double(), start, end)
    print("gated", (out.double() - ref).abs().max().item())
""")


def test_triton_head_offsets_past_2_31_in_a_subprocess():
    # An int32 head offset wraps to a negative address (a segfault under the interpreter): run apart.
    result = subprocess.run(
        [sys.executable, "-c", _TRITON_HEAD_OFFSETS], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-2000:]
    errors = dict(line.split() for line in result.stdout.strip().splitlines())
    assert set(errors) == {"varlen", "gated"}
    assert all(float(e) < 5e-3 for e in errors.values()), errors


# ---- values: NaN/Inf, empty segments and rows, bad index arguments -----------------------------------------


def assert_equal_or_nan(got, expected, tol):
    """got equals expected (infinities included) or is NaN: a softmax that is undefined (e.g. over
    scores that are all -inf) may come out NaN, but never as a wrong number."""
    same = torch.isclose(got.double(), expected.double(), rtol=tol, atol=tol, equal_nan=True)
    assert bool((same | torch.isnan(got)).all()), (got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("operand", ["q", "k", "v"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_varlen_nan_and_inf_stay_in_their_segment(dtype, operand, value):
    cu = cu_of([3, 4, 2])
    clean = [randn(9, 2, 16, seed=i, dtype=dtype) for i in (1, 2, 3)]
    bad = [t.clone() for t in clean]
    bad["qkv".index(operand)][4, 0, 3] = value  # token 4: segment 1
    out, lse = vlmops.varlen_attention(*bad, cu, return_lse=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    clean_out, clean_lse = varlen_reference(*clean, cu)
    other = torch.tensor([0, 1, 2, 7, 8])  # the tokens of segments 0 and 2
    assert_close(out[other], clean_out[other], tol)
    assert_close(lse[:, other], clean_lse[:, other], tol)
    ref_out, ref_lse = varlen_reference(*bad, cu)
    assert_equal_or_nan(out[3:7], ref_out[3:7], tol)
    assert_equal_or_nan(lse[:, 3:7], ref_lse[:, 3:7], tol)
    grads = varlen_backward_op(torch.full_like(out, float("nan")), *bad, out, lse, cu, cu)
    assert all(g.shape == t.shape for g, t in zip(grads, bad))


@pytest.mark.parametrize(
    "operand,index,rows",
    [("q", (0, 1, 0, 2), [1]), ("k", (0, 1, 0, 3), [0, 1]), ("v", (0, 1, 0, 3), [0, 1]), ("gate", (0,), [0, 1, 2])],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_gated_nan_and_inf_stay_in_the_rows_that_see_them(operand, index, rows, value):
    clean = dict(
        q=randn(1, 4, 2, 8, seed=1),
        k=randn(1, 5, 1, 8, seed=2),
        v=randn(1, 5, 1, 8, seed=3),
        gate=torch.tensor([0.5], dtype=torch.float64),
    )
    bad = {name: t.clone() for name, t in clean.items()}
    bad[operand][index] = value
    # Rows 0 and 1 see keys [0, 2), row 2 keys [3, 5), row 3 none.
    start, end = torch.tensor([[0, 0, 3, 0]], dtype=torch.int32), torch.tensor([[2, 2, 5, 0]], dtype=torch.int32)
    out, lse = vlmops.gated_cross_attention(bad["q"], bad["k"], bad["v"], start, end, bad["gate"], return_lse=True)
    clean_out, clean_lse = gated_reference(clean["q"], clean["k"], clean["v"], start, end, clean["gate"])
    other = [r for r in range(3) if r not in rows]
    assert_close(out[:, other], clean_out[:, other])
    assert_close(lse[..., other], clean_lse[..., other])
    ref_out, ref_lse = gated_reference(bad["q"], bad["k"], bad["v"], start, end, bad["gate"])
    assert_equal_or_nan(out[:, rows], ref_out[:, rows], 1e-10)
    assert_equal_or_nan(lse[..., rows], ref_lse[..., rows], 1e-10)
    assert torch.all(out[0, 3] == 0) and torch.all(torch.isneginf(lse[0, :, 3]))  # the empty row, never NaN


def test_empty_segments_rows_and_operands():
    # Every segment empty; queries without keys; keys without queries; a zero-token batch.
    for q_lengths, k_lengths in (([0, 0, 0], [0, 0, 0]), ([3, 2], [0, 0]), ([0, 4], [5, 0]), ([2], [0])):
        q, k, v = (
            randn(sum(q_lengths), 2, 8, seed=1),
            randn(sum(k_lengths), 1, 8, seed=2),
            randn(sum(k_lengths), 1, 8, seed=3),
        )
        check_varlen(q, k, v, cu_of(q_lengths), cu_of(k_lengths), randn(sum(q_lengths), 2, 8, seed=4))
    out, lse = varlen_op(randn(0, 2, 8), randn(0, 1, 8), randn(0, 1, 8), cu_of([]), cu_of([]))
    assert out.shape == (0, 2, 8) and lse.shape == (2, 0)
    for B, Lq, Lk in ((0, 3, 4), (2, 0, 4), (2, 3, 0)):
        start, end = torch.zeros(B, Lq, dtype=torch.int32), torch.zeros(B, Lq, dtype=torch.int32)
        check_gated(
            randn(B, Lq, 2, 8),
            randn(B, Lk, 2, 8),
            randn(B, Lk, 2, 8),
            start,
            end,
            torch.tensor([1.0], dtype=torch.float64),
            randn(B, Lq, 2, 8),
        )


BAD_INDEX_VALUES = [
    # (op, argument, arguments, message)
    ("varlen", "cu_seqlens_q", dict(cu_q=[0, 4, 2, 9]), r"cu_seqlens_q must be non-decreasing"),
    ("varlen", "cu_seqlens_q", dict(cu_q=[0, 4, 9, 10]), r"cu_seqlens_q\[-1\] must equal q's token count 9"),
    ("varlen", "cu_seqlens_k", dict(cu_k=[2, 4, 9, 9]), r"cu_seqlens_k\[0\] must be 0, got 2"),
    ("varlen", "cu_seqlens_k", dict(cu_k=[0, 4, 9, -1]), r"cu_seqlens_k must be non-decreasing"),
    ("varlen", "cu_seqlens_k", dict(cu_k=[0, 2**31 - 1, 9, 9]), r"cu_seqlens_k must be non-decreasing"),
    ("varlen", "max_seqlen_k", dict(max_seqlen_k=4), r"max_seqlen_k = 4 is smaller than segment 1 of cu_seqlens_k"),
    ("gated", "kv_start", dict(start=-1), r"row 1 of batch 0 has key range \[kv_start, kv_end\) = \[-1, 5\)"),
    ("gated", "kv_end", dict(end=6), r"row 1 of batch 0 has key range \[kv_start, kv_end\) = \[0, 6\)"),
    ("gated", "kv_start", dict(start=4, end=2), r"= \[4, 2\), which must satisfy 0 <= kv_start <= kv_end"),
    ("gated", "kv_end", dict(end=-(2**31)), r"= \[0, -2147483648\)"),
]


@pytest.mark.parametrize("op,argument,bad,message", BAD_INDEX_VALUES)
@pytest.mark.parametrize("entry", ["wrapper", "forward op", "backward op"])
def test_bad_index_values_raise_value_errors_on_cpu(op, argument, bad, message, entry):
    # CPU index arguments are read before any kernel indexes with them: forward and backward ops
    # (the C++ contract) and the wrapper raise the same ValueError.
    if op == "varlen":
        q, k, v = randn(9, 2, 8), randn(9, 1, 8), randn(9, 1, 8)
        cu_q = torch.tensor(bad.get("cu_q", [0, 4, 9, 9]), dtype=torch.int32)
        cu_k = torch.tensor(bad.get("cu_k", [0, 4, 9, 9]), dtype=torch.int32)
        max_k = bad.get("max_seqlen_k")
        name = "varlen_attention_backward" if entry == "backward op" else "varlen_attention"
        calls = {
            "wrapper": lambda: vlmops.varlen_attention(q, k, v, cu_q, cu_k, max_seqlen_k=max_k),
            "forward op": lambda: varlen_op(q, k, v, cu_q, cu_k, None, max_k, None),
            "backward op": lambda: varlen_backward_op(
                q, q, k, v, q, torch.zeros(2, 9, dtype=torch.float64), cu_q, cu_k, None, max_k, None
            ),
        }
    else:
        q, k, v = randn(1, 3, 2, 8), randn(1, 5, 1, 8), randn(1, 5, 1, 8)
        start, end = torch.zeros(1, 3, dtype=torch.int32), torch.full((1, 3), 5, dtype=torch.int32)
        start[0, 1], end[0, 1] = bad.get("start", 0), bad.get("end", 5)
        name = "gated_cross_attention_backward" if entry == "backward op" else "gated_cross_attention"
        calls = {
            "wrapper": lambda: vlmops.gated_cross_attention(q, k, v, start, end),
            "forward op": lambda: gated_op(q, k, v, start, end, None, None),
            "backward op": lambda: gated_backward_op(
                q, q, k, v, q, torch.zeros(1, 2, 3, dtype=torch.float64), start, end, None, None
            ),
        }
    with pytest.raises(ValueError, match=rf"^vlmops\.{name}: .*{message}") as error:
        calls[entry]()
    assert argument in str(error.value)


# ---- double backward (class 2) ------------------------------------------------------------------------


@pytest.mark.parametrize("wrt", [0, 1, 2])
def test_varlen_double_backward_raises(wrt):
    tensors = [t.requires_grad_() for t in (randn(5, 2, 8, seed=1), randn(5, 1, 8, seed=2), randn(5, 1, 8, seed=3))]
    out = vlmops.varlen_attention(*tensors, cu_of([2, 3]))
    (grad,) = torch.autograd.grad((out * randn(5, 2, 8, seed=4)).sum(), tensors[wrt], create_graph=True)
    assert grad.requires_grad  # not None, not a constant
    with pytest.raises(
        RuntimeError,
        match="vlmops.varlen_attention_backward cannot be differentiated: double "
        "backward of varlen_attention is not implemented",
    ):
        grad.sum().backward()


@pytest.mark.parametrize("wrt", ["q", "k", "v", "gate"])
def test_gated_double_backward_raises(wrt):
    leaves = dict(
        q=randn(1, 3, 2, 8, seed=1),
        k=randn(1, 4, 1, 8, seed=2),
        v=randn(1, 4, 1, 8, seed=3),
        gate=torch.tensor([0.3], dtype=torch.float64),
    )
    for t in leaves.values():
        t.requires_grad_()
    start, end = torch.tensor([[0, 1, 0]], dtype=torch.int32), torch.tensor([[4, 4, 0]], dtype=torch.int32)
    out = vlmops.gated_cross_attention(leaves["q"], leaves["k"], leaves["v"], start, end, leaves["gate"])
    (grad,) = torch.autograd.grad(out.sum(), leaves[wrt], create_graph=True)
    assert grad.requires_grad
    with pytest.raises(
        RuntimeError,
        match="vlmops.gated_cross_attention_backward cannot be differentiated: double "
        "backward of gated_cross_attention is not implemented",
    ):
        torch.autograd.grad(grad.sum(), list(leaves.values()), allow_unused=True)


# ---- errors name the argument (class 7) ----------------------------------------------------------------


def varlen_args(**changes):
    args = dict(
        grad_out=randn(5, 4, 8),
        q=randn(5, 4, 8),
        k=randn(6, 2, 8),
        v=randn(6, 2, 8),
        out=randn(5, 4, 8),
        lse=torch.zeros(4, 5, dtype=torch.float64),
        cu_seqlens_q=cu_of([2, 3]),
        cu_seqlens_k=cu_of([4, 2]),
        max_seqlen_q=None,
        max_seqlen_k=None,
        softmax_scale=None,
    )
    args.update(changes)
    return args


def gated_args(**changes):
    args = dict(
        grad_out=randn(2, 3, 4, 8),
        q=randn(2, 3, 4, 8),
        k=randn(2, 5, 2, 8),
        v=randn(2, 5, 2, 8),
        out=randn(2, 3, 4, 8),
        lse=torch.zeros(2, 4, 3, dtype=torch.float64),
        kv_start=torch.zeros(2, 3, dtype=torch.int32),
        kv_end=torch.full((2, 3), 5, dtype=torch.int32),
        gate=None,
        softmax_scale=None,
    )
    args.update(changes)
    return args


CONTRACT_ERRORS = [
    # (op, changes, the argument the message names)
    ("varlen", dict(q=randn(5, 4)), "q"),
    ("varlen", dict(q=randn(5, 4, 8).float()), "k"),  # k's dtype no longer matches q's
    ("varlen", dict(k=randn(6, 2, 8, 1)), "k"),
    ("varlen", dict(v=randn(6, 2, 7)), "v"),
    ("varlen", dict(v=randn(6, 2, 8).half()), "v"),
    ("varlen", dict(q=randn(5, 4, 300), grad_out=randn(5, 4, 300), out=randn(5, 4, 300)), "q"),
    ("varlen", dict(k=randn(6, 3, 8), v=randn(6, 3, 8)), "k"),
    # Views of a tiny storage with sizes past the limits: 2^31 tokens, H * D = 2^31.
    ("varlen", dict(q=torch.empty(8, dtype=torch.float64).as_strided((2**31, 4, 8), (0, 0, 1))), "q"),
    (
        "varlen",
        dict(
            q=torch.empty(256, dtype=torch.float64).as_strided((1, 2**23, 256), (0, 0, 1)),
            k=randn(6, 2, 256),
            v=randn(6, 2, 256),
        ),
        "q",
    ),
    ("varlen", dict(cu_seqlens_q=cu_of([2, 3]).long()), "cu_seqlens_q"),
    ("varlen", dict(cu_seqlens_k=cu_of([4, 2])[None]), "cu_seqlens_k"),
    ("varlen", dict(cu_seqlens_k=cu_of([6])), "cu_seqlens_k"),
    ("varlen", dict(max_seqlen_q=-3), "max_seqlen_q"),
    ("varlen", dict(softmax_scale=float("nan")), "softmax_scale"),
    ("varlen", dict(grad_out=randn(4, 4, 8)), "grad_out"),
    ("varlen", dict(out=randn(5, 4, 8).float()), "out"),
    ("varlen", dict(lse=torch.zeros(5, 4, dtype=torch.float64)), "lse"),
    ("varlen", dict(lse=torch.zeros(4, 5)), "lse"),
    ("gated", dict(q=randn(2, 3, 4)), "q"),
    ("gated", dict(k=randn(3, 5, 2, 8), v=randn(3, 5, 2, 8)), "k"),
    ("gated", dict(k=randn(2, 5, 3, 8), v=randn(2, 5, 3, 8)), "k"),
    ("gated", dict(v=randn(2, 5, 2, 8).float()), "v"),
    ("gated", dict(q=randn(2, 3, 4, 0), grad_out=randn(2, 3, 4, 0), out=randn(2, 3, 4, 0)), "q"),
    ("gated", dict(q=torch.empty(8, dtype=torch.float64).as_strided((2, 2**31, 4, 8), (0, 0, 0, 1))), "q"),
    ("gated", dict(kv_start=torch.zeros(2, 4, dtype=torch.int32)), "kv_start"),
    ("gated", dict(kv_end=torch.full((2, 3), 5)), "kv_end"),
    ("gated", dict(gate=torch.zeros(1, 1, dtype=torch.float64)), "gate"),
    ("gated", dict(gate=torch.zeros(1, dtype=torch.int64)), "gate"),
    ("gated", dict(softmax_scale=float("-inf")), "softmax_scale"),
    ("gated", dict(grad_out=randn(2, 3, 4, 7)), "grad_out"),
    ("gated", dict(out=randn(2, 3, 4, 8).half()), "out"),
    ("gated", dict(lse=torch.zeros(2, 3, 4, dtype=torch.float64)), "lse"),
]


BACKWARD_ONLY = ("grad_out", "out", "lse")


@pytest.mark.parametrize(
    "op,changes,argument,entry",
    [
        (*case, entry)
        for case in CONTRACT_ERRORS
        for entry in ("forward", "backward")
        if entry == "backward" or case[2] not in BACKWARD_ONLY
    ],
)
def test_contract_errors_name_the_argument(op, changes, argument, entry):
    args = varlen_args(**changes) if op == "varlen" else gated_args(**changes)
    name = {"varlen": "varlen_attention", "gated": "gated_cross_attention"}[op]
    if entry == "forward":
        forward = {key: value for key, value in args.items() if key not in BACKWARD_ONLY}
        call = varlen_op if op == "varlen" else gated_op
        with pytest.raises(ValueError, match=rf"^vlmops\.{name}: {argument}\b"):
            call(*forward.values())
    else:
        with pytest.raises(ValueError, match=rf"^vlmops\.{name}_backward: {argument}\b"):
            (varlen_backward_op if op == "varlen" else gated_backward_op)(*args.values())


def test_wrappers_raise_the_contract_errors_and_type_errors():
    with pytest.raises(ValueError, match=r"^vlmops\.varlen_attention: k's heads \(3\) must"):
        vlmops.varlen_attention(randn(5, 4, 8), randn(5, 3, 8), randn(5, 3, 8), cu_of([5]))
    with pytest.raises(TypeError, match=r"^vlmops\.varlen_attention: cu_seqlens_q must be Tensor, got list"):
        vlmops.varlen_attention(randn(5, 4, 8), randn(5, 2, 8), randn(5, 2, 8), [0, 5])
    with pytest.raises(ValueError, match=r"^vlmops\.gated_cross_attention: gate must be a one-element tensor"):
        vlmops.gated_cross_attention(
            *list(gated_args(gate=torch.zeros(2)).values())[1:4],
            torch.zeros(2, 3, dtype=torch.int32),
            torch.zeros(2, 3, dtype=torch.int32),
            torch.zeros(2),
        )
    with pytest.raises(TypeError, match=r"^vlmops\.gated_cross_attention: softmax_scale must be Optional\[float\]"):
        vlmops.gated_cross_attention(
            randn(1, 1, 1, 8),
            randn(1, 1, 1, 8),
            randn(1, 1, 1, 8),
            torch.zeros(1, 1, dtype=torch.int32),
            torch.ones(1, 1, dtype=torch.int32),
            None,
            "0.5",
        )


_UNBUILT = textwrap.dedent("""
    import importlib.abc
    import sys
    import warnings

    class HideNativeLibrary(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "vlmops._C":
                raise ImportError("hidden by the test")

    sys.meta_path.insert(0, HideNativeLibrary())
    warnings.simplefilter("ignore")
    import torch
    import vlmops

    assert not vlmops.build_info()["native"]
    q, k, v = torch.randn(5, 4, 8), torch.randn(6, 2, 8), torch.randn(6, 2, 8)
    cu_q, cu_k = torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor([0, 4, 6], dtype=torch.int32)
    out, lse = vlmops.varlen_attention(q, k, v, cu_q, cu_k, softmax_scale=0.5, return_lse=True)
    assert out.shape == (5, 4, 8) and lse.shape == (4, 5)
    q4, k4 = torch.randn(2, 3, 4, 8), torch.randn(2, 5, 2, 8)
    start, end = torch.zeros(2, 3, dtype=torch.int32), torch.full((2, 3), 5, dtype=torch.int32)
    out, lse = vlmops.gated_cross_attention(q4, k4, k4, start, end, torch.tensor([0.5]), return_lse=True)
    assert out.shape == (2, 3, 4, 8) and lse.shape == (2, 4, 3)
    print("ok")
""")


def test_unbuilt_checkout_runs_the_references_with_the_op_signatures():
    result = subprocess.run([sys.executable, "-c", _UNBUILT], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
