"""Tests of vlmops.patch_embed: vs nn.Conv2d/Conv3d, the reference, transformers' embedding modules,
gradients, opcheck, bad inputs, and the Triton kernel under the interpreter."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmops
from vlmops import reference

# CLIP's image processor constants: realistic per-channel mean/std for the normalization tests.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def make_case(form, *, B=2, C=3, T=2, P=4, frames=4, grid=(2, 3), D=8, dtype=torch.float64, seed=0):
    """x and a weight for one input form: 'image', 'video', 'rows3d' (Qwen) or 'rows2d'."""
    g = torch.Generator().manual_seed(seed)
    H, W = grid[0] * P, grid[1] * P
    if form == "image":
        x, kernel = torch.randn(B, C, H, W, generator=g, dtype=dtype), (P, P)
    elif form == "video":
        x, kernel = torch.randn(B, C, frames, H, W, generator=g, dtype=dtype), (T, P, P)
    elif form == "rows3d":
        x, kernel = torch.randn(B * 5, C * T * P * P, generator=g, dtype=dtype), (T, P, P)
    else:
        x, kernel = torch.randn(B * 5, C * P * P, generator=g, dtype=dtype), (P, P)
    weight = torch.randn(D, C, *kernel, generator=g, dtype=dtype) / math.sqrt(C * math.prod(kernel))
    bias = torch.randn(D, generator=g, dtype=dtype)
    return x, weight, bias


def conv_module(weight, bias):
    """The nn.Conv2d/Conv3d (kernel == stride) that the op replaces, holding weight and bias."""
    kernel = tuple(weight.shape[2:])
    cls = torch.nn.Conv2d if weight.dim() == 4 else torch.nn.Conv3d
    conv = cls(weight.shape[1], weight.shape[0], kernel, stride=kernel, bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def conv_tokens(x, weight, bias):
    """What the models compute today: the conv, then flatten(2).transpose(1, 2) (or .view(-1, D) for rows)."""
    conv = conv_module(weight, bias)
    with torch.no_grad():
        if x.dim() == 2:
            return conv(x.view(x.shape[0], weight.shape[1], *weight.shape[2:])).view(x.shape[0], weight.shape[0])
        return conv(x).flatten(2).transpose(1, 2)


FORMS = ["image", "video", "rows3d", "rows2d"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_matches_conv_float64(form, with_bias, channels):
    x, weight, bias = make_case(form, C=channels, P=3, D=7)
    bias = bias if with_bias else None
    torch.testing.assert_close(
        vlmops.patch_embed(x, weight, bias), conv_tokens(x, weight, bias), rtol=1e-12, atol=1e-12
    )


@settings(max_examples=20, deadline=None)
@given(
    form=st.sampled_from(FORMS),
    B=st.integers(0, 3),
    C=st.integers(1, 4),
    T=st.integers(1, 3),
    P=st.integers(1, 5),
    frames_per_patch=st.integers(1, 2),
    gh=st.integers(1, 3),  # an empty grid is test_empty_grid's (nn.Conv rejects it)
    gw=st.integers(1, 3),
    D=st.integers(1, 9),
)
def test_matches_conv_hypothesis(form, B, C, T, P, frames_per_patch, gh, gw, D):
    x, weight, bias = make_case(form, B=B, C=C, T=T, P=P, frames=T * frames_per_patch, grid=(gh, gw), D=D)
    torch.testing.assert_close(
        vlmops.patch_embed(x, weight, bias), conv_tokens(x, weight, bias), rtol=1e-12, atol=1e-12
    )


def test_empty_grid():
    x, weight, bias = make_case("image", C=3, P=4, grid=(0, 2))
    assert vlmops.patch_embed(x, weight, bias).shape == (2, 0, 8)
    pos, cls = torch.randn(1, 8, dtype=x.dtype), torch.randn(8, dtype=x.dtype)
    out = vlmops.patch_embed(x, weight, bias, pos_embed=pos, cls_token=cls)
    torch.testing.assert_close(out, (cls + pos[0]).expand(2, 1, 8))


def test_long_sequences_cross_gemm_blocks():
    # Enough patches per sample (and rows) to span several GEMM blocks and both threads.
    for form, grid in (("image", (23, 29)), ("rows3d", (1, 1))):
        x, weight, bias = make_case(form, B=3 if form == "image" else 130, P=2, grid=grid, D=5)
        torch.testing.assert_close(
            vlmops.patch_embed(x, weight, bias), conv_tokens(x, weight, bias), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("form", FORMS)
def test_strided_inputs_are_read_in_place(form):
    x, weight, bias = make_case(form, C=3, P=3)
    if x.dim() == 2:
        strided = torch.cat([x, x], dim=1)[:, ::2]  # stride 2 along the columns
        transposed = x.t().contiguous().t()  # column-major rows
        cases = [strided.copy_(x), transposed]
    else:
        cases = [x.movedim(1, -1).contiguous().movedim(-1, 1), torch.cat([x, x], dim=-1)[..., : x.shape[-1]]]
    expected = conv_tokens(x, weight, bias)
    for xs in cases:
        assert not xs.is_contiguous()
        torch.testing.assert_close(vlmops.patch_embed(xs, weight, bias), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_float32_matches_reference(form):
    x, weight, bias = make_case(form, C=3, P=4, D=16, dtype=torch.float32)
    expected = reference.patch_embed(x.double(), weight.double(), bias.double())
    torch.testing.assert_close(vlmops.patch_embed(x, weight, bias).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("form", ["image", "rows3d"])
def test_low_precision_error_within_pytorch_rounding(form, dtype):
    x, weight, bias = make_case(form, C=3, P=4, D=32, dtype=torch.float32)
    truth = reference.patch_embed(x.double(), weight.to(dtype).double(), bias.to(dtype).double())
    ours = vlmops.patch_embed(x, weight.to(dtype), bias.to(dtype))
    assert ours.dtype == dtype
    torch_result = conv_tokens(x.to(dtype).float(), weight.to(dtype).float(), bias.to(dtype).float()).to(dtype)
    ours_err = (ours.double() - truth).abs().max().item()
    torch_err = (torch_result.double() - truth).abs().max().item()
    assert ours_err <= 3 * torch_err + 1e-6, (ours_err, torch_err)


def processor_normalize(x, mean, std, rescale, dtype=torch.float32):
    """The image processors' rescale then normalize (float32 in transformers), as a separate pass."""
    y = x.to(dtype) * rescale
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (y - mean.to(dtype).view(shape)) / std.to(dtype).view(shape)


@pytest.mark.parametrize("form", ["image", "video", "rows3d"])
@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64])
def test_uint8_fused_normalization_matches_normalize_then_conv(form, wdtype):
    x, weight, bias = make_case(form, C=3, P=4, D=16, dtype=wdtype)
    pixels = torch.randint(0, 256, x.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    ours = vlmops.patch_embed(pixels, weight, bias, mean=mean, std=std, rescale=1 / 255)
    if form == "rows3d":  # the rows hold C*T*P*P values in channel-major order: normalize the [N, C, ...] view
        shaped = pixels.view(pixels.shape[0], 3, -1)
        normalized = processor_normalize(shaped, mean, std, 1 / 255, wdtype).view(pixels.shape)
    else:
        normalized = processor_normalize(pixels, mean, std, 1 / 255, wdtype)
    expected = conv_tokens(normalized.to(wdtype), weight, bias)
    tol = 1e-5 if wdtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("kwargs", [{"rescale": 0.5}, {"mean": "m"}, {"std": "s"}, {"mean": "m", "std": "s"}])
def test_partial_normalization_on_float_pixels(kwargs):
    x, weight, bias = make_case("image", C=3, P=3)
    values = {
        "m": torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64),
        "s": torch.tensor([0.5, 2.0, 0.25], dtype=torch.float64),
    }
    kwargs = {k: values[v] if isinstance(v, str) else v for k, v in kwargs.items()}
    expected = reference.patch_embed(x, weight, bias, **kwargs)
    normalized = x * kwargs.get("rescale", 1.0)
    if "mean" in kwargs:
        normalized = normalized - kwargs["mean"].view(1, -1, 1, 1)
    if "std" in kwargs:
        normalized = normalized / kwargs["std"].view(1, -1, 1, 1)
    torch.testing.assert_close(expected, conv_tokens(normalized, weight, bias), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vlmops.patch_embed(x, weight, bias, **kwargs), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["image", "video"])
@pytest.mark.parametrize("with_cls", [True, False])
@pytest.mark.parametrize("with_pos", [True, False])
def test_position_and_cls_epilogue(form, with_cls, with_pos):
    x, weight, bias = make_case(form, C=3, P=3)
    L = conv_tokens(x, weight, bias).shape[1]
    g = torch.Generator().manual_seed(3)
    ncls = int(with_cls)
    pos = torch.randn(ncls + L, weight.shape[0], generator=g, dtype=x.dtype) if with_pos else None
    cls = torch.randn(weight.shape[0], generator=g, dtype=x.dtype) if with_cls else None
    tokens = conv_tokens(x, weight, bias)
    if with_cls:
        tokens = torch.cat([cls.expand(x.shape[0], 1, -1), tokens], dim=1)
    if with_pos:
        tokens = tokens + pos
    torch.testing.assert_close(reference.patch_embed(x, weight, bias, pos_embed=pos, cls_token=cls), tokens)
    out = vlmops.patch_embed(x, weight, bias, pos_embed=pos, cls_token=cls)
    torch.testing.assert_close(out, tokens, rtol=1e-12, atol=1e-12)


# --- transformers parity: the modules vlmops replaces, built from tiny random configs -------------


def test_matches_qwen2_5_vision_patch_embed():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionPatchEmbed

    torch.manual_seed(0)
    module = Qwen2_5_VisionPatchEmbed(patch_size=14, temporal_patch_size=2, in_channels=3, embed_dim=64).double()
    pixel_values = torch.randn(37, 3 * 2 * 14 * 14, dtype=torch.float64)
    with torch.no_grad():
        expected = module(pixel_values)
    torch.testing.assert_close(vlmops.patch_embed(pixel_values, module.proj.weight), expected, rtol=1e-12, atol=1e-12)
    # The model casts float32 pixel_values to a bf16 weight's dtype; vlmops casts on load.
    module = module.to(torch.bfloat16)
    with torch.no_grad():
        expected = module(pixel_values.float())
    torch.testing.assert_close(
        vlmops.patch_embed(pixel_values.float(), module.proj.weight), expected, rtol=2e-2, atol=2e-2
    )


def _vision_config(config_cls):
    return config_cls(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=28,
        patch_size=7,
        num_channels=3,
    )


def test_matches_clip_vision_embeddings():
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

    torch.manual_seed(0)
    module = CLIPVisionEmbeddings(_vision_config(CLIPVisionConfig)).double()
    pixel_values = torch.randn(3, 3, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        expected = module(pixel_values)
    out = vlmops.patch_embed(
        pixel_values,
        module.patch_embedding.weight,
        pos_embed=module.position_embedding.weight,
        cls_token=module.class_embedding,
    )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_matches_siglip_vision_embeddings_from_uint8():
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings

    torch.manual_seed(0)
    module = SiglipVisionEmbeddings(_vision_config(SiglipVisionConfig))
    pixels = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    mean = std = torch.full((3,), 0.5)  # SigLIP's processor
    with torch.no_grad():
        expected = module(processor_normalize(pixels, mean, std, 1 / 255))
    out = vlmops.patch_embed(
        pixels,
        module.patch_embedding.weight,
        module.patch_embedding.bias,
        mean=mean,
        std=std,
        rescale=1 / 255,
        pos_embed=module.position_embedding.weight,
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_matches_internvl_vision_embeddings():
    from transformers import InternVLVisionConfig
    from transformers.models.internvl.modeling_internvl import InternVLVisionEmbeddings

    torch.manual_seed(0)
    config = InternVLVisionConfig(hidden_size=48, image_size=28, patch_size=7, use_absolute_position_embeddings=True)
    module = InternVLVisionEmbeddings(config).double().eval()
    with torch.no_grad():  # zero-initialized in transformers: random values make the comparison meaningful
        module.cls_token.normal_()
        module.position_embeddings.normal_()
        expected = module(torch.randn(2, 3, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    pixel_values = torch.randn(2, 3, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    projection = module.patch_embeddings.projection
    out = vlmops.patch_embed(
        pixel_values,
        projection.weight,
        projection.bias,
        pos_embed=module.position_embeddings[0],
        cls_token=module.cls_token.view(48),
    )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_siglip_floor_cropping_through_a_view():
    # nn.Conv2d drops the pixels past the last whole patch (SigLIP-so400m: 384 px, P=14 -> 27 x 27
    # patches); vlmops refuses such sizes and reads the crop view instead, without a copy.
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings

    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=31,
        patch_size=7,
        num_channels=3,
    )
    module = SiglipVisionEmbeddings(config).double()
    pixel_values = torch.randn(2, 3, 31, 31, dtype=torch.float64)
    with torch.no_grad():
        expected = module(pixel_values)
    conv = module.patch_embedding
    with pytest.raises(ValueError, match=r"pass the crop x\[:, :, :28\]"):
        vlmops.patch_embed(pixel_values, conv.weight, conv.bias, pos_embed=module.position_embedding.weight)
    out = vlmops.patch_embed(
        pixel_values[:, :, :28, :28], conv.weight, conv.bias, pos_embed=module.position_embedding.weight
    )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck(form):
    x, weight, bias = make_case(form, B=2, C=2, T=2, P=2, frames=2, grid=(2, 2), D=3)
    args = [x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    assert torch.autograd.gradcheck(lambda x, w, b: vlmops.patch_embed(x, w, b), args)


@pytest.mark.parametrize("form", ["image", "video"])
def test_gradcheck_with_normalization_pos_and_cls(form):
    x, weight, bias = make_case(form, B=2, C=2, T=2, P=2, frames=2, grid=(2, 2), D=3)
    L = conv_tokens(x, weight, bias).shape[1]
    g = torch.Generator().manual_seed(5)
    pos = torch.randn(1 + L, 3, generator=g, dtype=torch.float64, requires_grad=True)
    cls = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    mean, std = torch.tensor([0.1, -0.3], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)

    def fn(x, w, b, pos, cls):
        return vlmops.patch_embed(x, w, b, mean=mean, std=std, rescale=0.7, pos_embed=pos, cls_token=cls)

    assert torch.autograd.gradcheck(fn, [x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), pos, cls])


def test_backward_matches_conv_without_input_grad():
    x, weight, bias = make_case("video", C=3, P=3, D=6)
    w1, b1 = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    conv = conv_module(weight, bias)
    grad = torch.randn(conv_tokens(x, weight, bias).shape, dtype=x.dtype)
    vlmops.patch_embed(x, w1, b1).backward(grad)
    conv(x).flatten(2).transpose(1, 2).backward(grad)
    torch.testing.assert_close(w1.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b1.grad, conv.bias.grad, rtol=1e-12, atol=1e-12)


def test_uint8_pixels_with_trainable_weight():
    x, weight, bias = make_case("image", C=3, P=3, dtype=torch.float32)
    pixels = torch.randint(0, 256, x.shape, dtype=torch.uint8)
    w1 = weight.clone().requires_grad_()
    vlmops.patch_embed(pixels, w1, rescale=1 / 255).sum().backward()
    w2 = weight.clone().requires_grad_()
    F.conv2d(pixels.float() / 255, w2, stride=3).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-4, atol=1e-4)


# --- opcheck ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_opcheck(form):
    x, weight, bias = make_case(form, B=2, C=2, T=2, P=2, frames=2, grid=(2, 2), D=3)
    pos = cls = None
    if x.dim() > 2:
        L = conv_tokens(x, weight, bias).shape[1]
        pos, cls = torch.randn(1 + L, 3, dtype=x.dtype), torch.randn(3, dtype=x.dtype)
    mean, std = torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.vlmops.patch_embed, (x.requires_grad_(), weight.requires_grad_(), bias, mean, std, 0.5, pos, cls)
    )
    pixels = torch.randint(0, 256, x.shape, dtype=torch.uint8)
    torch.library.opcheck(torch.ops.vlmops.patch_embed, (pixels, weight, None, mean, std, 1 / 255, None, None))
    grad = torch.randn(vlmops.patch_embed(x, weight).shape, dtype=x.dtype)
    for compute_grad_x in (True, False):
        torch.library.opcheck(
            torch.ops.vlmops.patch_embed_backward, (grad, x.detach(), weight.detach(), mean, std, 0.5, compute_grad_x)
        )


def test_torch_compile_fullgraph():
    x, weight, bias = make_case("image", C=3, P=3, dtype=torch.float32)
    compiled = torch.compile(lambda x, w, b: vlmops.patch_embed(x, w, b), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, weight, bias), vlmops.patch_embed(x, weight, bias))


# --- bad inputs ------------------------------------------------------------------------------------


def _bad_cases():
    x, w, b = make_case("image", C=3, P=4, grid=(2, 2), D=8, dtype=torch.float32)
    xv, wv, _ = make_case("video", C=3, T=2, P=4, frames=4, grid=(2, 2), D=8, dtype=torch.float32)
    rows = torch.randn(5, 3 * 2 * 4 * 4)
    c3 = torch.ones(3)
    return [
        ((x[:, :, :7], w), {}, ValueError, "not divisible by the patch size"),
        ((xv[:, :, :3], wv), {}, ValueError, "frames F = 3 .* not divisible"),
        ((x[:, :2], w), {}, ValueError, "2 channels"),
        ((x, wv), {}, ValueError, r"Conv2d\) for images"),
        ((xv, w), {}, ValueError, r"Conv3d\) for videos"),
        ((x, w[0]), {}, ValueError, r"weight must be \[D, C, P, P\] \(Conv2d\) or"),
        ((x[0], w), {}, ValueError, r"x must be \[N, C\*T\*Ph\*Pw\] rows, .* got shape \[3, 8, 8\]"),
        ((rows[:, :-1], wv), {}, ValueError, "columns"),
        ((x.int(), w), {}, ValueError, "x must be uint8, .* got Int"),
        ((x, w.int()), {}, ValueError, "weight must be float32, .* got Int"),
        ((x.tolist(), w), {}, TypeError, "patch_embed: x must be Tensor, got list"),
        ((x, w, b[:3]), {}, ValueError, r"bias must be \[D\] = \[8\], got shape \[3\]"),
        ((x, w, b.double()), {}, ValueError, "bias dtype Double must match weight dtype Float"),
        ((x, w), {"mean": torch.ones(4)}, ValueError, r"mean must be \[C\] = \[3\]"),
        ((x, w), {"std": torch.ones(3, dtype=torch.int64)}, ValueError, "std must be float32, .* got Long"),
        ((x, w), {"rescale": "1/255"}, TypeError, r"rescale must be Optional\[float\], got str"),
        ((x, w), {"rescale": float("nan")}, ValueError, "rescale must be finite, got nan"),
        ((x, w), {"pos_embed": torch.ones(5, 8)}, ValueError, r"pos_embed must be \[ncls \+ L, D\] = \[4, 8\]"),
        (
            (x, w),
            {"pos_embed": torch.ones(4, 8), "cls_token": torch.ones(8)},
            ValueError,
            r"pos_embed must be \[ncls \+ L, D\] = \[5, 8\]",
        ),
        ((x, w), {"cls_token": torch.ones(1, 8)}, ValueError, r"cls_token must be \[D\] = \[8\]"),
        ((rows, wv), {"cls_token": torch.ones(8)}, ValueError, "not rows"),
        ((x, w), {"mean": c3.to("meta")}, ValueError, "mean is on meta"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_raise_clear_errors(case):
    args, kwargs, error, message = _bad_cases()[case]
    with pytest.raises(error, match=message):
        vlmops.patch_embed(*args, **kwargs)


def test_op_checks_inputs_itself():
    x, w, b = make_case("image", C=3, P=4, grid=(2, 2), D=8, dtype=torch.float32)
    op = torch.ops.vlmops.patch_embed
    for args, message in [
        ((x[:, :, :7], w, None, None, None, None, None, None), "not divisible by the patch size"),
        ((x[:, :2], w, None, None, None, None, None, None), "2 channels"),
        ((x, w[..., None], None, None, None, None, None, None), r"weight must be \[D, C, P, P\] \(Conv2d\) for images"),
        ((x, w, b[:2], None, None, None, None, None), "bias must be"),
        ((x, w, None, None, torch.tensor([1.0, 0.0, 1.0]), None, None, None), r"std\[1\] must be finite and nonzero"),
        ((x, w, None, torch.tensor([0.0, float("inf"), 0.0]), None, None, None, None), r"mean\[1\] must be finite"),
        ((x, w, None, None, None, None, torch.ones(3, 8), None), "pos_embed must be"),
        ((x.view(2, -1), w, None, None, None, None, None, None), "columns"),
    ]:
        with pytest.raises(ValueError, match=message):
            op(*args)
    grad = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="grad_patches must be"):
        torch.ops.vlmops.patch_embed_backward(grad[:, :3], x, w, None, None, None, True)
    with pytest.raises(ValueError, match="has no gradient"):
        torch.ops.vlmops.patch_embed_backward(grad, x.to(torch.uint8), w, None, None, None, True)


# --- Triton (the CUDA owner), under the interpreter on CPU tensors ---------------------------------

# The interpreter's tl.dot runs on numpy, which has no bfloat16 (it returns garbage for bf16
# operands): bfloat16 is covered on a GPU by test_cuda_matches_reference.
TRITON_DTYPES = [torch.float32, torch.float16]


def _epilogue_args(x, weight, with_cls):
    if x.dim() == 2:
        return None, None
    L = conv_tokens(x.double(), weight.double(), None).shape[1]
    g = torch.Generator().manual_seed(7)
    pos = torch.randn(int(with_cls) + L, weight.shape[0], generator=g).to(weight.dtype)
    cls = torch.randn(weight.shape[0], generator=g).to(weight.dtype) if with_cls else None
    return pos, cls


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", TRITON_DTYPES)
def test_triton_matches_reference_under_interpreter(form, dtype):
    from vlmops.triton.patch_embed import patch_embed as patch_embed_triton

    # D = 20 and K = 3*2*3*3 = 54 are not multiples of the 16-wide tiles: the masks are exercised.
    x, weight, bias = make_case(form, C=3, T=2, P=3, D=20, dtype=torch.float32)
    weight, bias = weight.to(dtype), bias.to(dtype)
    pos, cls = _epilogue_args(x, weight, with_cls=True)
    out = patch_embed_triton(x, weight, bias, None, None, None, pos, cls)
    truth = reference.patch_embed(
        x.double(),
        weight.double(),
        bias.double(),
        pos_embed=None if pos is None else pos.double(),
        cls_token=None if cls is None else cls.double(),
    )
    torch_result = reference.patch_embed(x, weight, bias, pos_embed=pos, cls_token=cls)
    assert out.dtype == dtype and out.shape == truth.shape
    ours_err = (out.double() - truth).abs().max().item()
    torch_err = (torch_result.double() - truth).abs().max().item()
    assert ours_err <= 3 * torch_err + 1e-5, (ours_err, torch_err)


@pytest.mark.parametrize("form", ["image", "video", "rows3d"])
def test_triton_uint8_normalization_and_strides_under_interpreter(form):
    from vlmops.triton.patch_embed import patch_embed as patch_embed_triton

    x, weight, bias = make_case(form, C=3, T=2, P=3, D=20, dtype=torch.float32)
    pixels = torch.randint(0, 256, x.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    if x.dim() > 2:
        pixels = pixels.movedim(1, -1).contiguous().movedim(-1, 1)  # channels-last strides, read in place
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    pos, _ = _epilogue_args(x, weight, with_cls=False)
    out = patch_embed_triton(pixels, weight, None, mean, std, 1 / 255, pos, None)
    expected = reference.patch_embed(pixels, weight, None, mean, std, 1 / 255, pos, None)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("compute_grad_x", [True, False])
@pytest.mark.parametrize("normalized", [True, False])
def test_cuda_backward_composition_matches_cpu_kernel(form, compute_grad_x, normalized):
    # The CUDA backward is torch ops only (the reference's composition): run it on CPU tensors against
    # the C++ kernel (whose rows without normalization take the no-gather path).
    from vlmops.triton.patch_embed import patch_embed_backward as patch_embed_backward_cuda

    x, weight, _ = make_case(form, C=3, T=2, P=3, D=5)
    mean, std = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), torch.tensor([0.5, 2.0, 0.7], dtype=torch.float64)
    rescale = 0.5
    if not normalized:
        mean = std = rescale = None
    grad = torch.randn(vlmops.patch_embed(x, weight).shape, dtype=x.dtype)
    ours = patch_embed_backward_cuda(grad, x, weight, mean, std, rescale, compute_grad_x)
    expected = torch.ops.vlmops.patch_embed_backward(grad, x, weight, mean, std, rescale, compute_grad_x)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_reference(form, dtype):
    x, weight, bias = make_case(form, B=3, C=3, T=2, P=14, grid=(4, 5), D=96, dtype=torch.float32)
    x, weight, bias = x.cuda(), weight.cuda().to(dtype), bias.cuda().to(dtype)
    pos, cls = _epilogue_args(x.cpu(), weight.cpu(), with_cls=True)
    pos, cls = (None, None) if pos is None else (pos.cuda(), cls.cuda())
    out = vlmops.patch_embed(x, weight, bias, pos_embed=pos, cls_token=cls)
    truth = reference.patch_embed(
        x.double(),
        weight.double(),
        bias.double(),
        pos_embed=None if pos is None else pos.double(),
        cls_token=None if cls is None else cls.double(),
    )
    torch_result = reference.patch_embed(x, weight, bias, pos_embed=pos, cls_token=cls)
    ours_err = (out.double() - truth).abs().max().item()
    torch_err = (torch_result.double() - truth).abs().max().item()
    assert ours_err <= 3 * torch_err + 1e-5, (ours_err, torch_err)


@pytest.mark.requires_cuda
def test_cuda_gradcheck():
    x, weight, bias = make_case("video", B=2, C=2, T=2, P=2, frames=2, grid=(2, 2), D=3)
    args = [t.cuda().requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(lambda x, w, b: vlmops.patch_embed(x, w, b, rescale=0.5), args)
