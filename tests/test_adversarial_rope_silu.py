"""Adversarial inputs for RoPE (vlmops::rope, rope_) and SwiGLU gating (vlmops::silu_mul,
silu_mul_backward): aliasing of in-place q and k, odd strides (size-1 dims with small strides,
stride 0, overlapping views), offsets past 2^31 elements in views of a large untouched allocation,
positions and axis values out of range, NaN/Inf, double backward, errors naming the argument, fakes,
the reference fallback, and hypothesis over strides and sizes. The Triton launchers run under the
interpreter on CPU tensors; the CUDA tests go through the public ops (VLMOPS_CUDA_BACKEND=triton for
the Triton variant of rope)."""

import inspect
import time
import warnings

import pytest
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import vlmops
from vlmops import _native
from vlmops.ops import registry
from vlmops.reference.rope import rope as reference_rope
from vlmops.reference.silu_mul import silu_mul as reference_silu_mul
from vlmops.reference.silu_mul import silu_mul_backward as reference_silu_mul_backward

FAMILY_OPS = ("rope", "rope_", "silu_mul", "silu_mul_backward")


def tables(P, A, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, A, (P,), generator=g).to(device), vlmops.rope_inv_freq(2 * P, 100.0).to(device)


def positions_for(N, A, seed=0, device="cpu"):
    return torch.randint(-300, 3000, (N, A), generator=torch.Generator().manual_seed(seed)).to(device)


def randn(*shape, seed=0, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(device)


def expected_rope(q, k, positions, axis, inv_freq, fp32_math=True, inverse=False):
    """The reference on contiguous copies of [N, H, D] q and k."""
    q_ref, k_ref = reference_rope(
        q.contiguous()[None], k.contiguous()[None], positions[None], axis, inv_freq, fp32_math, inverse
    )
    return q_ref[0], k_ref[0]


def addresses(t: torch.Tensor, storage_elements: int) -> torch.Tensor:
    """The storage index of every element of t (same dtype as its storage's view)."""
    return torch.arange(storage_elements).as_strided(t.shape, t.stride(), t.storage_offset()).reshape(-1)


def share_memory(a: torch.Tensor, b: torch.Tensor, storage_elements: int) -> bool:
    return bool(torch.isin(addresses(a, storage_elements), addresses(b, storage_elements)).any())


def overlaps_itself(t: torch.Tensor, storage_elements: int) -> bool:
    where = addresses(t, storage_elements)
    return where.unique().numel() != where.numel()


@pytest.fixture(scope="module")
def big_half():
    """2^31 + 2^19 float16 elements of untouched memory (4 GiB of address space; only the pages a test
    writes become resident)."""
    try:
        return torch.empty(2**32 + 2**20, dtype=torch.uint8).view(torch.float16)
    except RuntimeError:
        pytest.skip("no 4 GiB of address space for a view past 2^31 elements")


# --- class 4: aliasing of rope_'s q and k -------------------------------------------------------------


@pytest.mark.parametrize("contiguous", [True, False])
def test_inplace_same_tensor_as_q_and_k_raises(contiguous):
    """The same tensor as q and k would be rotated twice; non-contiguous it used to be accepted."""
    N, H, D = 7, 2, 8
    x = randn(N, H, D) if contiguous else randn(N, H, 2 * D)[..., ::2]
    before = x.clone()
    axis, inv_freq = tables(4, 2)
    with pytest.raises(ValueError, match="vlmops.rope_: q and k may share memory"):
        vlmops.apply_rope(x, x, positions_for(N, 2), axis, inv_freq, True, inplace=True)
    assert torch.equal(x, before)  # rejected before anything was written
    with pytest.raises(ValueError, match="q and k may share memory"):
        torch.ops.vlmops.rope_(x[None], x.unsqueeze(0), positions_for(N, 2)[None], axis, inv_freq, True)


@pytest.mark.parametrize(
    "views",
    [
        pytest.param(lambda buf: (buf[..., :8], buf[..., 1:9]), id="shifted_by_one_element"),
        pytest.param(lambda buf: (buf[:, :2, :8], buf[:, 1:3, :8]), id="shared_head"),
        pytest.param(lambda buf: (buf[:-1, :, :8], buf[1:, :, :8]), id="shifted_by_one_token"),
        pytest.param(lambda buf: (buf[:, :, 0:8], buf[:, :, 7:15]), id="one_shared_column"),
    ],
)
def test_inplace_overlapping_views_raise(views):
    buf = randn(6, 3, 16)
    q, k = views(buf)
    N = q.shape[0]
    axis, inv_freq = tables(4, 2)
    with pytest.raises(ValueError, match="q and k may share memory"):
        vlmops.apply_rope(q, k, positions_for(N, 2), axis, inv_freq, True, inplace=True)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: randn(5, 1, 8).expand(5, 3, 8), id="expanded_heads"),
        pytest.param(lambda: torch.as_strided(randn(64), (5, 3, 8), (8, 1, 1)), id="heads_one_element_apart"),
        pytest.param(lambda: torch.as_strided(randn(64), (5, 2, 8), (4, 16, 1)), id="tokens_overlap"),
    ],
)
def test_inplace_self_overlapping_q_raises(make):
    q = make()
    k = randn(q.shape[0], 1, 8, seed=1)
    axis, inv_freq = tables(4, 2)
    with pytest.raises(ValueError, match="rope_: q may address the same memory from several elements"):
        vlmops.apply_rope(q, k, positions_for(q.shape[0], 2), axis, inv_freq, True, inplace=True)
    with pytest.raises(ValueError, match="rope_: k may address the same memory from several elements"):
        vlmops.apply_rope(k.clone(), q, positions_for(q.shape[0], 2), axis, inv_freq, True, inplace=True)
    # Out of place, overlapping inputs are only read: the result is the reference's.
    q_out, k_out = vlmops.apply_rope(q, k, positions_for(q.shape[0], 2), axis, inv_freq, True)
    q_ref, k_ref = expected_rope(q, k, positions_for(q.shape[0], 2), axis, inv_freq)
    assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)


def _qkv_cases():
    N, H, Hk, D = 9, 4, 2, 16
    qkv = randn(N, 3, H, D, seed=3)
    fused = randn(N, (H + 2 * Hk) * D, seed=4)  # GQA: [q heads | k heads | v heads] per token
    interleaved = randn(N, H, 2, D, seed=5)  # q and k heads interleaved
    batched = randn(2, 5, 3, H, D, seed=6)  # [B, S, 3, H, D]
    return {
        "qkv_slices": ("nhd", qkv, qkv[:, 0], qkv[:, 1]),
        "gqa_slices": ("nhd", fused, fused[:, : H * D].view(N, H, D), fused[:, H * D : (H + Hk) * D].view(N, Hk, D)),
        "interleaved_heads": ("nhd", interleaved, interleaved[:, :, 0], interleaved[:, :, 1]),
        "k_before_q": ("nhd", qkv, qkv[:, 2], qkv[:, 0]),
        "bshd_slices": ("bshd", batched, batched[:, :, 0], batched[:, :, 1]),
        "bhsd_slices": ("bhsd", batched, batched[:, :, 0].transpose(1, 2), batched[:, :, 1].transpose(1, 2)),
    }


@pytest.mark.parametrize("case", list(_qkv_cases()))
def test_inplace_disjoint_views_of_one_buffer_are_accepted_and_correct(case):
    """The hot path: q and k are interleaved views of one projection; they are accepted (from their
    strides, no element loop) and rotated exactly once; the rest of the buffer is untouched."""
    layout, buf, q, k = _qkv_cases()[case]
    A = 3
    positions = torch.randint(0, 500, (*q.shape[:-2], A), generator=torch.Generator().manual_seed(7))
    if layout == "bhsd":
        positions = torch.randint(0, 500, (q.shape[0], q.shape[2], A), generator=torch.Generator().manual_seed(7))
    axis, inv_freq = tables(q.shape[-1] // 2, A)
    q_ref, k_ref = vlmops.apply_rope(q, k, positions, axis, inv_freq, True, layout=layout)
    untouched = torch.ones_like(buf, dtype=torch.bool)
    for t in (q, k):
        view = torch.zeros_like(buf, dtype=torch.bool)
        view.as_strided(t.shape, t.stride(), t.storage_offset()).fill_(True)
        untouched &= ~view
    rest = buf[untouched].clone()
    q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, True, layout=layout, inplace=True)
    assert q_out is q and k_out is k
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)
    assert torch.equal(buf[untouched], rest)


def test_inplace_check_reads_no_elements(big_half):
    """The aliasing test works from sizes and strides: on 2^31-element views of untouched memory, it
    answers at once (a loop over elements would take seconds and make 4 GiB resident)."""
    tokens = 2**26
    qk = big_half.as_strided((1, tokens, 2, 16), (0, 32, 16, 1))
    positions = torch.zeros(1, 1, 1, dtype=torch.long).expand(1, tokens, 1)
    axis, inv_freq = tables(8, 1)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="q and k may share memory"):
        torch.ops.vlmops.rope_(qk, qk[:, :, :1], positions, axis, inv_freq, True)
    # Disjoint heads pass the aliasing test; the bad axis value (checked after it) stops the kernel.
    with pytest.raises(ValueError, match=r"axis\[0\] = 1 must be in \[0, A\)"):
        torch.ops.vlmops.rope_(qk[:, :, :1], qk[:, :, 1:], positions, axis + 1, inv_freq, True)
    assert time.perf_counter() - start < 1.0


@st.composite
def view_pair(draw):
    """Two strided [N, H, D] views of one small buffer, from a family that covers slices of a packed
    projection (disjoint or not) and arbitrary strides and offsets."""
    N, H, D = draw(st.integers(1, 4)), draw(st.integers(1, 3)), 2 * draw(st.integers(1, 3))

    def one():
        strides = (draw(st.integers(0, 40)), draw(st.integers(0, 20)), draw(st.integers(0, 3)))
        return (N, H, D), strides, draw(st.integers(0, 40))

    return one(), one()


@settings(max_examples=150, deadline=None)
@given(pair=view_pair())
def test_hypothesis_inplace_never_accepts_shared_memory(pair):
    """Exact or conservative: whenever rope_ accepts two views, they share no element and neither
    repeats one, and the result is the out-of-place rotation."""
    (shape, q_strides, q_offset), (k_shape, k_strides, k_offset) = pair
    extent = (
        max(
            o + sum((n - 1) * s for n, s in zip(sh, st_))
            for sh, st_, o in ((shape, q_strides, q_offset), (k_shape, k_strides, k_offset))
        )
        + 1
    )
    buf = randn(extent, seed=extent)
    q = buf.as_strided(shape, q_strides, q_offset)
    k = buf.as_strided(k_shape, k_strides, k_offset)
    N, _, D = shape
    positions, (axis, inv_freq) = positions_for(N, 2), tables(D // 2, 2)
    q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq)
    unsafe = share_memory(q, k, extent) or overlaps_itself(q, extent) or overlaps_itself(k, extent)
    try:
        vlmops.apply_rope(q, k, positions, axis, inv_freq, True, inplace=True)
    except ValueError as error:
        assert "may share memory" in str(error) or "may address the same memory" in str(error)
        return
    assert not unsafe
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 5),
    H=st.integers(1, 3),
    Hk=st.integers(1, 3),
    D=st.sampled_from([2, 4, 6]),
    pad=st.integers(0, 2),
    q_block=st.integers(0, 6),
    k_block=st.integers(0, 6),
)
def test_hypothesis_inplace_slices_of_a_projection(N, H, Hk, D, pad, q_block, k_block):
    """q and k cut at any head offsets out of one [N, heads * D] projection: accepted exactly when they
    are disjoint (no false rejection on this family), correct when accepted."""
    width = (max(q_block + H, k_block + Hk) + pad) * D
    buf = randn(N, width, seed=width)
    q = buf[:, q_block * D : (q_block + H) * D].view(N, H, D)
    k = buf[:, k_block * D : (k_block + Hk) * D].view(N, Hk, D)
    disjoint = q_block + H <= k_block or k_block + Hk <= q_block
    positions, (axis, inv_freq) = positions_for(N, 2), tables(D // 2, 2)
    q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq)
    if not disjoint:
        with pytest.raises(ValueError, match="q and k may share memory"):
            vlmops.apply_rope(q, k, positions, axis, inv_freq, True, inplace=True)
        return
    vlmops.apply_rope(q, k, positions, axis, inv_freq, True, inplace=True)
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)


# --- rope_ and autograd ---------------------------------------------------------------------------------


def test_inplace_op_on_tensors_requiring_grad_raises():
    """rope_ has no derivative: with grad enabled it raises instead of letting gradients through it as if
    it were the identity."""
    q, k = randn(1, 5, 2, 8, seed=1), randn(1, 5, 1, 8, seed=2)
    positions, (axis, inv_freq) = positions_for(5, 2)[None], tables(4, 2)
    leaf = q.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="vlmops.rope_ cannot be differentiated"):
        torch.ops.vlmops.rope_(leaf, k, positions, axis, inv_freq, True)
    nonleaf = leaf * 1
    with pytest.raises(RuntimeError, match="vlmops.rope_ cannot be differentiated"):
        torch.ops.vlmops.rope_(k.clone(), nonleaf, positions, axis, inv_freq, True)
    with torch.no_grad():
        torch.ops.vlmops.rope_(nonleaf, k.clone(), positions, axis, inv_freq, True)


def test_inplace_op_invalidates_tensors_autograd_saved():
    """A tensor saved for backward and then rotated in place makes backward raise (its version moves)."""
    w = randn(1, 5, 2, 8, seed=3).requires_grad_(True)
    q, k = randn(1, 5, 2, 8, seed=1), randn(1, 5, 1, 8, seed=2)
    loss = (w * q).sum()  # saves q
    version = q._version
    torch.ops.vlmops.rope_(q, k, positions_for(5, 2)[None], *tables(4, 2), True)
    assert q._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --- class 2: double backward ---------------------------------------------------------------------------


def test_silu_mul_double_backward_matches_autograd_of_the_reference():
    gate = randn(3, 11, seed=1, dtype=torch.float64).mul_(3).requires_grad_(True)
    up = randn(3, 11, seed=2, dtype=torch.float64).requires_grad_(True)
    v = randn(3, 11, seed=3, dtype=torch.float64)

    def second_order(fn):
        grads = torch.autograd.grad(fn(gate, up), (gate, up), v, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in grads), (gate, up))

    got = second_order(vlmops.silu_mul)
    want = second_order(lambda g, u: torch.nn.functional.silu(g) * u)
    assert all(t.abs().sum() > 0 for t in got)  # never None or zeros
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_silu_mul_gradgradcheck():
    gate = randn(2, 3, 7, seed=4, dtype=torch.float64).mul_(3).requires_grad_(True)
    up = randn(2, 7, 3, seed=5, dtype=torch.float64).transpose(1, 2).requires_grad_(True)
    assert torch.autograd.gradgradcheck(vlmops.silu_mul, (gate, up))
    grad_out = randn(2, 3, 7, seed=6, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda go, g, u: torch.ops.vlmops.silu_mul_backward(go, g, u), (grad_out, gate, up)
    )


@pytest.mark.parametrize("inverse", [False, True])
def test_rope_gradgradcheck(inverse):
    q = randn(1, 4, 2, 6, seed=1, dtype=torch.float64).requires_grad_(True)
    k = randn(1, 4, 3, 6, seed=2, dtype=torch.float64).requires_grad_(True)
    positions, (axis, inv_freq) = positions_for(4, 2)[None], tables(3, 2)

    def f(q, k):
        return torch.ops.vlmops.rope(q, k, positions, axis, inv_freq, True, inverse)

    assert torch.autograd.gradcheck(f, (q, k)) and torch.autograd.gradgradcheck(f, (q, k))


# --- strides and sizes -----------------------------------------------------------------------------------


def _odd_rope_inputs():
    """Named [N, H, D] q and k: size-1 dims whose strides are smaller than a row, stride 0."""
    base = randn(4 * 3 * 8, seed=9)
    return {
        "one_token_small_strides": (
            torch.as_strided(base, (1, 3, 8), (1, 8, 1)),
            torch.as_strided(base, (1, 1, 8), (1, 1, 1)),
        ),
        "one_head_stride_0": (torch.as_strided(base, (4, 1, 8), (24, 0, 1)), randn(4, 1, 8, seed=1)),
        "expanded_tokens": (randn(1, 3, 8, seed=2).expand(4, 3, 8), randn(1, 2, 8, seed=3).expand(4, 2, 8)),
        "expanded_head_dim": (randn(4, 3, 1, seed=4).expand(4, 3, 8), randn(4, 2, 8, seed=5)),
        "head_dim_stride_3": (randn(4, 3, 24, seed=6)[..., ::3], randn(4, 2, 8, seed=7)),
        "transposed_tokens": (randn(3, 4, 8, seed=8).transpose(0, 1), randn(2, 4, 8, seed=9).transpose(0, 1)),
    }


@pytest.mark.parametrize("case", list(_odd_rope_inputs()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_odd_strides(case, dtype):
    q, k = (t.to(dtype) for t in _odd_rope_inputs()[case])
    N = q.shape[0]
    positions = positions_for(N, 2).expand(N, 2)  # positions with any strides
    axis, inv_freq = tables(3, 2)
    for fp32_math in (True, False):
        q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, fp32_math)
        q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq, fp32_math)
        assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)
    if dtype == torch.float32:  # the interpreter truncates to bfloat16 (compiled kernels round)
        from vlmops.triton.rope import rope_triton

        q_tr, k_tr = rope_triton(q[None], k[None], positions[None], axis, inv_freq, True)
        q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq, True)
        torch.testing.assert_close(q_tr[0], q_ref, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(k_tr[0], k_ref, rtol=2e-6, atol=2e-6)


def _odd_silu_inputs():
    base = randn(64, seed=1) * 4
    return {
        "one_row_small_stride": (torch.as_strided(base, (1, 9), (1, 1)), torch.as_strided(base, (1, 9), (0, 2))),
        "size_1_middle_dim": (torch.as_strided(base, (3, 1, 7), (7, 1, 1)), randn(3, 1, 7, seed=2)),
        "expanded_gate": (randn(1, 13, seed=3).expand(4, 13), randn(4, 13, seed=4)),
        "scalar_row_broadcast": (randn(4, 1, seed=5).expand(4, 6), randn(1, 1, seed=6).expand(4, 6)),
        "overlapping_rows": (torch.as_strided(base, (5, 8), (3, 1)), torch.as_strided(base, (5, 8), (1, 5))),
    }


@pytest.mark.parametrize("case", list(_odd_silu_inputs()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_odd_strides(case, dtype):
    gate, up = (t.to(dtype) for t in _odd_silu_inputs()[case])
    grad_out = randn(*gate.shape, seed=7, dtype=dtype)
    out = torch.ops.vlmops.silu_mul(gate, up)
    grads = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    want, want_grads = (
        reference_silu_mul(gate.contiguous(), up.contiguous()),
        reference_silu_mul_backward(grad_out, gate.contiguous(), up.contiguous()),
    )
    tol = 2e-6 if dtype == torch.float32 else 0
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    torch.testing.assert_close(grads, want_grads, rtol=tol, atol=tol)
    if dtype == torch.float32:  # the interpreter truncates to bfloat16 (compiled kernels round)
        from vlmops.triton import silu_mul as triton_silu_mul

        torch.testing.assert_close(triton_silu_mul.silu_mul(gate, up), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            triton_silu_mul.silu_mul_backward(grad_out, gate, up), want_grads, rtol=1e-5, atol=1e-5
        )


def test_rope_offsets_past_2_31_elements(big_half):
    """Tokens 2^31 elements apart and k at a storage offset past 2^31: 64-bit index math (out of place
    and in place, where the aliasing test finds the period 2^31)."""
    H, D = 2, 8
    q = big_half.as_strided((1, 2, H, D), (0, 2**31, D, 1), 0)
    k = big_half.as_strided((1, 2, 1, D), (0, 2**31, D, 1), H * D)
    far_k = big_half.as_strided((1, 2, 1, D), (0, D, D, 1), 2**31 + 2**18)
    for t, seed in ((q, 1), (k, 2), (far_k, 3)):
        t.copy_(randn(*t.shape, seed=seed, dtype=torch.float16))
    positions, (axis, inv_freq) = positions_for(2, 2)[None], tables(4, 2)
    for kk in (k, far_k):
        q_ref, k_ref = reference_rope(q.clone(), kk.clone(), positions, axis, inv_freq, False)
        q_out, k_out = torch.ops.vlmops.rope(q, kk, positions, axis, inv_freq, False)
        assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)
    q_ref, k_ref = reference_rope(q.clone(), k.clone(), positions, axis, inv_freq, False)
    torch.ops.vlmops.rope_(q, k, positions, axis, inv_freq, False)
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)


def test_silu_mul_offsets_past_2_31_elements(big_half):
    I = 40
    gate = big_half.as_strided((2, I), (2**31, 1), 0)
    up = big_half.as_strided((2, I), (2**10, 1), 2**31 + 2**18)
    grad_out = big_half.as_strided((3, 1, I), (2**30, 5, 1), I)
    for t, seed in ((gate, 1), (up, 2)):
        t.copy_(randn(*t.shape, seed=seed, dtype=torch.float16) * 3)
    grad_out.copy_(randn(3, 1, I, seed=3, dtype=torch.float16))
    go = grad_out[:2, 0]
    assert torch.equal(torch.ops.vlmops.silu_mul(gate, up), reference_silu_mul(gate.clone(), up.clone()))
    got = torch.ops.vlmops.silu_mul_backward(go, gate, up)
    want = reference_silu_mul_backward(go.clone(), gate.clone(), up.clone())
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_triton_silu_mul_column_offsets_past_int32(big_half):
    """A column stride of 2^30 + 4 elements: column 2 lies 2^31 + 8 elements in, past int32 (the
    launcher takes the kernels' 64-bit offsets within a block)."""
    from vlmops.triton import silu_mul as triton_silu_mul

    gate = big_half.as_strided((1, 3), (1, 2**30 + 4), 0)
    up = big_half.as_strided((1, 3), (1, 2**30 + 4), 1)
    for t, seed in ((gate, 1), (up, 2)):
        t.copy_(randn(1, 3, seed=seed, dtype=torch.float16) * 3)
    grad_out = randn(1, 3, seed=3, dtype=torch.float16)
    want = reference_silu_mul(gate.clone(), up.clone())
    want_grads = reference_silu_mul_backward(grad_out, gate.clone(), up.clone())
    # The interpreter truncates to float16 where compiled kernels round: one float16 ulp.
    torch.testing.assert_close(triton_silu_mul.silu_mul(gate, up), want, rtol=2**-10, atol=1e-6)
    torch.testing.assert_close(
        triton_silu_mul.silu_mul_backward(grad_out, gate, up), want_grads, rtol=2**-10, atol=1e-6
    )


def test_triton_rope_head_dim_offsets_past_int32(big_half):
    """A head_dim stride of 715828000 elements: element 3 of a head lies past 2^31 (the Triton kernel's
    pair offsets are 64-bit)."""
    from vlmops.triton.rope import rope_triton

    stride = 715_828_000
    q = big_half.as_strided((1, 1, 1, 4), (0, 0, 0, stride), 0)
    k = big_half.as_strided((1, 1, 1, 4), (0, 0, 0, stride), 1)
    for t, seed in ((q, 1), (k, 2)):
        t.copy_(randn(1, 1, 1, 4, seed=seed, dtype=torch.float16))
    positions, axis, inv_freq = torch.tensor([[[37, 5]]]), torch.tensor([0, 1]), vlmops.rope_inv_freq(4, 100.0)
    q_ref, k_ref = reference_rope(q.clone(), k.clone(), positions, axis, inv_freq, True)
    q_out, k_out = rope_triton(q, k, positions, axis, inv_freq, True)
    torch.testing.assert_close(q_out, q_ref, rtol=2**-10, atol=1e-6)
    torch.testing.assert_close(k_out, k_ref, rtol=2**-10, atol=1e-6)


@st.composite
def strided_tensor(draw, shape, dtype=torch.float32, scale=1.0):
    """A tensor of `shape` with arbitrary strides (0, below a row, overlapping) over a fresh buffer."""
    strides = tuple(draw(st.integers(0, 24)) for _ in shape)
    offset = draw(st.integers(0, 7))
    extent = offset + sum(max(n - 1, 0) * s for n, s in zip(shape, strides)) + 1
    buf = (randn(extent, seed=draw(st.integers(0, 99))) * scale).to(dtype)
    return buf.as_strided(shape, strides, offset)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    N=st.integers(0, 4),
    H=st.integers(1, 3),
    Hk=st.integers(0, 2),
    P=st.integers(1, 3),
    extra=st.integers(0, 2),
    A=st.integers(1, 3),
    fp32_math=st.booleans(),
    inverse=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_hypothesis_rope_any_strides(data, N, H, Hk, P, extra, A, fp32_math, inverse, dtype):
    D = 2 * P + extra
    q = data.draw(strided_tensor((N, H, D), dtype))
    k = data.draw(strided_tensor((N, Hk, D), dtype))
    positions = data.draw(strided_tensor((N, A), scale=1000.0)).long()
    axis = torch.tensor(data.draw(st.lists(st.integers(0, A - 1), min_size=P, max_size=P)))
    inv_freq = vlmops.rope_inv_freq(2 * P, 50.0)
    q_out, k_out = torch.ops.vlmops.rope(q[None], k[None], positions[None], axis, inv_freq, fp32_math, inverse)
    q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq, fp32_math, inverse)
    assert torch.equal(q_out[0], q_ref) and torch.equal(k_out[0], k_ref)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_hypothesis_silu_mul_any_strides(data, shape, dtype):
    shape = tuple(shape)
    gate = data.draw(strided_tensor(shape, dtype, scale=4.0))
    up = data.draw(strided_tensor(shape, dtype))
    grad_out = data.draw(strided_tensor(shape, dtype))
    out = torch.ops.vlmops.silu_mul(gate, up)
    grads = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    want = reference_silu_mul(gate.contiguous(), up.contiguous())
    want_grads = reference_silu_mul_backward(grad_out.contiguous(), gate.contiguous(), up.contiguous())
    # bfloat16: equal but for a rare one-ulp difference of exp implementations.
    tol = 2e-6 if dtype == torch.float32 else 2**-8
    torch.testing.assert_close(out, want, rtol=tol, atol=1e-30)
    torch.testing.assert_close(grads, want_grads, rtol=tol, atol=1e-30)


# --- index arguments and values ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 2, 2**40, -(2**62)])
def test_rope_axis_outside_positions_columns_raises_on_cpu(bad):
    q, k = randn(5, 2, 8), randn(5, 1, 8, seed=1)
    axis = torch.tensor([0, 1, bad, 0])
    for inplace in (False, True):
        with pytest.raises(ValueError, match=rf"vlmops.rope_?: axis\[2\] = {bad} must be in \[0, A\) = \[0, 2\)"):
            vlmops.apply_rope(q, k, positions_for(5, 2), axis, vlmops.rope_inv_freq(8, 100.0), True, inplace=inplace)


def test_rope_axis_is_read_through_its_strides():
    axis = torch.tensor([[0, 9], [1, 9], [1, 9], [0, 9]])[:, 0]  # [0, 1, 1, 0], stride 2; 9 is never read
    q, k = randn(5, 2, 8), randn(5, 1, 8, seed=1)
    inv_freq = vlmops.rope_inv_freq(8, 100.0)
    q_out, k_out = vlmops.apply_rope(q, k, positions_for(5, 2), axis, inv_freq, True)
    q_ref, k_ref = expected_rope(q, k, positions_for(5, 2), axis.contiguous(), inv_freq)
    assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)


def test_triton_kernel_clamps_axis():
    """What CUDA does with an axis outside [0, A) (it is not read on the host): the Triton kernel, here
    under the interpreter, rotates by the nearest column."""
    from vlmops.triton.rope import rope_triton

    q, k = randn(1, 5, 2, 8), randn(1, 5, 1, 8, seed=1)
    positions, inv_freq = positions_for(5, 3)[None], vlmops.rope_inv_freq(8, 100.0)
    q_out, k_out = rope_triton(q, k, positions, torch.tensor([-5, 1, 7, 2]), inv_freq, True)
    q_ref, k_ref = reference_rope(q, k, positions, torch.tensor([0, 1, 2, 2]), inv_freq, True)
    torch.testing.assert_close(q_out, q_ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(k_out, k_ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("pos_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("fp32_math, dtype", [(True, torch.float32), (False, torch.bfloat16), (True, torch.float64)])
def test_rope_positions_negative_and_huge(pos_dtype, fp32_math, dtype):
    """Positions are values, not indices: any value gives transformers' angle float(position) * inv_freq."""
    info = torch.iinfo(pos_dtype)
    values = [info.min, -(2**20) - 1, -1, 0, 1, 2**24 + 1, 2**31 - 1, info.max]
    positions = torch.tensor(values, dtype=pos_dtype)[:, None].repeat(1, 2)
    N = positions.shape[0]
    q, k = randn(N, 2, 8, dtype=dtype), randn(N, 1, 8, seed=1, dtype=dtype)
    axis, inv_freq = torch.tensor([0, 1, 1, 0]), vlmops.rope_inv_freq(8, 100.0)
    q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, fp32_math)
    q_ref, k_ref = expected_rope(q, k, positions.long(), axis, inv_freq, fp32_math)
    if dtype == torch.float64:
        torch.testing.assert_close(q_out, q_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(k_out, k_ref, rtol=1e-9, atol=1e-9)
    else:
        assert torch.equal(q_out, q_ref) and torch.equal(k_out, k_ref)


def test_rope_nan_and_inf_propagate_like_the_reference():
    q, k = randn(4, 2, 8), randn(4, 1, 8, seed=1)
    q[0, 0, 0], q[1, 1, 5], k[2, 0, 1], k[3, 0, 7] = float("nan"), float("inf"), float("-inf"), float("nan")
    inv_freq = vlmops.rope_inv_freq(8, 100.0)
    inv_freq[3] = float("inf")
    inv_freq[2] = float("nan")
    axis = torch.tensor([0, 1, 0, 1])
    positions = torch.tensor([[0, 1], [2, 0], [5, 7], [0, 0]])
    q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, True)
    q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq)
    torch.testing.assert_close(q_out, q_ref, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(k_out, k_ref, equal_nan=True, rtol=0, atol=0)


def test_silu_mul_nan_and_inf_backward_like_eager():
    gate = torch.tensor([float("nan"), float("inf"), float("-inf"), -1e4, 1e4, 0.0, 3.0, -88.0])
    up = torch.tensor([1.0, 2.0, 3.0, float("inf"), float("nan"), float("-inf"), 1.0, 1.0])
    grad_out = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, float("inf"), 2.0])
    g, u = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
    eager = torch.autograd.grad(torch.nn.functional.silu(g) * u, (g, u), grad_out)
    torch.testing.assert_close(
        torch.ops.vlmops.silu_mul(gate, up), torch.nn.functional.silu(gate) * up, equal_nan=True, rtol=1e-6, atol=0
    )
    got = torch.ops.vlmops.silu_mul_backward(grad_out, gate, up)
    torch.testing.assert_close(got, eager, equal_nan=True, rtol=1e-6, atol=0)


# --- errors name the argument; fakes; references -------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k[..., :6], p, a, f, True), "rope: k must be"),
        (lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k, p[:, :3], a, f, True), "rope: positions must be"),
        (
            lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k, p[..., :0], a, f, True),
            r"rope: positions must be \[B, S, A\] = \[1, 5, A >= 1\], got shape \[1, 5, 0\]",
        ),
        (lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k, p, a[:0], f[:0], True), "rope: axis must be"),
        (lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k, p, a[None], f, True), r"rope: axis must be \[P\]"),
        (lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k, p, a, f.double(), True), "rope: inv_freq must be Float"),
        (lambda q, k, p, a, f: torch.ops.vlmops.rope(q.int(), k.int(), p, a, f, True), "rope: q must be float32"),
        (
            lambda q, k, p, a, f: torch.ops.vlmops.rope(q, k, p, a.to("meta"), f, True),
            "rope: axis is on meta but q is on cpu",
        ),
        (lambda q, k, p, a, f: torch.ops.vlmops.rope_(q, k.half(), p, a, f, True), "rope_: k dtype Half must match"),
        (lambda q, k, p, a, f: torch.ops.vlmops.silu_mul(q, k), "silu_mul: up must be gate's shape"),
        (lambda q, k, p, a, f: torch.ops.vlmops.silu_mul(q, q.half()), "silu_mul: up dtype Half must match gate"),
        (lambda q, k, p, a, f: torch.ops.vlmops.silu_mul(p, p), "silu_mul: gate must be float32"),
    ],
)
def test_op_errors_name_the_argument(call, match):
    q, k = randn(1, 5, 2, 8), randn(1, 5, 1, 8, seed=1)
    with pytest.raises(ValueError, match="vlmops." + match):
        call(q, k, positions_for(5, 2)[None], *tables(4, 2))


@pytest.mark.parametrize(
    "op, args, match",
    [
        ("rope", lambda q, k, p, a, f: (q, k[:, :, :, :6], p, a, f, True), "k must be"),
        ("rope", lambda q, k, p, a, f: (q, k, p, a, f[:3], True), "inv_freq must be"),
        (
            "rope",
            lambda q, k, p, a, f: (q[..., :6], k[..., :6], p, torch.zeros(4, dtype=torch.long), f, True),
            "rotary_dim",
        ),
        ("rope_", lambda q, k, p, a, f: (q, k, p[:, :2], a, f, True), "positions must be"),
        ("silu_mul", lambda q, k, p, a, f: (q, k), "up must be gate's shape"),
        ("silu_mul_backward", lambda q, k, p, a, f: (q[..., :2], q, q), "grad_out must be gate's shape"),
    ],
)
def test_fakes_state_the_shape_rules(op, args, match):
    q, k = randn(1, 5, 2, 8), randn(1, 5, 1, 8, seed=1)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (q, k, positions_for(5, 2)[None], *tables(4, 2))]
        with pytest.raises(RuntimeError, match=f"vlmops.{op}: {match}"):
            getattr(torch.ops.vlmops, op)(*args(*fake))


@pytest.mark.parametrize("name", FAMILY_OPS)
def test_references_have_the_op_signatures(name):
    """The unbuilt-checkout fallback calls each op's reference with the op's arguments."""
    schema = getattr(torch.ops.vlmops, name).default._schema
    parameters = inspect.signature(registry.defined()[name].reference).parameters
    assert [a.name for a in schema.arguments] == list(parameters)
    for argument in schema.arguments:
        if argument.has_default_value():
            assert parameters[argument.name].default == argument.default_value


def test_reference_fallback_runs_every_op(monkeypatch):
    monkeypatch.setattr(_native, "available", lambda: False)
    q, k = randn(1, 5, 2, 8), randn(1, 5, 1, 8, seed=1)
    positions, (axis, inv_freq) = positions_for(5, 2)[None], tables(4, 2)
    q_out, k_out = registry.op("rope")(q, k, positions, axis, inv_freq, True, inverse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_back, k_back = registry.op("rope")(q_out, k_out, positions, axis, inv_freq, True)
        torch.testing.assert_close((q_back, k_back), (q, k), rtol=1e-5, atol=1e-5)
        q_in, k_in = q.clone(), k.clone()
        assert registry.op("rope_")(q_in, k_in, positions, axis, inv_freq, True, True) is None
        assert torch.equal(q_in, q_out) and torch.equal(k_in, k_out)
        gate, up = randn(3, 5, seed=2), randn(3, 5, seed=3)
        assert torch.equal(registry.op("silu_mul")(gate, up), reference_silu_mul(gate, up))
        grads = registry.op("silu_mul_backward")(torch.ones(3, 5), gate, up)
        assert torch.equal(grads[0], reference_silu_mul_backward(torch.ones(3, 5), gate, up)[0])


# --- opcheck --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_every_op_on_adversarial_layouts(device):
    N, H, D = 6, 2, 8
    qkv = randn(N, 3, H, D, device=device)
    positions = positions_for(N, 2, device=device)[None].expand(1, N, 2)
    axis, inv_freq = tables(3, 2, device=device)
    for q, k in (
        (qkv[None, :, 0], qkv[None, :, 1]),
        (randn(1, 1, H, D, device=device).expand(1, N, H, D), randn(1, N, 1, D, seed=1, device=device)),
    ):
        q = q.detach().requires_grad_(True)
        for fp32_math, inverse in ((True, False), (False, True)):
            torch.library.opcheck(torch.ops.vlmops.rope.default, (q, k, positions, axis, inv_freq, fp32_math, inverse))
    q, k = qkv.clone()[None, :, 0], qkv.clone()[None, :, 1]
    torch.library.opcheck(torch.ops.vlmops.rope_.default, (q, k, positions, axis, inv_freq, True, False))
    base = randn(5, 24, device=device)
    for gate, up in ((base[:, :7], base[:, 8:15]), (randn(1, 7, device=device).expand(5, 7), base[:, 16:23])):
        grad_out = randn(5, 7, seed=4, device=device)
        torch.library.opcheck(torch.ops.vlmops.silu_mul.default, (gate.detach().requires_grad_(True), up))
        torch.library.opcheck(torch.ops.vlmops.silu_mul_backward.default, (grad_out, gate, up))


# --- CUDA (the public ops; rope's Triton variant through VLMOPS_CUDA_BACKEND) ------------------------------------


@pytest.mark.requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_rope_adversarial(monkeypatch, backend):
    monkeypatch.setenv("VLMOPS_CUDA_BACKEND", backend)
    for case, (q, k) in _odd_rope_inputs().items():
        q, k = q.cuda(), k.cuda()
        positions, (axis, inv_freq) = positions_for(q.shape[0], 2, device="cuda"), tables(3, 2, device="cuda")
        q_out, k_out = vlmops.apply_rope(q, k, positions, axis, inv_freq, True)
        q_ref, k_ref = expected_rope(q, k, positions, axis, inv_freq)
        torch.testing.assert_close(q_out, q_ref, rtol=2e-6, atol=2e-6, msg=case)
        torch.testing.assert_close(k_out, k_ref, rtol=2e-6, atol=2e-6, msg=case)
    # Axis values are clamped on the device; huge positions (angles past 2^20) take cosf/sinf.
    q, k = randn(8, 2, 8, device="cuda"), randn(8, 1, 8, seed=1, device="cuda")
    positions = torch.tensor([0, 1, -7, 2**22, -(2**40), 2**62, 12345, 99], device="cuda")[:, None].repeat(1, 3)
    inv_freq = vlmops.rope_inv_freq(8, 100.0).cuda()
    q_out, k_out = vlmops.apply_rope(q, k, positions, torch.tensor([-3, 1, 2, 9], device="cuda"), inv_freq, True)
    q_ref, k_ref = expected_rope(q, k, positions, torch.tensor([0, 1, 2, 2], device="cuda"), inv_freq)
    torch.testing.assert_close(q_out, q_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_out, k_ref, rtol=1e-5, atol=1e-5)
    for case, (layout, buf, q, k) in _qkv_cases().items():
        buf, q, k = buf.cuda(), q.cuda(), k.cuda()
        q, k = (buf.as_strided(t.shape, t.stride(), t.storage_offset()) for t in (q, k))
        shape = (q.shape[0], q.shape[2], 2) if layout == "bhsd" else (*q.shape[:-2], 2)
        positions = torch.randint(0, 99, shape, device="cuda")
        q_ref, k_ref = vlmops.apply_rope(
            q, k, positions, *tables(q.shape[-1] // 2, 2, device="cuda"), True, layout=layout
        )
        vlmops.apply_rope(
            q, k, positions, *tables(q.shape[-1] // 2, 2, device="cuda"), True, layout=layout, inplace=True
        )
        assert torch.equal(q, q_ref) and torch.equal(k, k_ref), case
    x = randn(5, 2, 16, device="cuda")[..., ::2]
    with pytest.raises(ValueError, match="q and k may share memory"):
        vlmops.apply_rope(x, x, positions_for(5, 2, device="cuda"), *tables(4, 2, device="cuda"), True, inplace=True)


@pytest.mark.requires_cuda
def test_cuda_silu_mul_adversarial():
    for case, (gate, up) in _odd_silu_inputs().items():
        gate, up = gate.cuda(), up.cuda()
        grad_out = randn(*gate.shape, seed=7, device="cuda")
        want = reference_silu_mul(gate.contiguous(), up.contiguous())
        want_grads = reference_silu_mul_backward(grad_out, gate.contiguous(), up.contiguous())
        torch.testing.assert_close(torch.ops.vlmops.silu_mul(gate, up), want, rtol=1e-5, atol=1e-5, msg=case)
        torch.testing.assert_close(
            torch.ops.vlmops.silu_mul_backward(grad_out, gate, up), want_grads, rtol=1e-5, atol=1e-5, msg=case
        )
    with pytest.raises(ValueError, match="vlmops.silu_mul: up must be gate's shape"):
        torch.ops.vlmops.silu_mul(torch.ones(3, 4, device="cuda"), torch.ones(3, 5, device="cuda"))
    gate = randn(2, 3, 7, seed=4, dtype=torch.float64, device="cuda").requires_grad_(True)
    up = randn(2, 3, 7, seed=5, dtype=torch.float64, device="cuda").requires_grad_(True)
    assert torch.autograd.gradgradcheck(vlmops.silu_mul, (gate, up))
