"""The shared flash core of the Triton attention kernels (vlmops/triton/flash_core.py) and their
full/partial block schedule, under the Triton interpreter on CPU tensors:

- the schedule the kernels compute on the device (``tile_schedule``) equals its PyTorch mirror
  (``block_schedule``), and brute force over segment ids proves it: full blocks are seen by every row
  of their tile, no visible key lies outside the visited range, a single-segment tile has at most one
  partial block;
- varlen and gated attention match the float64 reference over many segment layouts (1-token and
  empty segments, 64-token windows, lengths that are no multiple of the tile), through pointers and
  through TMA tensor descriptors, which give bitwise the same result;
- a non-finite value in one segment never reaches another through a TMA-read partial block;
- the atomic-dQ backward matches the deterministic one, and skipped gradients are not computed.
"""

import pytest
import torch

from vlmops.reference.gated_cross_attention import dense_mask
from vlmops.reference.gated_cross_attention import gated_cross_attention as gated_reference
from vlmops.reference.gated_cross_attention import gated_cross_attention_backward as gated_reference_backward
from vlmops.reference.varlen_attention import varlen_attention as varlen_reference
from vlmops.reference.varlen_attention import varlen_attention_backward as varlen_reference_backward
from vlmops.triton import gated_cross_attention as triton_gated
from vlmops.triton import varlen_attention as triton_varlen
from vlmops.triton.varlen_attention import block_schedule, segment_ids, tile_schedules

LAYOUTS = {
    "one-token": [1] * 37,
    "empty-and-tiny": [0, 0, 5, 0, 1, 0, 3, 0],
    "windows-64": [64] * 5,
    "not-tile-multiples": [100, 37, 3, 50],
    "mixed": [0, 1, 63, 64, 65, 0, 130, 16, 17],
    "single": [150],
}


def cu_of(lengths):
    return torch.tensor([0] + torch.tensor(lengths, dtype=torch.long).cumsum(0).tolist(), dtype=torch.int32)


def randn(*shape, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def check_schedule(q_lengths, k_lengths, tile, block):
    """The device schedule equals the mirror, and brute force over segment ids proves it."""
    cu_q, cu_k = cu_of(q_lengths), cu_of(k_lengths)
    Nq, Nk = sum(q_lengths), sum(k_lengths)
    device = tile_schedules(cu_q, cu_k, Nq, Nk, tile, block).long()
    mirror = block_schedule(cu_q, cu_k, Nq, Nk, tile, block)
    assert torch.equal(device, mirror), (device, mirror)
    seg_q, seg_k = segment_ids(cu_q, Nq), segment_ids(cu_k, Nk)
    visible = seg_q[:, None] == seg_k[None, :]  # [Nq, Nk]: which keys each query sees
    for index, (begin, full_end, end) in enumerate(device.tolist()):
        rows = slice(index * tile, min((index + 1) * tile, Nq))
        assert 0 <= begin <= full_end <= end <= Nk and (full_end - begin) % block == 0
        seen = visible[rows].nonzero()[:, 1]
        assert bool(((seen >= begin) & (seen < end)).all()), "a visible key outside the visited range"
        for start in range(begin, full_end, block):
            assert bool(visible[rows, start : start + block].all()), "a full block hides a key from a row"
        single = seg_q[rows].unique().numel() == 1
        assert (full_end == begin) or single
        if single:
            assert end - full_end < block, "a single-segment tile with more than one partial block"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tile,block", [(16, 16), (32, 16), (16, 64), (128, 64)])
def test_device_schedule_matches_mirror_and_brute_force(layout, tile, block):
    lengths = LAYOUTS[layout]
    check_schedule(lengths, lengths, tile, block)


def test_cross_attention_schedule_and_bad_boundaries():
    check_schedule([5, 9, 20, 0], [30, 0, 7, 4], 16, 16)
    check_schedule([40, 3], [1, 70], 16, 32)
    # Boundaries past the token count or decreasing: the visited range stays inside [0, N].
    cu = torch.tensor([0, 9, 3], dtype=torch.int32)
    device = tile_schedules(cu, cu, 6, 6, 4, 4)
    assert torch.equal(device.long(), block_schedule(cu, cu, 6, 6, 4, 4))
    assert int(device.min()) >= 0 and int(device.max()) <= 6


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tma", [False, True])
def test_varlen_layouts_match_reference(layout, tma):
    lengths = LAYOUTS[layout]
    N, H, Hk, D = sum(lengths), 4, 2, 72
    q, k, v = (randn(N, h, D, seed=i) for i, h in enumerate((H, Hk, Hk)))
    cu = cu_of(lengths)
    # Tiles of 32 rows over 16-key blocks: windows of 64 span two tiles, tiny segments share one.
    out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=32, block_n=16, tma=tma)
    ref_out, ref_lse = varlen_reference(q.double(), k.double(), v.double(), cu, cu)
    assert max_abs(out, ref_out) < 2e-5
    finite = torch.isfinite(ref_lse)
    assert torch.equal(finite, torch.isfinite(lse)) and max_abs(lse[finite], ref_lse[finite]) < 2e-5
    grad_out = randn(N, H, D, seed=9)
    grads = triton_varlen.varlen_attention_backward(grad_out, q, k, v, out, lse, cu, cu, block_m=16, block_n=16)
    ref = varlen_reference_backward(grad_out.double(), q.double(), k.double(), v.double(), ref_out, ref_lse, cu, cu)
    for g, r in zip(grads, ref):
        assert max_abs(g, r) < 5e-5


@pytest.mark.parametrize("D", [8, 80, 112])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_varlen_tma_is_bitwise_the_pointer_path(D, dtype):
    lengths = LAYOUTS["mixed"]
    N = sum(lengths)
    q, k, v = (randn(N, 2, D, seed=i, dtype=dtype) for i in range(3))
    cu = cu_of(lengths)
    pointer = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=32, block_n=32, tma=False)
    tma = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=32, block_n=32, tma=True)
    assert torch.equal(pointer[0], tma[0]) and torch.equal(pointer[1], tma[1])
    if dtype == torch.float32:  # the backward reads K/V (dQ) and Q/dO (dK/dV) through TMA as well
        args = (randn(N, 2, D, seed=4), q, k, v, *pointer, cu, cu)
        expected = triton_varlen.varlen_attention_backward(*args, block_m=16, block_n=32, tma=False)
        got = triton_varlen.varlen_attention_backward(*args, block_m=16, block_n=32, tma=True)
        assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_tma_needs_aligned_strides():
    from vlmops.triton.flash_core import tma_capable

    assert tma_capable(randn(8, 2, 8, seed=0))
    assert not tma_capable(randn(8, 2, 3, seed=0))  # 12-byte head stride
    assert tma_capable(randn(8, 2, 16, seed=0)[..., :8])  # a view: 16-byte strides and base
    assert not tma_capable(randn(8, 2, 24, seed=0)[..., 1:9])  # a base 4 bytes past alignment
    assert not tma_capable(randn(0, 2, 8, seed=0))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_values_stay_in_their_segment_through_tma(value):
    # Forward: each segment fills one 16-row tile alone, and its one partial 32-key block reads the
    # other's keys (or rows past the end) through TMA: a non-finite key or value in segment 1 must not
    # reach segment 0 through a zero probability.
    cu = cu_of([16, 16])
    q, k, v = (randn(32, 2, 16, seed=i) for i in range(3))
    v[25, 1, 3] = value
    k[26, 0, 5] = value
    out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=16, block_n=32, tma=True)
    ref_out, ref_lse = varlen_reference(q.double(), k.double(), v.double(), cu, cu)
    assert max_abs(out[:16], ref_out[:16]) < 2e-5 and max_abs(lse[:, :16], ref_lse[:, :16]) < 2e-5


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_values_stay_in_their_segment_through_tma_backward(value):
    # Segment 0 (20 rows) alone fills query tile 0 and key tile 0 of 16: the dQ program's partial key
    # block [16, 32) reads segment 1's K/V rows 20-31 through TMA, the dK/dV program's partial query
    # block reads its Q/dO rows; poisoned, they must not reach segment 0's first 16 gradients.
    cu = cu_of([20, 12])
    q, k, v = (randn(32, 2, 16, seed=i) for i in range(3))
    out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=16, block_n=16)
    grad_out = randn(32, 2, 16, seed=4)
    for t, index in ((grad_out, (27, 0, 2)), (q, (28, 1, 1)), (k, (26, 0, 5)), (v, (25, 1, 3))):
        t[index] = value
    grads = triton_varlen.varlen_attention_backward(
        grad_out, q, k, v, out, lse, cu, cu, block_m=16, block_n=16, tma=True
    )
    ref = varlen_reference_backward(grad_out.double(), q.double(), k.double(), v.double(), out, lse, cu, cu)
    for g, r in zip(grads, ref):
        assert max_abs(g[:16], r[:16]) < 5e-5


@pytest.mark.parametrize("layout", ["not-tile-multiples", "one-token"])
def test_atomic_dq_matches_the_deterministic_backward(layout):
    lengths = LAYOUTS[layout]
    N, H, Hk, D = sum(lengths), 4, 2, 40
    q, k, v = (randn(N, h, D, seed=i) for i, h in enumerate((H, Hk, Hk)))
    cu = cu_of(lengths)
    out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=16, block_n=16)
    grad_out = randn(N, H, D, seed=7)
    args = (grad_out, q, k, v, out, lse, cu, cu)
    deterministic = triton_varlen.varlen_attention_backward(*args, block_m=16, block_n=16)
    atomic = triton_varlen.varlen_attention_backward(*args, block_m=16, block_n=16, atomic_dq=True)
    assert max_abs(atomic[0], deterministic[0]) < 1e-5
    assert torch.equal(atomic[1], deterministic[1]) and torch.equal(atomic[2], deterministic[2])


@pytest.mark.parametrize("atomic_dq", [False, True])
def test_backward_skips_gradients_that_are_not_needed(atomic_dq):
    lengths = LAYOUTS["not-tile-multiples"]
    N = sum(lengths)
    q, k, v = (randn(N, 2, 16, seed=i) for i in range(3))
    cu = cu_of(lengths)
    out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, block_m=32, block_n=32)
    args = (randn(N, 2, 16, seed=5), q, k, v, out, lse, cu, cu)
    kwargs = dict(block_m=16, block_n=32, atomic_dq=atomic_dq)
    full = triton_varlen.varlen_attention_backward(*args, **kwargs)
    deterministic_dq = triton_varlen.varlen_attention_backward(*args, block_m=16, block_n=32)[0]
    only_q = triton_varlen.varlen_attention_backward(*args, needs=(True, False, False), **kwargs)
    only_kv = triton_varlen.varlen_attention_backward(*args, needs=(False, True, True), **kwargs)
    # grad_q alone runs the dQ pass whichever variant is asked for: nothing else is computed.
    assert torch.equal(only_q[0], deterministic_dq) and not only_q[1].any() and not only_q[2].any()
    assert not only_kv[0].any() and torch.equal(only_kv[1], full[1]) and torch.equal(only_kv[2], full[2])
    none = triton_varlen.varlen_attention_backward(*args, needs=(False, False, False), **kwargs)
    assert not any(g.any() for g in none)


def gated_case(ranges, Lq, Lk, H=4, Hk=2, D=24, B=2):
    q = randn(B, Lq, H, D, seed=1)
    k, v = randn(B, Lk, Hk, D, seed=2), randn(B, Lk, Hk, D, seed=3)
    start = torch.tensor([[r[0] for r in ranges]] * B, dtype=torch.int32)
    end = torch.tensor([[r[1] for r in ranges]] * B, dtype=torch.int32)
    return q, k, v, start, end


GATED_RANGES = {
    # Every row shares one range (text after all images): full blocks and one partial block.
    "uniform": [(0, 70)] * 40,
    # Rows of the first tile share [5, 53), the rest differ (text after each of two images).
    "two-images": [(5, 53)] * 16 + [(5, 70)] * 20 + [(0, 0)] * 4,
    # Ranges that change row by row, some empty.
    "ragged": [(r % 7, (r * 5) % 71) for r in range(40)],
}


@pytest.mark.parametrize("layout", GATED_RANGES)
@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("splits", [None, 3])
def test_gated_ranges_match_reference(layout, tma, splits):
    q, k, v, start, end = gated_case(GATED_RANGES[layout], 40, 70)
    gate = torch.tensor([0.7])
    out, lse = triton_gated.gated_cross_attention(
        q, k, v, start, end, gate, block_m=16, block_n=16, splits=splits, tma=tma
    )
    ref_out, ref_lse = gated_reference(q.double(), k.double(), v.double(), start, end, gate.double())
    assert max_abs(out, ref_out) < 2e-5
    finite = torch.isfinite(ref_lse)
    assert torch.equal(finite, torch.isfinite(lse)) and max_abs(lse[finite], ref_lse[finite]) < 2e-5
    if splits is None and not tma:
        grad_out = randn(*q.shape, seed=4)
        grads = triton_gated.gated_cross_attention_backward(
            grad_out, q, k, v, out, lse, start, end, gate, block_m=16, block_n=16
        )
        ref = gated_reference_backward(
            grad_out.double(), q.double(), k.double(), v.double(), ref_out, ref_lse, start, end, gate.double()
        )
        for g, r in zip(grads, ref):
            assert max_abs(g, r) < 5e-5


def test_gated_tma_is_bitwise_the_pointer_path():
    q, k, v, start, end = gated_case(GATED_RANGES["two-images"], 40, 70, D=80)
    pointer = triton_gated.gated_cross_attention(q, k, v, start, end, None, block_m=16, block_n=32, tma=False)
    tma = triton_gated.gated_cross_attention(q, k, v, start, end, None, block_m=16, block_n=32, tma=True)
    assert torch.equal(pointer[0], tma[0]) and torch.equal(pointer[1], tma[1])


def test_hopper_tiles_and_the_window_bound():
    from vlmops.triton.varlen_attention import HOPPER_WINDOW_CONFIG, _block_sizes

    for D in (64, 72, 80, 128):
        bm, bn, warps, stages = _block_sizes(D, 90)
        assert bm == 128 and 64 <= bn <= 128 and warps == 8 and stages >= 2
        # A caller that bounds every segment by 64 rows (window layers) gets one-warpgroup tiles;
        # a larger bound, or none, keeps the 128-row tiles; Ampere keeps its tiles either way.
        assert _block_sizes(D, 90, max_seqlen_q=64) == HOPPER_WINDOW_CONFIG
        assert _block_sizes(D, 90, max_seqlen_q=65) == (bm, bn, warps, stages)
        assert _block_sizes(D, 80, max_seqlen_q=64) == _block_sizes(D, 80)


def test_gated_backward_skips_gradients_that_are_not_needed():
    q, k, v, start, end = gated_case(GATED_RANGES["two-images"], 40, 70)
    gate = torch.tensor([0.7])
    out, lse = triton_gated.gated_cross_attention(q, k, v, start, end, gate, block_m=16, block_n=16)
    args = (randn(*q.shape, seed=4), q, k, v, out, lse, start, end, gate)
    full = triton_gated.gated_cross_attention_backward(*args, block_m=16, block_n=16)
    only_kv = triton_gated.gated_cross_attention_backward(
        *args, block_m=16, block_n=16, needs=(False, True, True, False)
    )
    assert not only_kv[0].any() and not only_kv[3].any()
    assert torch.equal(only_kv[1], full[1]) and torch.equal(only_kv[2], full[2])
    # The gate's gradient comes from the dQ kernel: asking for it alone runs that kernel only.
    only_gate = triton_gated.gated_cross_attention_backward(
        *args, block_m=16, block_n=16, needs=(False, False, False, True)
    )
    assert torch.equal(only_gate[3], full[3]) and not only_gate[1].any() and not only_gate[2].any()


def sdpa_per_segment(q, k, v, cu):
    """PyTorch's attention one segment at a time in the inputs' dtype (the rounding yardstick)."""
    out, bounds, group = torch.zeros_like(q), cu.tolist(), q.shape[1] // k.shape[1]
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        if b1 > b0:
            qs, ks, vs = (t[b0:b1].transpose(0, 1) for t in (q, k, v))
            ks, vs = ks.repeat_interleave(group, 0), vs.repeat_interleave(group, 0)
            out[b0:b1] = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1)
    return out


@pytest.mark.requires_cuda
@pytest.mark.parametrize("D", [64, 72, 80, 128])
@pytest.mark.parametrize("windows", [False, True])
def test_cuda_tma_pointer_and_atomic_paths_within_pytorch_rounding(D, windows):
    # On a GPU the TMA path is real (sm_90): both paths, both dQ variants and the window tiles
    # (max_seqlen_q = 64) against float64, each within 3x PyTorch's own bf16 error.
    lengths = [64] * 40 + [37, 1, 0, 27] if windows else [0, 1, 63, 64, 65, 1000, 64, 17, 2048]
    N, H, Hk = sum(lengths), 8, 4
    q, k, v = (randn(N, h, D, seed=i, dtype=torch.bfloat16).cuda() for i, h in enumerate((H, Hk, Hk)))
    cu = cu_of(lengths).cuda()
    max_seqlen = 64 if windows else None
    ref_out, ref_lse = varlen_reference(q.double(), k.double(), v.double(), cu, cu)
    bound = 3 * max_abs(sdpa_per_segment(q, k, v, cu), ref_out)
    grad_out = randn(N, H, D, seed=9, dtype=torch.bfloat16).cuda()
    ref_grads = varlen_reference_backward(
        grad_out.double(), q.double(), k.double(), v.double(), ref_out, ref_lse, cu, cu
    )
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    sdpa_per_segment(*leaves, cu).backward(grad_out)
    grad_bounds = [3 * max_abs(leaf.grad, r) for leaf, r in zip(leaves, ref_grads)]
    for tma in (False, True):
        out, lse = triton_varlen.varlen_attention(q, k, v, cu, cu, max_seqlen, max_seqlen, tma=tma)
        assert max_abs(out, ref_out) <= bound, tma
        for atomic_dq in (False, True):
            grads = triton_varlen.varlen_attention_backward(
                grad_out, q, k, v, out, lse, cu, cu, tma=tma, atomic_dq=atomic_dq
            )
            for g, r, b in zip(grads, ref_grads, grad_bounds):
                assert max_abs(g, r) <= b, (tma, atomic_dq)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("Lq", [1, 40, 300])
def test_cuda_gated_tma_and_pointer_paths_agree(Lq):
    q, k, v, start, end = gated_case([(r % 3 * 100, 700) for r in range(Lq)], Lq, 1601 * 2, H=8, Hk=2, D=128)
    q, k, v, start, end = (t.cuda() for t in (q.bfloat16(), k.bfloat16(), v.bfloat16(), start, end))
    gate = torch.tensor([0.7], device="cuda")
    ref_out, _ = gated_reference(q.double(), k.double(), v.double(), start, end, gate.double())
    mask = dense_mask(start, end, k.shape[1])[:, None]  # [B, 1, Lq, Lk]
    qs, ks, vs = (t.transpose(1, 2) for t in (q, k.repeat_interleave(4, 2), v.repeat_interleave(4, 2)))
    sdpa = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask).transpose(1, 2)
    bound = 3 * max_abs(sdpa * torch.tanh(gate).bfloat16(), ref_out)
    for tma in (False, True):
        out, _ = triton_gated.gated_cross_attention(q, k, v, start, end, gate, tma=tma)
        assert max_abs(out, ref_out) <= bound, tma
