"""vlmops.gated_cross_attention: key-range cross-attention with a tanh gate vs the float64 reference
with an explicit dense mask, OpenFlamingo's and Mllama's visibility rules, transformers' Mllama
cross-attention, every head dim from 1 to 256, gradients (gate included), opcheck, bad inputs and
hypothesis-drawn ranges. Adversarial strides, sizes and values: tests/test_adversarial_attention.py."""

import pytest
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmops
from vlmops.reference import gated_cross_attention as reference_attention
from vlmops.reference.gated_cross_attention import masked_attention, openflamingo_mask


def make_qkv(B, Lq, Lk, H, Hk, D, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Lq, H, D, generator=gen, dtype=torch.float64).to(dtype)
    k = torch.randn(B, Lk, Hk, D, generator=gen, dtype=torch.float64).to(dtype)
    v = torch.randn(B, Lk, Hk, D, generator=gen, dtype=torch.float64).to(dtype)
    return q, k, v


def ranges(rows):
    """[[(start, end), ...] per batch entry] -> int32 kv_start, kv_end."""
    t = torch.tensor(rows, dtype=torch.int32)
    return t[..., 0].contiguous(), t[..., 1].contiguous()


def mixed_ranges(B, Lq, Lk, seed=0):
    """Runs of shared ranges (the common case), empty rows, and scattered single rows."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.zeros(B, Lq, dtype=torch.int32)
    end = torch.zeros(B, Lq, dtype=torch.int32)
    for b in range(B):
        cut = Lq // 3
        end[b, cut:] = Lk  # rows 0..cut-1 see nothing, the rest everything
        start[b, 2 * cut :] = Lk // 2
        a = torch.randint(0, Lk + 1, (Lq // 4,), generator=gen, dtype=torch.int32)
        c = torch.randint(0, Lk + 1, (Lq // 4,), generator=gen, dtype=torch.int32)
        rows = torch.randperm(Lq, generator=gen)[: Lq // 4]
        start[b, rows], end[b, rows] = torch.minimum(a, c), torch.maximum(a, c)
    return start, end


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


TIGHT = {torch.float64: 1e-12, torch.float32: 2e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("D", [1, 3, 8, 20, 64, 72, 128, 250, 256])
def test_matches_dense_mask_reference(dtype, D):
    B, Lq, Lk = 2, 40, 600  # 600 keys cross a 512-key block
    q, k, v = make_qkv(B, Lq, Lk, 4, 2, D, dtype)
    start, end = mixed_ranges(B, Lq, Lk)
    gate = torch.tensor([0.7], dtype=dtype)
    out, lse = vlmops.gated_cross_attention(q, k, v, start, end, gate, return_lse=True)
    mask = torch.zeros(B, Lq, Lk, dtype=torch.bool)
    for b in range(B):
        for i in range(Lq):
            mask[b, i, start[b, i] : end[b, i]] = True
    ref_out, ref_lse = masked_attention(q.double(), k.double(), v.double(), mask, gate.double())
    assert out.dtype == dtype and out.shape == q.shape and lse.shape == (B, 4, Lq)
    assert max_abs(out, ref_out) < TIGHT[dtype]
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert max_abs(lse[finite], ref_lse[finite]) < TIGHT[dtype]
    empty = end == start
    assert torch.all(out[empty] == 0) and not torch.isnan(out).any()


@pytest.mark.parametrize("H,Hk", [(8, 8), (8, 2), (8, 1), (3, 1)])
def test_gqa_runs_longer_than_a_tile(H, Hk):
    # 300 rows share one range: with the group's heads stacked, 300 * H / Hk rows cross 256-row tiles.
    B, Lq, Lk = 1, 337, 1100
    q, k, v = make_qkv(B, Lq, Lk, H, Hk, 32, torch.float32)
    start, end = ranges([[(0, 0)] * 37 + [(0, Lk)] * 300])
    out = vlmops.gated_cross_attention(q, k, v, start, end)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), start, end)
    assert max_abs(out, ref) < 2e-5


def test_strided_inputs_and_transformers_cache_layout():
    B, Lq, Lk, H, Hk, D = 2, 9, 70, 4, 2, 32
    qkv = torch.randn(B, Lq, 3, H, D, dtype=torch.float64)
    q = qkv[:, :, 0]  # a view of a fused projection
    k_cache = torch.randn(B, Hk, Lk, D, dtype=torch.float64)  # transformers' [B, Hk, Lk, D]
    v_cache = torch.randn(B, Hk, Lk, D, dtype=torch.float64)
    start, end = mixed_ranges(B, Lq, Lk, seed=3)
    out = vlmops.gated_cross_attention(
        q, k_cache.transpose(1, 2), v_cache.transpose(1, 2), start, end, softmax_scale=0.3
    )
    ref, _ = reference_attention(
        q.contiguous(),
        k_cache.transpose(1, 2).contiguous(),
        v_cache.transpose(1, 2).contiguous(),
        start,
        end,
        softmax_scale=0.3,
    )
    assert max_abs(out, ref) < 1e-12


def test_decode_single_row_long_keys():
    q, k, v = make_qkv(2, 1, 4 * 1601, 8, 2, 64, torch.float32)
    start, end = ranges([[(1601, 4 * 1601)], [(0, 0)]])
    out = vlmops.gated_cross_attention(q, k, v, start, end, torch.tensor(0.5))
    ref, _ = reference_attention(q.double(), k.double(), v.double(), start, end, torch.tensor(0.5))
    assert max_abs(out, ref) < 2e-5 and torch.all(out[1] == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_within_pytorch_rounding(dtype):
    # flash-attention's rule: our error vs a float64 reference is within 3x PyTorch's own error.
    q, k, v = make_qkv(2, 30, 300, 4, 2, 64, dtype)
    start, end = mixed_ranges(2, 30, 300)
    gate = torch.tensor(1.3, dtype=dtype)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), start, end, gate.double())
    mask = reference_attention.__globals__["dense_mask"](start, end, 300)
    k_rep, v_rep = (t.transpose(1, 2).repeat_interleave(2, 1) for t in (k, v))
    pytorch = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k_rep, v_rep, attn_mask=mask[:, None])
    pytorch = (pytorch.transpose(1, 2) * torch.tanh(gate)).nan_to_num().masked_fill((end == start)[..., None, None], 0)
    ours = vlmops.gated_cross_attention(q, k, v, start, end, gate)
    assert ours.dtype == dtype
    assert max_abs(ours, ref) <= 3 * max_abs(pytorch, ref)


def grads_of(fn, tensors, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    fn(*leaves).backward(grad_out)
    return [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("H,Hk", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("alpha", [None, 0.0, -0.8])
def test_backward_matches_reference(dtype, H, Hk, alpha):
    # alpha = 0 (Flamingo's initialization) must still give the gate a gradient.
    B, Lq, Lk = 2, 70, 530  # 530 > one 512-key block
    q, k, v = make_qkv(B, Lq, Lk, H, Hk, 40, dtype)
    start, end = mixed_ranges(B, Lq, Lk, seed=1)
    grad_out = torch.randn(q.shape, dtype=torch.float64).to(dtype)
    tensors = [q, k, v] + ([] if alpha is None else [torch.tensor([alpha], dtype=dtype)])
    ours = grads_of(lambda *t: vlmops.gated_cross_attention(*t[:3], start, end, *t[3:]), tensors, grad_out)
    ref = grads_of(
        lambda *t: reference_attention(*t[:3], start, end, *t[3:])[0], [t.double() for t in tensors], grad_out.double()
    )
    for name, g, r in zip("qkvg", ours, ref):
        assert g.dtype == dtype and g.shape == r.shape, name
        tol = TIGHT[dtype] * (50 if name == "g" else 5)  # the gate's gradient sums every element
        assert max_abs(g, r) < tol * max(1.0, r.abs().max().item()), name
    assert torch.all(ours[0][end == start] == 0)


def test_gradcheck_float64():
    q, k, v = make_qkv(2, 5, 9, 2, 1, 8, torch.float64)
    start, end = ranges([[(0, 9), (2, 5), (2, 5), (0, 0), (8, 9)], [(0, 0), (0, 0), (3, 9), (3, 9), (0, 4)]])
    inputs = tuple(t.requires_grad_() for t in (q, k, v, torch.tensor([0.4], dtype=torch.float64)))
    assert torch.autograd.gradcheck(
        lambda a, b, c, g: vlmops.gated_cross_attention(a, b, c, start, end, g, softmax_scale=0.5), inputs
    )


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_forward_and_backward(device):
    start, end = (t.to(device) for t in ranges([[(0, 9), (2, 5), (2, 5), (0, 0), (8, 9)]]))
    # float64 is CPU-only (the CUDA kernels are Triton's).
    for dtype in (torch.float32, torch.float64) if device == "cpu" else (torch.float32,):
        q, k, v = (t.to(device) for t in make_qkv(1, 5, 9, 4, 2, 16, dtype))
        for gate in (None, torch.tensor([0.3], dtype=dtype, device=device).requires_grad_()):
            args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), start, end, gate, None)
            torch.library.opcheck(torch.ops.vlmops.gated_cross_attention.default, args)
            out, lse = torch.ops.vlmops.gated_cross_attention(*args)
            bwd = (
                torch.randn_like(out),
                q.detach(),
                k.detach(),
                v.detach(),
                out.detach(),
                lse,
                start,
                end,
                None if gate is None else gate.detach(),
                0.25,
            )
            torch.library.opcheck(torch.ops.vlmops.gated_cross_attention_backward.default, bwd)


def test_compiles_fullgraph():
    q, k, v = make_qkv(1, 6, 20, 2, 1, 16, torch.float32)
    start, end = ranges([[(0, 20), (0, 20), (0, 0), (5, 20), (5, 20), (5, 20)]])
    gate = torch.tensor([0.2])
    compiled = torch.compile(vlmops.gated_cross_attention, fullgraph=True, backend="aot_eager")
    assert max_abs(compiled(q, k, v, start, end, gate), vlmops.gated_cross_attention(q, k, v, start, end, gate)) == 0


@settings(max_examples=15, deadline=None)
@given(
    shape=st.sampled_from([(1, 1, 1), (2, 3, 17), (1, 33, 513), (3, 7, 64)]),
    heads=st.sampled_from([(1, 1), (2, 1), (4, 2), (3, 3)]),
    D=st.sampled_from([1, 6, 8, 32, 40, 80]),
    seed=st.integers(0, 1000),
    gated=st.booleans(),
)
def test_hypothesis_ranges(shape, heads, D, seed, gated):
    B, Lq, Lk = shape
    q, k, v = make_qkv(B, Lq, Lk, heads[0], heads[1], D, torch.float64, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, Lk + 1, (B, Lq), generator=gen)
    c = torch.randint(0, Lk + 1, (B, Lq), generator=gen)
    start, end = torch.minimum(a, c).int(), torch.maximum(a, c).int()
    gate = torch.tensor(0.9, dtype=torch.float64) if gated else None
    out = vlmops.gated_cross_attention(q, k, v, start, end, gate)
    ref, _ = reference_attention(q, k, v, start, end, gate)
    assert max_abs(out, ref) < 1e-12


def _bad(**overrides):
    q, k, v = make_qkv(2, 3, 10, 4, 2, 16, torch.float32)
    start, end = ranges([[(0, 10)] * 3, [(2, 4)] * 3])
    args = dict(q=q, k=k, v=v, kv_start=start, kv_end=end)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        (dict(kv_end=ranges([[(0, 11)] * 3, [(2, 4)] * 3])[1]), ValueError, "kv_end <= Lk = 10"),
        (dict(kv_start=torch.full((2, 3), -1, dtype=torch.int32)), ValueError, "0 <= kv_start"),
        (
            dict(kv_start=torch.full((2, 3), 5, dtype=torch.int32), kv_end=torch.full((2, 3), 4, dtype=torch.int32)),
            ValueError,
            "kv_start <= kv_end",
        ),
        (dict(kv_start=torch.zeros(2, 3, dtype=torch.int64)), ValueError, "kv_start must be Int, got Long"),
        (dict(kv_end=torch.zeros(2, 4, dtype=torch.int32)), ValueError, r"kv_end must be \[B, Lq\] = \[2, 3\]"),
        (
            dict(kv_end=torch.zeros(2, 3, dtype=torch.int32, device="meta")),
            ValueError,
            "kv_end is on meta but q is on cpu",
        ),
        (dict(q=torch.randn(2, 3, 3, 16)), ValueError, r"k's heads \(2\) must .*divide q's heads \(3\)"),
        (dict(q=torch.randn(2, 3, 4, 16, dtype=torch.float64)), ValueError, "k dtype Float must match q dtype Double"),
        (dict(q=torch.randn(2, 3, 4, 16).int()), ValueError, "q must be float32, float64, float16 or bfloat16"),
        (
            dict(q=torch.randn(2, 3, 4, 0), k=torch.randn(2, 10, 2, 0), v=torch.randn(2, 10, 2, 0)),
            ValueError,
            r"q's head dim \(last dim\) must be in \[1, 256\], got 0",
        ),
        (
            dict(q=torch.randn(2, 3, 4, 260), k=torch.randn(2, 10, 2, 260), v=torch.randn(2, 10, 2, 260)),
            ValueError,
            r"must be in \[1, 256\], got 260",
        ),
        (dict(k=torch.randn(1, 10, 2, 16), v=torch.randn(1, 10, 2, 16)), ValueError, "k's batch 1 must equal q's 2"),
        (dict(q=torch.randn(2, 3, 4, 16, device="meta")), ValueError, "is on"),
        (dict(gate=torch.zeros(2)), ValueError, "gate must be a one-element tensor"),
        (dict(gate=torch.zeros(1, dtype=torch.int32)), ValueError, "gate must be float32"),
        (dict(gate=0.5), TypeError, "gate must be Optional"),
        (dict(softmax_scale=float("nan")), ValueError, "softmax_scale must be finite"),
        (dict(q=torch.randn(2, 3, 4, 16)[..., None]), ValueError, r"q must be \[B, Lq, H, D\] \(4 dims\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(overrides, error, match):
    with pytest.raises(error, match=match):
        vlmops.gated_cross_attention(**_bad(**overrides))


def test_op_itself_checks_ranges():
    args = _bad(kv_end=ranges([[(0, 11)] * 3, [(2, 4)] * 3])[1])
    with pytest.raises(ValueError, match="row 0 of batch 0 has key range .* kv_end <= Lk = 10"):
        torch.ops.vlmops.gated_cross_attention(*args.values(), None, None)


def test_backward_op_checks_its_inputs():
    args = _bad()
    q, k, v, start, end = args.values()
    out, lse = torch.ops.vlmops.gated_cross_attention(q, k, v, start, end, None, None)
    backward = torch.ops.vlmops.gated_cross_attention_backward
    with pytest.raises(ValueError, match="grad_out must be q's shape"):
        backward(out[:1], q, k, v, out, lse, start, end, None, None)
    with pytest.raises(ValueError, match=r"lse must be \[B, H, Lq\]"):
        backward(out, q, k, v, out, lse.transpose(1, 2), start, end, None, None)
    with pytest.raises(ValueError, match="out is on meta but grad_out is on cpu"):
        backward(out, q, k, v, out.to("meta"), lse, start, end, None, None)
    with pytest.raises(ValueError, match="kv_start <= kv_end"):
        backward(out, q, k, v, out, lse, end, start, None, None)


@pytest.mark.parametrize("gated", [False, True])
def test_backward_reference_matches_the_op(gated):
    from vlmops.reference.gated_cross_attention import gated_cross_attention_backward as reference_backward

    q, k, v = make_qkv(2, 5, 9, 4, 2, 12, torch.float64)
    start, end = ranges([[(0, 9), (2, 5), (2, 5), (0, 0), (8, 9)], [(0, 0), (0, 0), (3, 9), (3, 9), (0, 4)]])
    gate = torch.tensor([0.4], dtype=torch.float64) if gated else None
    grad_out = torch.randn(q.shape, dtype=torch.float64)
    out, lse = torch.ops.vlmops.gated_cross_attention(q, k, v, start, end, gate, 0.3)
    expected = torch.ops.vlmops.gated_cross_attention_backward(grad_out, q, k, v, out, lse, start, end, gate, 0.3)
    got = reference_backward(grad_out, q, k, v, out, lse, start, end, gate, 0.3)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e)


# ---- range builders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("only_immediate", [True, False])
def test_flamingo_block_attention_matches_openflamingo_definition(only_immediate):
    # The op on the builder's ranges vs OpenFlamingo's masked softmax (dense mask, zeroed rows).
    n, T, H, D = 4, 2, 2, 16
    locations = torch.zeros(2, 12, dtype=torch.bool)
    locations[0, [0, 5]] = True
    locations[1, [3, 4]] = True
    q, k, v = make_qkv(2, 12, T * n, H, H, D, torch.float64)
    start, end = vlmops.flamingo_kv_ranges(locations, n, only_immediate, num_media=T)
    mask = openflamingo_mask(locations, T, n, only_immediate)
    expected, _ = masked_attention(q, k, v, mask)
    assert max_abs(vlmops.gated_cross_attention(q, k, v, start, end), expected) < 1e-12


# ---- Triton kernels (the CUDA owner of the op) under the interpreter on CPU tensors -----------------
# Tiny blocks so 20 rows and 50 keys cross many tiles; ranges mix runs, empty rows and single rows.


@pytest.mark.parametrize("D,H,Hk", [(40, 4, 2), (72, 2, 2), (16, 3, 1), (1, 2, 1), (7, 2, 2)])
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("gated", [False, True])
def test_triton_forward_and_backward_match_reference(D, H, Hk, splits, gated):
    from vlmops.triton import gated_cross_attention as triton_attention

    B, Lq, Lk = 2, 20, 50
    q, k, v = make_qkv(B, Lq, Lk, H, Hk, D, torch.float32)
    start, end = mixed_ranges(B, Lq, Lk, seed=2)
    gate = torch.tensor([-0.6]) if gated else None
    out, lse = triton_attention.gated_cross_attention(q, k, v, start, end, gate, block_m=16, block_n=16, splits=splits)
    ref_out, ref_lse = reference_attention(
        q.double(), k.double(), v.double(), start, end, None if gate is None else gate.double()
    )
    assert max_abs(out, ref_out) < 2e-5
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert max_abs(lse[finite], ref_lse[finite]) < 2e-5
    if splits > 1:
        return  # the backward does not split
    grad_out = torch.randn(q.shape)
    grads = triton_attention.gated_cross_attention_backward(
        grad_out, q, k, v, out, lse, start, end, gate, block_m=16, block_n=16
    )
    tensors = [t.double() for t in (q, k, v)] + ([] if gate is None else [gate.double()])
    ref = grads_of(lambda *t: reference_attention(*t[:3], start, end, *t[3:])[0], tensors, grad_out.double())
    for g, r in zip(grads, ref):
        assert max_abs(g, r) < 1e-4 * max(1.0, r.abs().max().item())
    assert grads[3].numel() == (1 if gated else 0)


def test_triton_copies_operands_strided_along_head_dim():
    # The kernels step along D with stride 1: an expanded gradient (all strides 0) and k strided along
    # D must give what their contiguous copies give.
    from vlmops.triton import gated_cross_attention as triton_attention

    q, k, v = make_qkv(2, 20, 50, 2, 1, 32, torch.float32)
    start, end = mixed_ranges(2, 20, 50, seed=3)
    k_strided = torch.empty(*k.shape[:-1], 2 * k.shape[-1])[..., ::2].copy_(k)
    gate = torch.tensor([0.7])
    out, lse = triton_attention.gated_cross_attention(q, k_strided, v, start, end, gate, block_m=16, block_n=16)
    expected_out, expected_lse = triton_attention.gated_cross_attention(
        q, k, v, start, end, gate, block_m=16, block_n=16
    )
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    ones = torch.ones(()).expand(q.shape)
    grads = triton_attention.gated_cross_attention_backward(
        ones, q, k_strided, v, out, lse, start, end, gate, block_m=16, block_n=16
    )
    expected = triton_attention.gated_cross_attention_backward(
        ones.contiguous(), q, k, v, out, lse, start, end, gate, block_m=16, block_n=16
    )
    for g, e in zip(grads, expected):
        assert torch.equal(g, e)


def test_triton_decode_split_keys_and_fp16():
    from vlmops.triton import gated_cross_attention as triton_attention

    q, k, v = make_qkv(1, 1, 300, 4, 2, 32, torch.float16)
    start, end = ranges([[(37, 290)]])
    assert triton_attention.num_splits(1, 4, 1, 300, 16, 16) > 1  # decode splits the keys
    out, _ = triton_attention.gated_cross_attention(q, k, v, start, end, torch.tensor(0.8), block_n=16)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), start, end, torch.tensor(0.8, dtype=torch.float64))
    pytorch, _ = reference_attention(q, k, v, start, end, torch.tensor(0.8, dtype=torch.float16))
    assert max_abs(out, ref) <= 3 * max(max_abs(pytorch, ref), 1e-3)


def test_triton_clamps_bad_ranges_instead_of_reading_out_of_bounds():
    # The op's C++ entry cannot read CUDA ranges (no sync): the launcher, called directly here, takes
    # them unchecked and the kernel clamps them.
    from vlmops.triton import gated_cross_attention as triton_attention

    q, k, v = make_qkv(1, 3, 20, 2, 2, 16, torch.float32)
    start, end = ranges([[(0, 20), (5, 9), (0, 0)]])
    bad_start, bad_end = ranges([[(-4, 25), (5, 9), (7, 3)]])
    out, _ = triton_attention.gated_cross_attention(q, k, v, bad_start, bad_end, block_m=16, block_n=16)
    ref, _ = reference_attention(q.double(), k.double(), v.double(), start, end)
    assert max_abs(out, ref) < 2e-5


# ---- modules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("only_immediate", [True, False])
@pytest.mark.parametrize("use_cached_media", [False, True])
def test_flamingo_block_matches_openflamingo(only_immediate, use_cached_media):
    from vlmops.reference.gated_cross_attention import openflamingo_block

    torch.manual_seed(0)
    block = vlmops.nn.GatedCrossAttentionBlock(
        dim=48, dim_visual=40, dim_head=16, heads=3, only_attend_immediate_media=only_immediate
    ).double()
    with torch.no_grad():
        block.attn_gate.fill_(0.7)
        block.ff_gate.fill_(-0.4)
    state = block.state_dict()
    assert sorted(state) == sorted(
        [
            "attn.norm.weight",
            "attn.norm.bias",
            "attn.to_q.weight",
            "attn.to_kv.weight",
            "attn.to_out.weight",
            "attn_gate",
            "ff.0.weight",
            "ff.0.bias",
            "ff.1.weight",
            "ff.3.weight",
            "ff_gate",
        ]
    )
    x = torch.randn(2, 11, 48, dtype=torch.float64)
    media = torch.randn(2, 3, 5, 40, dtype=torch.float64)
    locations = torch.zeros(2, 11, dtype=torch.bool)
    # Sample 0 starts with text before its first image, sample 1 with an image.
    locations[0, [2, 6]] = True
    locations[1, [0, 4, 8]] = True
    ours = block(x, media, locations, use_cached_media=use_cached_media)
    expected = openflamingo_block(state, x, media, locations, 3, only_immediate, use_cached_media)
    rows = torch.ones(2, 11, dtype=torch.bool)
    if not only_immediate and not use_cached_media:
        # OpenFlamingo's all-masked softmax averages every image for text before the first image;
        # the block gives such rows no attention output (documented in flamingo_kv_ranges).
        rows[0, :2] = False
    assert max_abs(ours[rows], expected[rows]) < 1e-12
    assert max_abs(block(x, media), openflamingo_block(state, x, media, None, 3, only_immediate)) < 1e-12


def test_flamingo_block_gradients_reach_both_gates_at_zero():
    torch.manual_seed(0)
    block = vlmops.nn.GatedCrossAttentionBlock(dim=32, dim_visual=24, dim_head=8, heads=4).double()
    x = torch.randn(1, 6, 32, dtype=torch.float64)
    media = torch.randn(1, 2, 3, 24, dtype=torch.float64)
    locations = torch.tensor([[False, True, False, False, True, False]])
    block(x, media, locations).sum().backward()
    from vlmops.reference.gated_cross_attention import openflamingo_block

    state = {k: v.detach().clone().requires_grad_() for k, v in block.state_dict().items()}
    openflamingo_block(state, x, media, locations, 4, True).sum().backward()
    for name, p in block.named_parameters():
        assert max_abs(p.grad, state[name].grad) < 1e-10, name
    assert block.attn_gate.grad.abs().item() > 0  # Flamingo starts at alpha = 0


def tiny_mllama_text_config(**overrides):
    from transformers import MllamaTextConfig

    config = dict(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        cross_attention_layers=[1],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    config.update(overrides)
    return MllamaTextConfig(**config)


def mllama_inputs(B=2, Lq=9, n_images=2, n_tiles=2, tokens=5, hidden=64, seed=0):
    from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, Lq, n_images, n_tiles, dtype=torch.int64)
    mask[0, 3:6, 0, :] = 1  # three text rows before image 0
    mask[0, 6:, 1, :1] = 1  # image 1 has one real tile
    mask[1, 0:, 0, :] = 1
    states = torch.randn(B, n_images * n_tiles * tokens, hidden, generator=gen, dtype=torch.float64)
    hidden_states = torch.randn(B, Lq, hidden, generator=gen, dtype=torch.float64)
    additive, row_mask = _prepare_cross_attention_mask(mask, num_vision_tokens=tokens, dtype=torch.float64)
    return mask, states, hidden_states, additive, row_mask


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_mllama_cross_attention_matches_transformers_with_cache(attn_implementation):
    from transformers import DynamicCache
    from transformers.models.mllama.modeling_mllama import MllamaTextCrossAttention

    config = tiny_mllama_text_config()
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    theirs = MllamaTextCrossAttention(config, layer_idx=1).double().eval()
    ours = vlmops.nn.MllamaCrossAttention.from_mllama(theirs, tokens_per_tile=5)
    mask, states, hidden, additive, _ = mllama_inputs()
    cache_theirs, cache_ours = DynamicCache(config=config), DynamicCache(config=config)
    tol = 1e-12 if attn_implementation == "sdpa" else 1e-6  # eager's softmax runs in float32
    with torch.no_grad():
        expected, _ = theirs(hidden, states, cache=cache_theirs, attention_mask=additive)
        got, _ = ours(hidden, states, cache=cache_ours, attention_mask=additive)
        assert max_abs(got, expected) < tol
        for a, b in (
            (cache_ours.layers[1].keys, cache_theirs.layers[1].keys),
            (cache_ours.layers[1].values, cache_theirs.layers[1].values),
        ):
            assert torch.equal(a, b)
        # Decode steps: no new image, K/V read from the cache; one row of the mask per step.
        for _ in range(2):
            token = torch.randn(2, 1, 64, dtype=torch.float64)
            row = additive[:, :, -1:]
            expected, _ = theirs(token, None, cache=cache_theirs, attention_mask=row)
            got, _ = ours(token, None, cache=cache_ours, attention_mask=row)
            assert max_abs(got, expected) < tol


def test_mllama_decoder_layer_matches_transformers_and_meta_placement():
    from transformers.models.mllama.modeling_mllama import MllamaCrossAttentionDecoderLayer

    config = tiny_mllama_text_config()
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = MllamaCrossAttentionDecoderLayer(config, layer_idx=1).double().eval()
    with torch.no_grad():
        layer.cross_attn_attn_gate.fill_(0.6)
        layer.cross_attn_mlp_gate.fill_(-0.3)
    mask, states, hidden, additive, row_mask = mllama_inputs()
    with torch.no_grad():
        expected = layer(hidden, states, additive, None, row_mask)
        original = layer.cross_attn
        layer.cross_attn = vlmops.nn.MllamaCrossAttention.from_mllama(original, tokens_per_tile=5)
        got = layer(hidden, states, additive, None, row_mask)
        assert max_abs(got, expected) < 1e-12
        # Meta's placement: rows that see no image get no attention output before o_proj.
        meta = vlmops.nn.MllamaCrossAttention.from_mllama(original, tokens_per_tile=5, placement="meta")
        out, _ = meta(hidden, states, attention_mask=additive, full_text_row_masked_out_mask=row_mask)
        start, end = vlmops.mllama_kv_ranges(mask, 5)
        by_ranges, _ = meta(hidden, states, kv_ranges=(start, end))
        assert max_abs(out, by_ranges) < 1e-12
        assert torch.all(out[0, :3] == 0) and torch.all(out[:, 3:] != 0)
        with pytest.raises(ValueError, match="needs full_text_row_masked_out_mask"):
            meta(hidden, states, attention_mask=additive)
