"""Device parity of the attention ops: varlen_attention (+ qwen2_5_vl_window_index) and
gated_cross_attention, run through the public ops on every device in DEVICES.

On CPU this runs the C++ kernels; on CUDA the Triton kernels (their only owner there), which the
CPU interpreter tests in test_varlen_attention.py / test_gated_cross_attention.py run only with tiny
blocks. These tests use the launchers' real GPU block sizes, so the shapes cross real tile edges
(BLOCK_M 128 / BLOCK_N 64 forward, 64 x 32 and 32 x 64 backward, 16-row decode tiles with split-K).

Every oracle is float64 on CPU (vlmops.reference). Tolerances:
- float32: fixed and tight. The Triton kernels run float32 dots with input_precision="ieee" (no
  TF32), so a tf32-sized error is a bug.
- bfloat16 / float16: flash-attention's rule, within 3x of PyTorch's own error computing the same
  thing in that dtype on the same device, plus half an ulp of the largest value (so a baseline that
  happens to round exactly cannot make the bound zero).
"""

import importlib
import inspect

import pytest
import torch
from conftest import DEVICES, capture_cuda_graph
from test_gated_cross_attention import make_qkv as make_gated
from test_gated_cross_attention import mixed_ranges
from test_varlen_attention import cu_seqlens_of, make_qkv, sdpa_per_segment

import vlmops
from vlmops.reference import gated_cross_attention as reference_gated
from vlmops.reference import varlen_attention as reference_varlen
from vlmops.reference.gated_cross_attention import dense_mask

LOW = (torch.bfloat16, torch.float16)


def max_abs(a, b):
    return (a.detach().cpu().double() - b.detach().cpu().double()).abs().max().item() if a.numel() else 0.0


def bound(dtype, ref, pytorch=None, fp32_tol=2e-5):
    """Allowed max-abs error of a result of `dtype` against the float64 `ref`."""
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    if dtype == torch.float32:
        return fp32_tol * scale
    return 3 * max_abs(pytorch, ref) + 0.5 * torch.finfo(dtype).eps * scale


def grads_of(fn, tensors, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    fn(*leaves).backward(grad_out)
    return [t.grad for t in leaves]


def assert_finite(*tensors):
    for t in tensors:
        assert not torch.isnan(t).any(), "NaN in an output"


# ---- varlen_attention --------------------------------------------------------------------------------

# Around the forward's 128-row / 64-key tiles and the backward's 64/32/16-row tiles, empty segments,
# single tokens, and one long segment (many key blocks, several query tiles).
VARLEN_LENGTHS = [0, 1, 63, 64, 65, 127, 129, 0, 1000]
VARLEN_BWD_LENGTHS = [1, 63, 64, 0, 65, 127, 129, 300]


def varlen_ref(q, k, v, cu_q, cu_k=None, scale=None):
    """float64 CPU oracle of (out, lse)."""
    cu_k = cu_q if cu_k is None else cu_k
    return reference_varlen(
        q.cpu().double(), k.cpu().double(), v.cpu().double(), cu_q.cpu(), cu_k.cpu(), softmax_scale=scale
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 72, 80, 128])  # SigLIP 72, Qwen2.5-VL 80, InternViT 128, CLIP 64
def test_varlen_forward_matches_reference_across_tile_edges(device, dtype, D):
    q, k, v = make_qkv(VARLEN_LENGTHS, 4, 2, D, dtype)
    cu = cu_seqlens_of(VARLEN_LENGTHS)
    ref_out, ref_lse = varlen_ref(q, k, v, cu)
    qd, kd, vd, cud = (t.to(device) for t in (q, k, v, cu))
    out, lse = vlmops.varlen_attention(qd, kd, vd, cud, return_lse=True)
    assert out.device.type == device and out.dtype == dtype and out.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == (4, q.shape[0])
    assert_finite(out, lse)
    pytorch = sdpa_per_segment(qd, kd, vd, cud, cud) if dtype in LOW else None
    assert max_abs(out, ref_out) <= bound(dtype, ref_out, pytorch)
    # lse is float32 from float32 accumulation whatever the input dtype: compare it to the reference
    # of the rounded inputs, loosely for low precision (scores of up to ~D-sized magnitude).
    assert max_abs(lse, ref_lse) <= (2e-5 if dtype == torch.float32 else 2e-3) * max(1.0, ref_lse.abs().max().item())
    # The torch.ops entry point, as the patched models call it, gives the same result.
    direct, direct_lse = torch.ops.vlmops.varlen_attention(qd, kd, vd, cud, cud, None, None, None)
    assert torch.equal(direct, out) and torch.equal(direct_lse, lse)


# Every head dim in bfloat16 (the GPU dtype of the towers), float32 at a padded and a 128 dim,
# float16 once.
BWD_CASES = [
    (torch.bfloat16, 64),
    (torch.bfloat16, 72),
    (torch.bfloat16, 80),
    (torch.bfloat16, 128),
    (torch.float32, 128),
    (torch.float16, 80),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,D", BWD_CASES)
def test_varlen_backward_matches_reference(device, dtype, D):
    q, k, v = make_qkv(VARLEN_BWD_LENGTHS, 4, 2, D, dtype, seed=1)
    cu = cu_seqlens_of(VARLEN_BWD_LENGTHS)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    ref = grads_of(lambda a, b, c: reference_varlen(a, b, c, cu)[0], [t.double() for t in (q, k, v)], grad_out.double())
    cud = cu.to(device)
    tensors = [t.to(device) for t in (q, k, v)]
    ours = grads_of(lambda a, b, c: vlmops.varlen_attention(a, b, c, cud), tensors, grad_out.to(device))
    pytorch = (
        grads_of(lambda a, b, c: sdpa_per_segment(a, b, c, cud, cud), tensors, grad_out.to(device))
        if dtype in LOW
        else [None] * 3
    )
    for name, g, p, r in zip("qkv", ours, pytorch, ref):
        assert g.dtype == dtype and g.shape == r.shape and g.device.type == device, name
        assert_finite(g)
        assert max_abs(g, r) <= bound(dtype, r, p, fp32_tol=5e-5), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("H,Hk", [(8, 1), (6, 3)])
def test_varlen_grouped_query_heads_forward_and_backward(device, H, Hk):
    lengths = [65, 0, 130, 1]
    q, k, v = make_qkv(lengths, H, Hk, 64, torch.float32, seed=3)
    cu = cu_seqlens_of(lengths)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(4))
    ref_out, _ = varlen_ref(q, k, v, cu)
    ref = grads_of(lambda a, b, c: reference_varlen(a, b, c, cu)[0], [t.double() for t in (q, k, v)], grad_out.double())
    cud = cu.to(device)
    tensors = [t.to(device) for t in (q, k, v)]
    assert max_abs(vlmops.varlen_attention(*tensors, cud), ref_out) < 2e-5
    for name, g, r in zip(
        "qkv", grads_of(lambda a, b, c: vlmops.varlen_attention(a, b, c, cud), tensors, grad_out.to(device)), ref
    ):
        assert max_abs(g, r) < 5e-5 * max(1.0, r.abs().max().item()), name


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_cross_segments_and_rows_without_keys(device):
    # Own key boundaries; segment 2 has 70 queries and no keys (zero output, -inf lse, zero grads);
    # segment 1 has keys but no queries (its keys get zero grads); max_seqlen and a softmax scale given.
    q_lengths, k_lengths = [5, 0, 70, 3, 129], [9, 4, 0, 130, 65]
    q, k, v = make_qkv(q_lengths, 4, 2, 80, torch.float32, k_lengths=k_lengths, seed=5)
    cu_q, cu_k = cu_seqlens_of(q_lengths), cu_seqlens_of(k_lengths)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(6))
    ref_out, ref_lse = varlen_ref(q, k, v, cu_q, cu_k, 0.3)
    ref = grads_of(
        lambda a, b, c: reference_varlen(a, b, c, cu_q, cu_k, softmax_scale=0.3)[0],
        [t.double() for t in (q, k, v)],
        grad_out.double(),
    )
    cu_qd, cu_kd = cu_q.to(device), cu_k.to(device)

    def run(a, b, c):
        return vlmops.varlen_attention(
            a, b, c, cu_qd, cu_kd, max_seqlen_q=129, max_seqlen_k=130, softmax_scale=0.3, return_lse=True
        )

    tensors = [t.to(device) for t in (q, k, v)]
    out, lse = run(*tensors)
    assert_finite(out)
    assert max_abs(out, ref_out) < 2e-5
    assert torch.equal(torch.isneginf(lse).cpu(), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert max_abs(lse.cpu()[finite], ref_lse[finite]) < 2e-5
    assert torch.all(out[5:75] == 0)
    grads = grads_of(lambda a, b, c: run(a, b, c)[0], tensors, grad_out.to(device))
    for name, g, r in zip("qkv", grads, ref):
        assert_finite(g)
        assert max_abs(g, r) < 5e-5 * max(1.0, r.abs().max().item()), name
    assert torch.all(grads[0][5:75] == 0)
    assert torch.all(grads[1][9:13] == 0) and torch.all(grads[2][9:13] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_reads_strided_views_of_packed_qkv(device, dtype):
    # q, k, v as views of one fused projection [N, 3, H, D] (row stride 3 * H * D), grad_out a
    # transposed view: no copies, and the gradients land in plain [N, H, D] tensors.
    lengths = [33, 64, 1, 200]
    N, H, D = sum(lengths), 4, 80
    gen = torch.Generator().manual_seed(7)
    qkv = torch.randn(N, 3, H, D, generator=gen, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(H, N, D, generator=gen, dtype=torch.float64).to(dtype).transpose(0, 1)
    cu = cu_seqlens_of(lengths)
    ref_out, _ = varlen_ref(*qkv.unbind(1), cu)
    ref = grads_of(
        lambda a, b, c: reference_varlen(a, b, c, cu)[0], [t.double() for t in qkv.unbind(1)], grad_out.double()
    )
    qkv_d, cud, grad_d = qkv.to(device), cu.to(device), grad_out.to(device)
    assert not grad_d.is_contiguous()
    q, k, v = qkv_d.unbind(1)
    out = vlmops.varlen_attention(q, k, v, cud)
    pytorch = sdpa_per_segment(q, k, v, cud, cud) if dtype in LOW else None
    assert max_abs(out, ref_out) <= bound(dtype, ref_out, pytorch)
    leaf = qkv_d.detach().clone().requires_grad_()
    vlmops.varlen_attention(*leaf.unbind(1), cud).backward(grad_d)
    if dtype in LOW:
        pytorch_grads = grads_of(lambda a, b, c: sdpa_per_segment(a, b, c, cud, cud), list(qkv_d.unbind(1)), grad_d)
    else:
        pytorch_grads = [None] * 3
    for name, g, p, r in zip("qkv", leaf.grad.unbind(1), pytorch_grads, ref):
        assert max_abs(g, r) <= bound(dtype, r, p, fp32_tol=5e-5), name


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_window_index_on_device_matches_cpu_and_drives_attention(device):
    # Qwen2.5-VL's layout (window 112, patch 14, merge 2): cu_window_seqlens built on the device,
    # with trailing zero-length windows, fed straight to the attention.
    grid_thw = torch.tensor([[1, 18, 30], [2, 10, 6], [1, 2, 2]])
    N = int((grid_thw[:, 0] * grid_thw[:, 1] * grid_thw[:, 2]).sum())
    expected = vlmops.qwen2_5_vl_window_index(grid_thw, 112, 14, 2, num_patches=N)
    got = vlmops.qwen2_5_vl_window_index(grid_thw.to(device), 112, 14, 2, num_patches=N)
    for e, g in zip(expected, got):
        assert g.device.type == device and g.dtype == e.dtype and torch.equal(g.cpu(), e)
    cu = got[2]
    q, k, v = make_qkv([N], 2, 2, 80, torch.float32, seed=8)
    ref_out, _ = varlen_ref(q, k, v, torch.unique_consecutive(expected[2]))
    out = vlmops.varlen_attention(q.to(device), k.to(device), v.to(device), cu)
    assert max_abs(out, ref_out) < 2e-5


@pytest.mark.requires_cuda
def test_varlen_forward_and_window_builder_capture_in_cuda_graph():
    # No host sync in the forward: capturable; replays see new inputs written into the same buffers.
    grid_thw = torch.tensor([[1, 18, 30], [2, 10, 6]], device="cuda")
    N = int((grid_thw[:, 0] * grid_thw[:, 1] * grid_thw[:, 2]).sum().item())
    q, k, v = (t.cuda() for t in make_qkv([N], 4, 2, 80, torch.bfloat16, seed=10))

    def forward():
        _, _, cu = vlmops.qwen2_5_vl_window_index(grid_thw, 112, 14, 2, num_patches=N)
        return vlmops.varlen_attention(q, k, v, cu, return_lse=True)

    graph, (out, lse) = capture_cuda_graph(forward)
    for seed in (11, 12):
        for dst, src in zip((q, k, v), make_qkv([N], 4, 2, 80, torch.bfloat16, seed=seed)):
            dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        eager_out, eager_lse = forward()
        assert torch.equal(out, eager_out) and torch.equal(lse, eager_lse)
        _, _, cu = vlmops.qwen2_5_vl_window_index(grid_thw.cpu(), 112, 14, 2, num_patches=N)
        ref_out, _ = varlen_ref(q, k, v, cu)
        assert max_abs(out, ref_out) <= bound(torch.bfloat16, ref_out, sdpa_per_segment(q, k, v, cu.cuda(), cu.cuda()))


# ---- gated_cross_attention ---------------------------------------------------------------------------


def gated_ref(q, k, v, start, end, gate=None, scale=None):
    return reference_gated(
        q.cpu().double(),
        k.cpu().double(),
        v.cpu().double(),
        start.cpu(),
        end.cpu(),
        None if gate is None else gate.cpu().double(),
        scale,
    )


def pytorch_gated(q, k, v, start, end, gate=None, scale=None):
    """PyTorch's own computation in the inputs' dtype and device (scores and P @ V in that dtype,
    softmax in float32 as SDPA's math path does); rows without keys give zeros, differentiably."""
    B, Lq, H, D = q.shape
    group = H // k.shape[2]
    scale = D**-0.5 if scale is None else scale
    mask = dense_mask(start, end, k.shape[1])[:, None]  # [B, 1, Lq, Lk]
    seen = mask.any(-1, keepdim=True)
    qs = q.transpose(1, 2)
    ks, vs = (t.transpose(1, 2).repeat_interleave(group, 1) for t in (k, v))
    scores = ((qs @ ks.transpose(-1, -2)) * scale).float().masked_fill(~mask, float("-inf"))
    probs = (torch.softmax(torch.where(seen, scores, 0.0), -1) * seen).to(q.dtype)
    out = (probs @ vs).transpose(1, 2)
    return out if gate is None else out * torch.tanh(gate).reshape(()).to(q.dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [128, 40])  # Llama 3.2 Vision / OpenFlamingo 128; 40 pads to 48 = 32 + 16
def test_gated_prefill_matches_reference(device, dtype, D):
    # 150 rows cross the 128-row tile; 700 keys cross 64-key blocks (and, on CUDA, split-K's chunks:
    # B * H * cdiv(Lq, 128) = 16 programs < 256, so the keys split in 3).
    B, Lq, Lk, H, Hk = 2, 150, 700, 4, 2
    q, k, v = make_gated(B, Lq, Lk, H, Hk, D, dtype)
    start, end = mixed_ranges(B, Lq, Lk)
    gate = torch.tensor([0.7], dtype=dtype)
    ref_out, ref_lse = gated_ref(q, k, v, start, end, gate)
    qd, kd, vd, sd, ed, gd = (t.to(device) for t in (q, k, v, start, end, gate))
    out, lse = vlmops.gated_cross_attention(qd, kd, vd, sd, ed, gd, return_lse=True)
    assert out.dtype == dtype and out.shape == q.shape and out.device.type == device
    assert lse.shape == (B, H, Lq) and lse.dtype == torch.float32
    assert_finite(out)
    pytorch = pytorch_gated(qd, kd, vd, sd, ed, gd) if dtype in LOW else None
    assert max_abs(out, ref_out) <= bound(dtype, ref_out, pytorch)
    assert torch.equal(torch.isneginf(lse).cpu(), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert max_abs(lse.cpu()[finite], ref_lse[finite]) <= (2e-5 if dtype == torch.float32 else 2e-3) * max(
        1.0, ref_lse[finite].abs().max().item()
    )
    assert torch.all(out[ed == sd] == 0)
    direct, direct_lse = torch.ops.vlmops.gated_cross_attention(qd, kd, vd, sd, ed, gd, None)
    assert torch.equal(direct, out) and torch.equal(direct_lse, lse)


def decode_ranges(Lk):
    """One text row per batch entry: 3 of 4 Mllama images, no image, a short range (most key splits
    see nothing), a range that is not block-aligned."""
    return (
        torch.tensor([[1601], [0], [5], [0]], dtype=torch.int32),
        torch.tensor([[Lk], [0], [70], [3333]], dtype=torch.int32),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,gated", [(torch.float32, False), (torch.bfloat16, True)])
def test_gated_decode_split_keys_forward_and_backward(device, dtype, gated):
    from vlmops.triton.gated_cross_attention import num_splits

    B, Lq, Lk, H, Hk, D = 4, 1, 4 * 1601, 4, 2, 128  # Llama 3.2 Vision decode against 4 x 1601 keys
    assert num_splits(B, H, Lq, Lk, 16, 64) > 1  # the CUDA launcher takes the split-K path here
    q, k, v = make_gated(B, Lq, Lk, H, Hk, D, dtype, seed=1)
    start, end = decode_ranges(Lk)
    gate = torch.tensor(-0.8, dtype=dtype) if gated else None  # shape [] this time
    tensors = [q, k, v] + ([gate] if gated else [])
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    ref_out, ref_lse = gated_ref(q, k, v, start, end, gate)
    ref = grads_of(
        lambda *t: reference_gated(*t[:3], start, end, *t[3:])[0], [t.double() for t in tensors], grad_out.double()
    )
    sd, ed = start.to(device), end.to(device)
    dev = [t.to(device) for t in tensors]
    out, lse = vlmops.gated_cross_attention(*dev[:3], sd, ed, *dev[3:], return_lse=True)
    assert_finite(out)
    pytorch = pytorch_gated(*dev[:3], sd, ed, *dev[3:]) if dtype in LOW else None
    assert max_abs(out, ref_out) <= bound(dtype, ref_out, pytorch)
    assert torch.all(out[1] == 0) and torch.all(torch.isneginf(lse[1]))
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse).cpu(), finite)
    assert max_abs(lse.cpu()[finite], ref_lse[finite]) <= (2e-5 if dtype == torch.float32 else 2e-3) * max(
        1.0, ref_lse[finite].abs().max().item()
    )
    grads = grads_of(lambda *t: vlmops.gated_cross_attention(*t[:3], sd, ed, *t[3:]), dev, grad_out.to(device))
    pytorch_grads = (
        grads_of(lambda *t: pytorch_gated(*t[:3], sd, ed, *t[3:]), dev, grad_out.to(device))
        if dtype in LOW
        else [None] * len(dev)
    )
    for name, g, p, r in zip("qkvg", grads, pytorch_grads, ref):
        assert g.dtype == dtype and g.shape == r.shape, name
        assert_finite(g)
        assert max_abs(g, r) <= bound(dtype, r, p, fp32_tol=1e-3 if name == "g" else 1e-4), name
    assert torch.all(grads[0][1] == 0)


@pytest.mark.parametrize("device", DEVICES)
# alpha 0 is Flamingo's initialization: the gate must still get a gradient (and q/k/v zero ones).
@pytest.mark.parametrize(
    "dtype,D,H,Hk,alpha",
    [
        (torch.float32, 128, 4, 2, None),
        (torch.float32, 128, 4, 2, -0.8),
        (torch.bfloat16, 128, 4, 2, None),
        (torch.bfloat16, 128, 4, 2, -0.8),
        (torch.float16, 128, 4, 2, -0.8),
        (torch.float32, 40, 8, 1, 0.0),
        (torch.float32, 40, 8, 1, -0.8),
    ],
)
def test_gated_prefill_backward_matches_reference(device, dtype, D, H, Hk, alpha):
    # 150 rows cross the backward's 64-row dQ and 32-row dK/dV tiles; 200 keys cross 32/64-key blocks.
    B, Lq, Lk = 2, 150, 200
    q, k, v = make_gated(B, Lq, Lk, H, Hk, D, dtype, seed=3)
    start, end = mixed_ranges(B, Lq, Lk, seed=4)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    tensors = [q, k, v] + ([] if alpha is None else [torch.tensor([alpha], dtype=dtype)])
    ref = grads_of(
        lambda *t: reference_gated(*t[:3], start, end, *t[3:])[0], [t.double() for t in tensors], grad_out.double()
    )
    sd, ed = start.to(device), end.to(device)
    dev = [t.to(device) for t in tensors]
    grads = grads_of(lambda *t: vlmops.gated_cross_attention(*t[:3], sd, ed, *t[3:]), dev, grad_out.to(device))
    pytorch_grads = (
        grads_of(lambda *t: pytorch_gated(*t[:3], sd, ed, *t[3:]), dev, grad_out.to(device))
        if dtype in LOW
        else [None] * len(dev)
    )
    for name, g, p, r in zip("qkvg", grads, pytorch_grads, ref):
        assert g.dtype == dtype and g.shape == r.shape and g.device.type == device, name
        assert_finite(g)
        # the gate's gradient sums every element of the output
        assert max_abs(g, r) <= bound(dtype, r, p, fp32_tol=1e-3 if name == "g" else 1e-4), name
    assert torch.all(grads[0][ed == sd] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("builder", ["mllama", "flamingo"])
def test_gated_ranges_built_on_device_drive_the_op(device, builder):
    B, Lq, H, Hk, D = 2, 140, 4, 4, 128
    if builder == "mllama":
        tokens = 37
        mask = torch.zeros(B, Lq, 2, 4, dtype=torch.int64)
        mask[0, 20:90, 0, :4] = 1  # rows 0-19 see nothing: empty ranges
        mask[0, 90:, 1, :2] = 1  # image 1 has 2 real tiles
        mask[1, 1:, 0, :3] = 1
        Lk = 2 * 4 * tokens
        expected = vlmops.mllama_kv_ranges(mask, tokens)
        got = vlmops.mllama_kv_ranges(mask.to(device), tokens)
    else:
        tokens, T = 64, 3
        locations = torch.zeros(B, Lq, dtype=torch.bool)
        locations[0, [10, 70, 100]] = True
        locations[1, [0, 130]] = True
        Lk = T * tokens
        expected = vlmops.flamingo_kv_ranges(locations, tokens, True, num_media=T)
        got = vlmops.flamingo_kv_ranges(locations.to(device), tokens, True, num_media=T)
    for e, g in zip(expected, got):
        assert g.device.type == device and g.dtype == torch.int32 and torch.equal(g.cpu(), e)
    start, end = expected
    assert bool((start == end).any()) and bool((start < end).any())
    q, k, v = make_gated(B, Lq, Lk, H, Hk, D, torch.float32, seed=6)
    gate = torch.tensor([0.4])
    ref_out, _ = gated_ref(q, k, v, start, end, gate)
    out = vlmops.gated_cross_attention(q.to(device), k.to(device), v.to(device), *got, gate.to(device))
    assert max_abs(out, ref_out) < 2e-5
    assert torch.all(out[(end == start).to(device)] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_gated_reads_strided_views_and_transformers_cache_layout(device):
    # q a view of a fused projection; k/v transformers' [B, Hk, Lk, D] caches passed as
    # cache.transpose(1, 2); grad_out non-contiguous.
    B, Lq, Lk, H, Hk, D = 2, 70, 300, 4, 2, 128
    gen = torch.Generator().manual_seed(7)
    qkv = torch.randn(B, Lq, 3, H, D, generator=gen)
    k_cache = torch.randn(B, Hk, Lk, D, generator=gen)
    v_cache = torch.randn(B, Hk, Lk, D, generator=gen)
    grad_out = torch.randn(B, H, Lq, D, generator=gen).transpose(1, 2)
    gate = torch.tensor([0.9])
    start, end = mixed_ranges(B, Lq, Lk, seed=8)
    tensors = [qkv[:, :, 0], k_cache.transpose(1, 2), v_cache.transpose(1, 2), gate]
    ref_out, _ = gated_ref(*tensors[:3], start, end, gate, 0.3)
    ref = grads_of(
        lambda *t: reference_gated(*t[:3], start, end, t[3], 0.3)[0],
        [t.double().contiguous() for t in tensors],
        grad_out.double(),
    )
    sd, ed = start.to(device), end.to(device)
    qkv_d, kc, vc, gd = qkv.to(device), k_cache.to(device), v_cache.to(device), gate.to(device)
    q, k, v = qkv_d[:, :, 0], kc.transpose(1, 2), vc.transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    out = vlmops.gated_cross_attention(q, k, v, sd, ed, gd, softmax_scale=0.3)
    assert max_abs(out, ref_out) < 2e-5
    grads = grads_of(
        lambda *t: vlmops.gated_cross_attention(*t[:3], sd, ed, t[3], softmax_scale=0.3),
        [q, k, v, gd],
        grad_out.to(device),
    )
    for name, g, r in zip("qkvg", grads, ref):
        assert max_abs(g, r) < (1e-3 if name == "g" else 1e-4) * max(1.0, r.abs().max().item()), name


@pytest.mark.requires_cuda
@pytest.mark.parametrize("Lq", [1, 150])  # decode (split-K + combine kernel) and prefill
def test_gated_forward_captures_in_cuda_graph(Lq):
    B, H, Hk, D = 4, 8, 2, 128
    Lk = 4 * 1601 if Lq == 1 else 700
    q, k, v = (t.cuda() for t in make_gated(B, Lq, Lk, H, Hk, D, torch.bfloat16, seed=10))
    start, end = (t.cuda() for t in (decode_ranges(Lk) if Lq == 1 else mixed_ranges(B, Lq, Lk, seed=11)))
    gate = torch.tensor([0.5], device="cuda", dtype=torch.bfloat16)

    def forward():
        return vlmops.gated_cross_attention(q, k, v, start, end, gate, return_lse=True)

    graph, (out, lse) = capture_cuda_graph(forward)
    for seed in (12, 13):
        for dst, src in zip((q, k, v), make_gated(B, Lq, Lk, H, Hk, D, torch.bfloat16, seed=seed)):
            dst.copy_(src)
        gate.fill_(-0.3 if seed == 12 else 1.1)  # the gate is read on the device at replay
        graph.replay()
        torch.cuda.synchronize()
        eager_out, eager_lse = forward()
        assert torch.equal(out, eager_out) and torch.equal(lse, eager_lse)
        ref_out, _ = gated_ref(q, k, v, start, end, gate)
        assert max_abs(out, ref_out) <= bound(torch.bfloat16, ref_out, pytorch_gated(q, k, v, start, end, gate))


# ---- both ops ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("D", [1, 8, 20, 100, 256])  # below one 16-wide piece, odd, three pieces, the largest
def test_every_head_dim_forward_and_backward(device, D):
    lengths = [1, 70, 0, 130]
    q, k, v = make_qkv(lengths, 2, 1, D, torch.float32, seed=20)
    cu = cu_seqlens_of(lengths)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(21))
    ref = grads_of(lambda a, b, c: reference_varlen(a, b, c, cu)[0], [t.double() for t in (q, k, v)], grad_out.double())
    cud = cu.to(device)
    tensors = [t.to(device) for t in (q, k, v)]
    assert max_abs(vlmops.varlen_attention(*tensors, cud), varlen_ref(q, k, v, cu)[0]) < 2e-5
    grads = grads_of(lambda a, b, c: vlmops.varlen_attention(a, b, c, cud), tensors, grad_out.to(device))
    for name, g, r in zip("qkv", grads, ref):
        assert max_abs(g, r) < 5e-5 * max(1.0, r.abs().max().item()), name

    B, Lq, Lk = 2, 70, 150
    q, k, v = make_gated(B, Lq, Lk, 4, 2, D, torch.float32, seed=22)
    start, end = mixed_ranges(B, Lq, Lk, seed=23)
    gate = torch.tensor([0.6])
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(24))
    tensors = [q, k, v, gate]
    ref = grads_of(
        lambda *t: reference_gated(*t[:3], start, end, t[3])[0], [t.double() for t in tensors], grad_out.double()
    )
    sd, ed = start.to(device), end.to(device)
    dev = [t.to(device) for t in tensors]
    out = vlmops.gated_cross_attention(*dev[:3], sd, ed, dev[3])
    assert max_abs(out, gated_ref(q, k, v, start, end, gate)[0]) < 2e-5
    grads = grads_of(lambda *t: vlmops.gated_cross_attention(*t[:3], sd, ed, t[3]), dev, grad_out.to(device))
    for name, g, r in zip("qkvg", grads, ref):
        assert max_abs(g, r) < (1e-3 if name == "g" else 1e-4) * max(1.0, r.abs().max().item()), name


@pytest.mark.requires_cuda
def test_float64_is_refused_on_cuda_with_the_argument_named():
    q, k, v = (t.cuda() for t in make_qkv([3, 4], 2, 2, 16, torch.float64))
    cu = cu_seqlens_of([3, 4], "cuda")
    with pytest.raises(ValueError, match="varlen_attention: q must be float32, float16 or bfloat16 on CUDA"):
        vlmops.varlen_attention(q, k, v, cu)
    q, k, v = (t.cuda() for t in make_gated(1, 3, 5, 2, 2, 16, torch.float64))
    start, end = (
        torch.zeros(1, 3, dtype=torch.int32, device="cuda"),
        torch.full((1, 3), 5, dtype=torch.int32, device="cuda"),
    )
    with pytest.raises(ValueError, match="gated_cross_attention: q must be float32, float16 or bfloat16 on CUDA"):
        vlmops.gated_cross_attention(q, k, v, start, end)


@pytest.mark.parametrize(
    "name", ["varlen_attention", "varlen_attention_backward", "gated_cross_attention", "gated_cross_attention_backward"]
)
def test_triton_entry_has_the_public_schema_and_the_launcher_takes_it(name):
    # The C++ CUDA entry checks, then calls vlmops::_<op>_triton with the public op's arguments; the
    # registry makes the launcher its CUDA kernel.
    from vlmops.ops import registry

    public = [argument.name for argument in getattr(torch.ops.vlmops, name).default._schema.arguments]
    private_op = getattr(torch.ops.vlmops, registry.triton_kernel_name(name)).default._schema
    assert [argument.name for argument in private_op.arguments] == public
    module, _, attr = registry.defined()[name].triton.partition(":")
    launcher = getattr(importlib.import_module(module), attr)
    assert list(inspect.signature(launcher).parameters)[: len(public)] == public
