"""Triton pixel shuffle kernels (vlmops/triton/pixel_shuffle.py) against vlmops.reference.

Without a GPU the launchers run on CPU tensors under the Triton interpreter (conftest sets
TRITON_INTERPRET=1), which is slow: shapes are tiny and grids are reduced to the cases that change
the code path (scale 1-4, strided x, weight/bias present or not, fp32/bf16, fp64/fp16 once each).
On a CUDA machine the same checks run through the public ops on CUDA tensors with
VLMOPS_CUDA_BACKEND=triton (their CUDA entries check the inputs, then call the Triton kernels), plus
opcheck and gradcheck. The inputs' checks are the ops' (tests/test_pixel_shuffle.py,
tests/test_adversarial_shuffle_embed.py): the launchers take checked inputs.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmops
from vlmops import reference
from vlmops.triton import pixel_shuffle as triton_ps

BACKENDS = [
    pytest.param("cpu", id="interpreter"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.requires_cuda),
]


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    """The public ops' CUDA entries run the Triton variant (CPU tests call the launchers directly)."""
    monkeypatch.setenv("VLMOPS_CUDA_BACKEND", "triton")


def kernels(device: str) -> dict:
    """The four entry points: the launchers themselves on CPU, the public ops (with
    VLMOPS_CUDA_BACKEND=triton) on CUDA."""
    if device == "cpu":
        return {
            "shuffle": triton_ps.pixel_shuffle,
            "shuffle_backward": triton_ps.pixel_shuffle_backward,
            "layer_norm": triton_ps.pixel_shuffle_layer_norm,
            "layer_norm_backward": triton_ps.pixel_shuffle_layer_norm_backward,
        }
    ops = torch.ops.vlmops
    return {
        "shuffle": ops.pixel_shuffle,
        "shuffle_backward": ops.pixel_shuffle_backward,
        "layer_norm": ops.pixel_shuffle_layer_norm,
        "layer_norm_backward": ops.pixel_shuffle_layer_norm_backward,
    }


def make_x(layout: str, B, H, W, C, dtype, device, seed=0) -> torch.Tensor:
    """x [B, H, W, C] as the models hand it over: contiguous, a view dropping a CLS token, every other
    channel, or H and W swapped (transposed strides)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        x = torch.randn(B, H, W, C, generator=g, dtype=torch.float64)
    elif layout == "cls_dropped":
        x = torch.randn(B, 1 + H * W, C, generator=g, dtype=torch.float64)[:, 1:, :].unflatten(1, (H, W))
    elif layout == "channel_strided":
        x = torch.randn(B, H, W, 2 * C, generator=g, dtype=torch.float64)[..., ::2]
    elif layout == "transposed":
        x = torch.randn(B, W, H, C, generator=g, dtype=torch.float64).transpose(1, 2)
    else:
        raise AssertionError(layout)
    # Converting a view keeps its strides (preserve_format on a non-dense view would not): build the
    # target dtype's base tensor first, then take the same view of it.
    base = x._base if x._base is not None else x
    converted = base.to(device=device, dtype=dtype)
    out = converted.as_strided(x.shape, x.stride(), x.storage_offset())
    assert out.stride() == x.stride()
    return out


def affine(n, dtype, device, present: bool, seed: int):
    if not present:
        return None
    g = torch.Generator().manual_seed(seed)
    return (1 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)


def max_error(value: torch.Tensor, ref64: torch.Tensor) -> float:
    return (value.double().cpu() - ref64.cpu()).abs().max().item()


def assert_close_to_reference(value, ref64, torch_lowp):
    """Low precision: our error against the float64 reference within 3x PyTorch's own error on the
    same inputs (flash-attention's rule); the small floor only covers a PyTorch error of exactly 0.

    The Triton interpreter converts float32 to bfloat16 by truncation (its cast_impl passes no
    rounding mode; compiled kernels round to nearest even), so on CPU bfloat16 results may be one
    more bfloat16 ulp (2**-7 relative) off."""
    ours, theirs = max_error(value, ref64), max_error(torch_lowp, ref64)
    scale = max(1.0, ref64.abs().max().item())
    truncation = 2**-7 * scale if value.dtype == torch.bfloat16 and value.device.type == "cpu" else 0.0
    assert ours <= 3 * theirs + truncation + 1e-6 * scale, (ours, theirs)


# --- pixel shuffle (a permutation: exact in every dtype) -------------------------------------------


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["contiguous", "cls_dropped", "channel_strided", "transposed"])
def test_pixel_shuffle_matches_reference(device, scale, layout):
    x = make_x(layout, 2, 2 * scale, scale, 3, torch.float32, device)
    out = kernels(device)["shuffle"](x, scale)
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference.pixel_shuffle(x, scale), rtol=0, atol=0)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_pixel_shuffle_dtypes_and_vector_path(device, dtype):
    # C = 8 with contiguous channels takes the vectorized (VEC > 1) addressing.
    x = make_x("contiguous", 1, 4, 4, 8, dtype, device)
    assert triton_ps._vector_width(x) > 1
    torch.testing.assert_close(kernels(device)["shuffle"](x, 2), reference.pixel_shuffle(x, 2), rtol=0, atol=0)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_pixel_shuffle_backward_is_the_inverse_permutation(device, scale):
    B, H, W, C = 2, scale, 2 * scale, 3
    g = make_x("contiguous", B, H // scale, W // scale, C * scale * scale, torch.float32, device, seed=1)
    x = make_x("contiguous", B, H, W, C, torch.float32, device).requires_grad_()
    reference.pixel_shuffle(x, scale).backward(g)
    grad_x = kernels(device)["shuffle_backward"](g, scale)
    assert grad_x.is_contiguous()
    torch.testing.assert_close(grad_x, x.grad, rtol=0, atol=0)
    # A strided grad_out (a transposed view) is read in place.
    g_t = g.transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(kernels(device)["shuffle_backward"](g_t, scale), x.grad, rtol=0, atol=0)


@pytest.mark.parametrize("device", BACKENDS)
def test_empty_inputs(device):
    k = kernels(device)
    x = torch.empty(0, 4, 4, 3, device=device)
    assert k["shuffle"](x, 2).shape == (0, 2, 2, 12)
    assert k["shuffle_backward"](torch.empty(0, 2, 2, 12, device=device), 2).shape == (0, 4, 4, 3)
    out, mean, rstd = k["layer_norm"](x, 2, None, None, 1e-5)
    assert out.shape == (0, 2, 2, 12) and mean.shape == rstd.shape == (0, 2, 2)
    grad_x, grad_w, grad_b = k["layer_norm_backward"](out, x, mean, rstd, None, 2)
    assert grad_x.shape == x.shape
    torch.testing.assert_close(grad_w, torch.zeros(12, device=device), rtol=0, atol=0)
    torch.testing.assert_close(grad_b, torch.zeros(12, device=device), rtol=0, atol=0)
    # No channels: every output is empty, nothing is launched.
    no_channels = torch.empty(1, 2, 2, 0, device=device)
    out, mean, rstd = k["layer_norm"](no_channels, 2, None, None, 1e-5)
    assert out.shape == (1, 1, 1, 0)
    grad_x, grad_w, grad_b = k["layer_norm_backward"](out, no_channels, mean, rstd, None, 2)
    assert grad_x.shape == no_channels.shape and grad_w.shape == grad_b.shape == (0,)


# --- fused pixel shuffle + LayerNorm ---------------------------------------------------------------


def reference_forward64(x, scale, weight, bias, eps):
    """float64 reference: output, mean and rstd of LayerNorm over the shuffled channels."""
    y = reference.pixel_shuffle(x.double(), scale)
    w = weight.double() if weight is not None else None
    b = bias.double() if bias is not None else None
    out = reference.pixel_shuffle_layer_norm(x.double(), scale, w, b, eps)
    mean = y.mean(-1)
    return out, mean, torch.rsqrt((y - mean[..., None]).square().mean(-1) + eps)


def reference_backward(x, scale, weight, bias, eps, grad_out):
    """Autograd through the reference, in the dtype of its inputs."""
    x = x.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_() if weight is not None else None
    b = bias.detach().clone().requires_grad_() if bias is not None else None
    reference.pixel_shuffle_layer_norm(x, scale, w, b, eps).backward(grad_out)
    return x.grad, (w.grad if w is not None else None), (b.grad if b is not None else None)


def check_layer_norm(device, x, scale, weight, bias, eps=1e-5):
    k = kernels(device)
    dtype = x.dtype
    out, mean, rstd = k["layer_norm"](x, scale, weight, bias, eps)
    stats_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.dtype == dtype and mean.dtype == rstd.dtype == stats_dtype
    out64, mean64, rstd64 = reference_forward64(x, scale, weight, bias, eps)
    # The statistics are accumulated from x's exact values in float32/float64: tight in every dtype.
    torch.testing.assert_close(mean.double().cpu(), mean64.cpu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rstd.double().cpu(), rstd64.cpu(), rtol=1e-5, atol=1e-6)

    grad_out = make_x("contiguous", *out.shape, dtype, device, seed=7)
    grad_x, grad_w, grad_b = k["layer_norm_backward"](grad_out, x, mean, rstd, weight, scale)
    assert grad_x.is_contiguous() and grad_x.shape == x.shape and grad_x.dtype == dtype
    assert grad_w.shape == grad_b.shape == (out.shape[-1],) and grad_w.dtype == grad_b.dtype == dtype
    w64 = weight.double() if weight is not None else None
    b64 = bias.double() if bias is not None else None
    ref64 = reference_backward(x.double(), scale, w64, b64, eps, grad_out.double())
    ours = (grad_x, grad_w, grad_b)

    if dtype in (torch.float32, torch.float64):
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.double().cpu(), out64.cpu(), **tol)
        torch.testing.assert_close(grad_x.double().cpu(), ref64[0].cpu(), **tol)
        for name, value, ref in (("weight", grad_w, ref64[1]), ("bias", grad_b, ref64[2])):
            if ref is not None:
                torch.testing.assert_close(value.double().cpu(), ref.cpu(), **tol, msg=f"grad_{name}")
        return

    assert_close_to_reference(out, out64, reference.pixel_shuffle_layer_norm(x, scale, weight, bias, eps))
    torch_lowp = reference_backward(x, scale, weight, bias, eps, grad_out)
    for value, ref, theirs in zip(ours, ref64, torch_lowp):
        if ref is not None:
            assert_close_to_reference(value, ref, theirs)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("with_affine", [False, True], ids=["no_affine", "affine"])
def test_layer_norm_matches_reference(device, scale, dtype, with_affine):
    # 2 x 2 x 1 output tokens of s*s*3 features; the CLS-dropped view exercises strided addressing.
    x = make_x("cls_dropped", 2, 2 * scale, scale, 3, dtype, device)
    n = 3 * scale * scale
    check_layer_norm(
        device, x, scale, affine(n, dtype, device, with_affine, 1), affine(n, dtype, device, with_affine, 2)
    )


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channel_strided", "transposed"])
def test_layer_norm_layouts_weight_only(device, layout):
    # C = 8 contiguous takes the vectorized path; weight without bias (and the reverse below).
    x = make_x(layout, 2, 4, 4, 8, torch.float32, device)
    check_layer_norm(device, x, 2, affine(32, torch.float32, device, True, 3), None)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout, channels, scale", [("cls_dropped", 3, 3), ("contiguous", 8, 2)])
def test_layer_norm_rows_wider_than_a_chunk(device, dtype, layout, channels, scale, monkeypatch):
    """Rows wider than MAX_ROW_CHUNK_BYTES take the chunked path (several passes over the row); shrunk
    here to 16-element chunks so that tiny rows do (27 features: a full and a partial chunk; 32
    features with vectorized addressing: two chunks)."""
    monkeypatch.setattr(triton_ps, "MAX_ROW_CHUNK_BYTES", 32)
    x = make_x(layout, 2, 2 * scale, scale, channels, dtype, device)
    n = channels * scale * scale
    assert triton_ps._row_chunk(triton_ps._row_block(n), x) < n
    check_layer_norm(device, x, scale, affine(n, dtype, device, True, 1), affine(n, dtype, device, True, 2))


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_layer_norm_other_dtypes(device, dtype):
    x = make_x("contiguous", 1, 4, 2, 4, dtype, device)
    check_layer_norm(device, x, 2, None, affine(16, dtype, device, True, 4), eps=1e-6)


@pytest.mark.parametrize("device", BACKENDS)
def test_layer_norm_backward_with_strided_stats_and_grad(device):
    """mean, rstd and grad_out are read through their strides, never copied."""
    k = kernels(device)
    x = make_x("contiguous", 2, 4, 4, 2, torch.float32, device)
    weight = affine(8, torch.float32, device, True, 5)
    out, mean, rstd = k["layer_norm"](x, 2, weight, None, 1e-5)
    grad_out = make_x("transposed", 2, 2, 2, 8, torch.float32, device, seed=9)
    expected = k["layer_norm_backward"](grad_out.contiguous(), x, mean, rstd, weight, 2)
    mean_t = mean.transpose(1, 2).contiguous().transpose(1, 2)
    rstd_t = rstd.transpose(1, 2).contiguous().transpose(1, 2)
    got = k["layer_norm_backward"](grad_out, x, mean_t, rstd_t, weight, 2)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@settings(max_examples=6, deadline=None)
@given(
    batch=st.integers(0, 2),
    tokens_h=st.integers(1, 2),
    tokens_w=st.integers(1, 2),
    channels=st.integers(1, 5),
    scale=st.integers(1, 4),
    layout=st.sampled_from(["contiguous", "cls_dropped", "channel_strided", "transposed"]),
    with_weight=st.booleans(),
    with_bias=st.booleans(),
)
def test_hypothesis_shapes_interpreter(batch, tokens_h, tokens_w, channels, scale, layout, with_weight, with_bias):
    x = make_x(layout, batch, tokens_h * scale, tokens_w * scale, channels, torch.float32, "cpu")
    torch.testing.assert_close(triton_ps.pixel_shuffle(x, scale), reference.pixel_shuffle(x, scale), rtol=0, atol=0)
    n = channels * scale * scale
    check_layer_norm(
        "cpu", x, scale, affine(n, torch.float32, "cpu", with_weight, 1), affine(n, torch.float32, "cpu", with_bias, 2)
    )


def test_vector_width():
    x = torch.empty(1, 4, 4, 16, dtype=torch.bfloat16)
    assert triton_ps._vector_width(x) == 8
    assert triton_ps._vector_width(x.float()) == 4
    assert triton_ps._vector_width(x[..., :12]) == 4  # token strides 16, C = 12
    assert triton_ps._vector_width(x[..., ::2]) == 1  # channels not unit-stride
    assert triton_ps._vector_width(x[..., 1:9]) == 1  # data pointer one element past an aligned address
    assert triton_ps._vector_width(torch.empty(1, 2, 2, 5)) == 1


# --- CUDA only: the public ops on the Triton backend -------------------------------------------------


@pytest.mark.requires_cuda
def test_opcheck_triton_backend():
    x = make_x("cls_dropped", 2, 4, 4, 8, torch.float32, "cuda")
    weight, bias = affine(32, torch.float32, "cuda", True, 1), affine(32, torch.float32, "cuda", True, 2)
    ops = torch.ops.vlmops
    torch.library.opcheck(ops.pixel_shuffle, (x, 2))
    torch.library.opcheck(ops.pixel_shuffle_backward, (torch.randn(2, 2, 2, 32, device="cuda"), 2))
    torch.library.opcheck(ops.pixel_shuffle_layer_norm, (x.requires_grad_(), 2, weight, bias, 1e-5))
    out, mean, rstd = ops.pixel_shuffle_layer_norm(x.detach(), 2, weight, bias, 1e-5)
    torch.library.opcheck(
        ops.pixel_shuffle_layer_norm_backward, (torch.randn_like(out), x.detach(), mean, rstd, weight, 2)
    )


@pytest.mark.requires_cuda
def test_gradcheck_float64_cuda():
    x = make_x("cls_dropped", 1, 4, 2, 3, torch.float64, "cuda").requires_grad_()
    weight = affine(12, torch.float64, "cuda", True, 1).requires_grad_()
    bias = affine(12, torch.float64, "cuda", True, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: vlmops.pixel_shuffle(t, 2), (x,))
    assert torch.autograd.gradcheck(
        lambda t, w, b: vlmops.pixel_shuffle_layer_norm(t, 2, w, b, 1e-5), (x, weight, bias)
    )


@pytest.mark.requires_cuda
def test_wrapper_runs_triton_backend():
    x = make_x("cls_dropped", 2, 4, 4, 8, torch.float32, "cuda")
    weight = affine(32, torch.float32, "cuda", True, 1)
    torch.testing.assert_close(vlmops.pixel_shuffle(x, 2), reference.pixel_shuffle(x, 2), rtol=0, atol=0)
    torch.testing.assert_close(
        vlmops.pixel_shuffle_layer_norm(x, 2, weight),
        reference.pixel_shuffle_layer_norm(x, 2, weight),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.requires_cuda
def test_patch_span_beyond_int32_is_refused_by_the_triton_backend_only(monkeypatch):
    # Channel stride 2**31: one token's inputs lie 2**31 elements apart (4 GiB of float16). The Triton
    # kernels address a patch with int32 offsets: the op's CUDA entry refuses x for them; the CUDA
    # C++ kernels index with int64 and take it.
    x = torch.empty_strided((1, 1, 1, 2), (0, 0, 0, 2**31), dtype=torch.float16, device="cuda")
    x.copy_(torch.tensor([1.5, -2.0], dtype=torch.float16).view(1, 1, 1, 2))
    with pytest.raises(ValueError, match=r"pixel_shuffle: x with strides .* spans more than 2\*\*31 - 1"):
        vlmops.pixel_shuffle(x, 1)
    monkeypatch.setenv("VLMOPS_CUDA_BACKEND", "cuda")
    torch.testing.assert_close(vlmops.pixel_shuffle(x, 1).cpu(), x.cpu(), rtol=0, atol=0)
    monkeypatch.setenv("VLMOPS_CUDA_BACKEND", "bogus")
    with pytest.raises(ValueError, match="VLMOPS_CUDA_BACKEND must be cuda or triton"):
        vlmops.pixel_shuffle(x, 1)
