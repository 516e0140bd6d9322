"""Device parity of patch_embed and of the patched transformers towers: every test runs on CPU (the C++
kernels) and, on a GPU machine, on CUDA (the Triton patch_embed / varlen / gated-cross-attention
kernels and the CUDA C++ RoPE), against float64 oracles or the unpatched model on the same device.

Shapes cross the GPU tiles (patch_embed: 128 x 128 x 32; attention: 128/64-row blocks), head dims are
the real models' (Qwen vision 80, Pixtral 64, Mllama text 128 with GQA), and the ops are proven to run
on the device under test (RecordVlmopsCalls plus the device of their tensor arguments).
"""

import copy
import math

import pytest
import torch
from conftest import DEVICES, RecordVlmopsCalls, capture_cuda_graph
from test_patch_mllama import VISION as MLLAMA_VISION
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    MllamaConfig,
    MllamaForConditionalGeneration,
    PixtralVisionConfig,
    PixtralVisionModel,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

import vlmops
from vlmops import reference

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=True)
def exact_fp32():
    """cuDNN convs and cuBLAS matmuls in true fp32 (the unpatched models and the torch baselines run in
    them on CUDA); restored after the test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def fp32_tol(device):
    # Same math in fp32 on both sides; a GPU reorders reductions (blocked softmax, GEMM split) more.
    return dict(rtol=1e-4, atol=1e-4) if device == "cuda" else dict(rtol=1e-5, atol=1e-5)


class RecordVlmopsDevices(RecordVlmopsCalls):
    """RecordVlmopsCalls, plus the device types of the tensor arguments of every vlmops op."""

    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "vlmops":
            for a in list(args) + list((kwargs or {}).values()):
                if isinstance(a, torch.Tensor):
                    self.devices.add(a.device.type)
        return super().__torch_dispatch__(func, types, args, kwargs)


def to(tree, device):
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to(v, device) for k, v in tree.items()}
    return tree


def max_err(a, b):
    return (a.double() - b.double().to(a.device)).abs().max().item()


# --- patch_embed ------------------------------------------------------------------------------------

# D = 160 crosses the 128-wide N tile; K = 588 (image) / 1176 (video, rows) leave a partial 32-wide K
# step; M = 2 * 90 = 180 patch rows (+ CLS) cross the 128-row M tile in the middle of sample 1.
B, C, T, P, GH, GW, D = 2, 3, 2, 14, 9, 10, 160
FORMS = ["image", "video", "rows3d"]


def make_patch_case(form, dtype, *, seed=0, pixels_uint8=False):
    g = torch.Generator().manual_seed(seed)
    if form == "image":
        shape, kernel = (B, C, GH * P, GW * P), (P, P)
    elif form == "video":
        shape, kernel = (B, C, 2 * T, GH * P, GW * P), (T, P, P)
    else:
        shape, kernel = (B * 45, C * T * P * P), (T, P, P)
    if pixels_uint8:
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    else:
        x = torch.randn(shape, generator=g)
    weight = (torch.randn(D, C, *kernel, generator=g) / math.sqrt(C * math.prod(kernel))).to(dtype)
    bias = torch.randn(D, generator=g).to(dtype)
    if form == "rows3d":
        pos = cls = None
    else:
        L = (GH * GW) * (2 if form == "video" else 1)
        pos = torch.randn(1 + L, D, generator=g).to(dtype)
        cls = torch.randn(D, generator=g).to(dtype)
    return x, weight, bias, pos, cls


def strided(x):
    """A non-contiguous view with x's values: channels-last pixels, or rows inside a wider buffer."""
    if x.dim() == 2:
        wide = torch.zeros(x.shape[0], x.shape[1] + 40, dtype=x.dtype, device=x.device)
        wide[:, 7 : 7 + x.shape[1]] = x
        out = wide[:, 7 : 7 + x.shape[1]]
    else:
        out = x.movedim(1, -1).contiguous().movedim(-1, 1)
    assert not out.is_contiguous() and torch.equal(out, x)
    return out


def opt(t, fn):
    return None if t is None else fn(t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("form", FORMS)
def test_patch_embed_forms_with_pos_cls_and_strides_match_float64(device, form, dtype):
    x, weight, bias, pos, cls = make_patch_case(form, dtype)
    truth = reference.patch_embed(
        x.double(),
        weight.double(),
        bias.double(),
        pos_embed=opt(pos, torch.Tensor.double),
        cls_token=opt(cls, torch.Tensor.double),
    )
    xd, wd, bd, posd, clsd = (opt(t, lambda t: t.to(device)) for t in (x, weight, bias, pos, cls))
    torch_result = reference.patch_embed(xd, wd, bd, pos_embed=posd, cls_token=clsd)
    torch_err = max_err(torch_result, truth)
    for xs in (xd, strided(xd)):
        with RecordVlmopsDevices() as rec:
            out = vlmops.patch_embed(xs, wd, bd, pos_embed=posd, cls_token=clsd)
        assert rec.calls == ["vlmops::patch_embed"], rec.calls
        assert rec.devices == {device}
        assert out.device.type == device and out.dtype == dtype and out.shape == truth.shape
        assert not out.isnan().any()
        err = max_err(out, truth)
        assert err <= 3 * torch_err + (1e-5 if dtype == torch.float32 else 0), (err, torch_err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", FORMS)
def test_patch_embed_uint8_normalization_channels_last_matches_float64(device, form, dtype):
    pixels, weight, bias, pos, _ = make_patch_case(form, dtype, pixels_uint8=True, seed=1)
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    pos = opt(pos, lambda t: t[1:].contiguous())  # no CLS token here: one position per patch
    truth = reference.patch_embed(
        pixels,
        weight.double(),
        bias.double(),
        mean.double(),
        std.double(),
        1 / 255,
        opt(pos, torch.Tensor.double),
        None,
    )
    args = [opt(t, lambda t: t.to(device)) for t in (pixels, weight, bias, mean, std)]
    posd = opt(pos, lambda t: t.to(device))
    torch_result = reference.patch_embed(*args, 1 / 255, posd, None)
    torch_err = max_err(torch_result, truth)
    out = vlmops.patch_embed(strided(args[0]), *args[1:3], mean=args[3], std=args[4], rescale=1 / 255, pos_embed=posd)
    assert out.device.type == device and out.shape == truth.shape and not out.isnan().any()
    err = max_err(out, truth)
    assert err <= 3 * torch_err + (1e-4 if dtype == torch.float32 else 0), (err, torch_err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", FORMS)
def test_patch_embed_backward_grads_of_all_inputs_match_float64(device, form, dtype):
    x, weight, bias, pos, cls = make_patch_case(form, dtype, seed=2)
    x = x.to(dtype)
    # Normalization constants on a float input: grad_x is scaled by rescale / std per channel.
    mean, std, rescale = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.5, 2.0, 0.7]), 0.75
    inputs = [t for t in (x, weight, bias, pos, cls) if t is not None]
    shape = reference.patch_embed(
        x.double(), weight.double(), pos_embed=opt(pos, torch.Tensor.double), cls_token=opt(cls, torch.Tensor.double)
    ).shape
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(3))

    def run(tensors, device, fn):
        leaves = [t.detach().to(device).requires_grad_() for t in tensors]
        xs, w, b, *rest = leaves
        p, c = (rest + [None, None])[:2]
        out = fn(xs, w, b, mean=mean.to(device), std=std.to(device), rescale=rescale, pos_embed=p, cls_token=c)
        out.backward(grad.to(device, out.dtype))
        return out, [t.grad for t in leaves]

    _, truth = run([t.double() for t in inputs], "cpu", reference.patch_embed)
    _, torch_grads = run(inputs, device, reference.patch_embed)
    with RecordVlmopsDevices() as rec:
        out, grads = run(inputs, device, vlmops.patch_embed)
    assert any("patch_embed_backward" in c for c in rec.calls) and rec.devices == {device}
    for name, g, tg, want in zip(["x", "weight", "bias", "pos", "cls"], grads, torch_grads, truth):
        assert g is not None and g.shape == want.shape and g.device.type == device, name
        assert not g.isnan().any(), name
        err, torch_err = max_err(g, want), max_err(tg, want)
        floor = 1e-4 * max(1.0, want.abs().max().item()) if dtype == torch.float32 else 0
        assert err <= 3 * torch_err + floor, (name, err, torch_err)


@pytest.mark.parametrize("device", DEVICES)
def test_patch_embed_uint8_pixels_train_weight_only(device):
    pixels, weight, bias, pos, cls = make_patch_case("video", torch.float32, pixels_uint8=True, seed=4)
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    grads = {}
    for dev, dt in (("cpu", torch.float64), (device, torch.float32)):
        w, b = weight.to(dev, dt).requires_grad_(), bias.to(dev, dt).requires_grad_()
        p, c = pos.to(dev, dt).requires_grad_(), cls.to(dev, dt).requires_grad_()
        fn = reference.patch_embed if dt == torch.float64 else vlmops.patch_embed
        out = fn(pixels.to(dev), w, b, mean=mean.to(dev), std=std.to(dev), rescale=1 / 255, pos_embed=p, cls_token=c)
        (out * torch.linspace(-1, 1, out.shape[-1], device=dev, dtype=dt)).sum().backward()
        grads[dt] = [w.grad, b.grad, p.grad, c.grad]
    for got, want in zip(grads[torch.float32], grads[torch.float64]):
        assert got.device.type == device
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("device", DEVICES)
def test_patch_embed_empty_batch_returns_empty(device):
    x, weight, bias, pos, cls = make_patch_case("image", torch.float32)
    out = vlmops.patch_embed(
        x[:0].to(device), weight.to(device), bias.to(device), pos_embed=pos.to(device), cls_token=cls.to(device)
    )
    assert out.shape == (0, 1 + GH * GW, D) and out.device.type == device
    rows = vlmops.patch_embed(
        torch.zeros(0, C * T * P * P, device=device),
        weight.to(device).view(D, C, 1, P, P).expand(D, C, T, P, P).contiguous(),
        bias.to(device),
    )
    assert rows.shape == (0, D)


@pytest.mark.parametrize("device", DEVICES)
# rows3d's opcheck on CPU lives in test_patch_embed.py; on CUDA both forms share the kernel launch path.
@pytest.mark.parametrize("form", ["image", pytest.param("rows3d", marks=pytest.mark.requires_cuda)])
def test_patch_embed_opcheck(device, form):
    g = torch.Generator().manual_seed(5)
    if form == "image":
        x, weight = torch.randn(2, 3, 8, 12, generator=g), torch.randn(20, 3, 4, 4, generator=g)
        pos, cls = torch.randn(1 + 6, 20, generator=g), torch.randn(20, generator=g)
    else:
        x, weight = torch.randn(5, 3 * 2 * 4 * 4, generator=g), torch.randn(20, 3, 2, 4, 4, generator=g)
        pos = cls = None
    bias = torch.randn(20, generator=g)
    args = [opt(t, lambda t: t.to(device)) for t in (x, weight, bias)]
    mean, std = torch.tensor([0.1, 0.2, 0.3], device=device), torch.tensor([0.5, 2.0, 0.7], device=device)
    args[0].requires_grad_()
    args[1].requires_grad_()
    torch.library.opcheck(
        torch.ops.vlmops.patch_embed,
        (*args, mean, std, 0.5, opt(pos, lambda t: t.to(device)), opt(cls, lambda t: t.to(device))),
    )


@pytest.mark.requires_cuda
def test_patch_embed_captures_in_cuda_graph():
    pixels, weight, bias, pos, cls = make_patch_case("image", torch.bfloat16, pixels_uint8=True, seed=6)
    pixels, weight, bias, pos, cls = (t.cuda() for t in (pixels, weight, bias, pos, cls))
    mean, std = torch.tensor(CLIP_MEAN, device="cuda"), torch.tensor(CLIP_STD, device="cuda")

    def fwd():
        return vlmops.patch_embed(
            pixels, weight, bias, mean=mean, std=std, rescale=1 / 255, pos_embed=pos, cls_token=cls
        )

    graph, out = capture_cuda_graph(fwd)
    new = torch.randint(
        0, 256, pixels.shape, dtype=torch.uint8, device="cuda", generator=torch.Generator("cuda").manual_seed(7)
    )
    pixels.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, fwd(), rtol=0, atol=0)


# --- Qwen2-VL / Qwen2.5-VL ----------------------------------------------------------------------------

IMAGE, VIDEO, VISION_START = 190, 191, 192
PATCH_ROW = 3 * 2 * 14 * 14
# A 12x16 image (192 patches: one full-attention segment longer than the 128-row tile; 3x4 windows of
# 4x4 patches), a 6x10 image (windows cut by its edges) and a video of two temporal patches.
IMAGE_GRID = torch.tensor([[1, 12, 16], [1, 6, 10]])
VIDEO_GRID = torch.tensor([[2, 4, 8]])
TEXT = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=128,
    vocab_size=200,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
)
TOKENS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START)
# Vision head dim 80 = 160 / 2 heads, as in every Qwen2/2.5-VL checkpoint (1280 / 16).
VISION = dict(depth=4, num_heads=2, spatial_merge_size=2, patch_size=14, temporal_patch_size=2)


def qwen2_5_tower(dtype=torch.float32):
    cfg = Qwen2_5_VLConfig(
        text_config=TEXT,
        vision_config=dict(
            VISION,
            hidden_size=160,
            intermediate_size=128,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=[1, 3],
        ),
        **TOKENS,
    )
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config, attn_implementation="sdpa")
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(int(IMAGE_GRID.prod(-1).sum() + VIDEO_GRID.prod(-1).sum()), PATCH_ROW, generator=g)
    return tower.eval().to(dtype), pixels, torch.cat([IMAGE_GRID, VIDEO_GRID])


@pytest.mark.parametrize("device", DEVICES)
def test_qwen2_5_vl_tower_window_and_full_blocks_match_on_device(device):
    tower, pixels, grid = qwen2_5_tower()
    tower = tower.to(device)
    patched = copy.deepcopy(tower)
    vlmops.patch_model(patched)
    pixels, grid = pixels.to(device), grid.to(device)
    with torch.no_grad():
        expected = tower(pixels, grid_thw=grid, output_hidden_states=True)
        with RecordVlmopsDevices() as rec:
            got = patched(pixels, grid_thw=grid, output_hidden_states=True)
    calls = set(rec.calls)
    assert any("patch_embed" in c for c in calls) and any("varlen_attention" in c for c in calls)
    assert any("rope" in c for c in calls)
    assert rec.devices == {device}
    assert len(got.hidden_states) == len(expected.hidden_states) == 5
    for layer, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states)):
        assert a.device.type == device and not a.isnan().any()
        torch.testing.assert_close(a, b, **fp32_tol(device), msg=lambda m, layer=layer: f"block {layer}: {m}")
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, **fp32_tol(device))


@pytest.mark.parametrize("device", DEVICES)
def test_qwen2_5_vl_tower_bf16_error_within_unpatched_bf16_error(device):
    tower, pixels, grid = qwen2_5_tower()
    tower, pixels, grid = tower.to(device), pixels.to(device), grid.to(device)
    with torch.no_grad():
        truth = tower(pixels, grid_thw=grid).pooler_output.double()
        tower_bf16 = copy.deepcopy(tower).to(torch.bfloat16)
        patched = copy.deepcopy(tower_bf16)
        vlmops.patch_model(patched)
        theirs = tower_bf16(pixels.bfloat16(), grid_thw=grid).pooler_output
        with RecordVlmopsDevices() as rec:
            ours = patched(pixels.bfloat16(), grid_thw=grid).pooler_output
    assert any("varlen_attention" in c for c in rec.calls) and rec.devices == {device}
    assert ours.dtype == torch.bfloat16 and not ours.isnan().any()
    ours_err, their_err = max_err(ours, truth), max_err(theirs, truth)
    assert ours_err <= 3 * their_err, (ours_err, their_err)


@pytest.mark.parametrize("device", DEVICES)
def test_qwen2_5_vl_tower_backward_parameter_grads_match_unpatched(device):
    tower, pixels, grid = qwen2_5_tower()
    tower = tower.to(device)
    patched = copy.deepcopy(tower)
    vlmops.patch_model(patched)
    pixels, grid = pixels.to(device), grid.to(device)
    weights = None
    for model in (tower, patched):
        with RecordVlmopsDevices() as rec:
            out = model(pixels, grid_thw=grid).pooler_output
            if weights is None:
                weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(device)
            (out * weights).sum().backward()
    assert any("varlen_attention_backward" in c for c in rec.calls) and rec.devices == {device}
    a, b = dict(patched.named_parameters()), dict(tower.named_parameters())
    assert a.keys() == b.keys()
    for name in b:
        assert a[name].grad is not None, name
        assert not a[name].grad.isnan().any(), name
        scale = max(1.0, b[name].grad.abs().max().item())
        torch.testing.assert_close(
            a[name].grad, b[name].grad, rtol=1e-3, atol=1e-4 * scale, msg=lambda m, name=name: f"{name}: {m}"
        )


def qwen2_vl():
    vision = dict(VISION, embed_dim=160, hidden_size=64, mlp_ratio=2)
    cfg = Qwen2VLConfig(text_config=TEXT, vision_config=vision, **TOKENS)
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(int(IMAGE_GRID.prod(-1).sum()), PATCH_ROW, generator=g)
    pixel_values_videos = torch.randn(int(VIDEO_GRID.prod(-1).sum()), PATCH_ROW, generator=g)
    units = [int(n) for n in IMAGE_GRID.prod(-1) // 4]
    video = [VISION_START] + [VIDEO] * (int(VIDEO_GRID.prod(-1).sum()) // 4)
    ids = [3, 4, VISION_START] + [IMAGE] * units[0] + [5, VISION_START] + [IMAGE] * units[1] + video + [6, 7]
    input_ids = torch.tensor([ids])
    mm_token_type_ids = (input_ids == IMAGE).int() + 2 * (input_ids == VIDEO).int()
    return model, dict(
        input_ids=input_ids,
        mm_token_type_ids=mm_token_type_ids,
        pixel_values=pixel_values,
        image_grid_thw=IMAGE_GRID,
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=VIDEO_GRID,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_qwen2_vl_generate_gives_identical_tokens_on_device(device):
    model, inputs = qwen2_vl()
    model, inputs = model.to(device), to(inputs, device)
    patched = copy.deepcopy(model)
    vlmops.patch_model(patched)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected_logits = model(**inputs).logits
        expected = model.generate(**inputs, **kwargs)
        with RecordVlmopsDevices() as rec:
            logits = patched(**inputs).logits
            got = patched.generate(**inputs, **kwargs)
    assert any("patch_embed" in c for c in rec.calls) and any("varlen_attention" in c for c in rec.calls)
    assert rec.devices == {device}
    torch.testing.assert_close(logits, expected_logits, **fp32_tol(device))
    assert got.shape[1] == inputs["input_ids"].shape[1] + 4
    assert torch.equal(got, expected)


# --- Mllama -----------------------------------------------------------------------------------------

# Cross-attention head dim 128 (256 / 2 heads) with one KV head: Llama 3.2 Vision's head dim and GQA.
MLLAMA_TEXT = dict(
    vocab_size=64,
    hidden_size=256,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=1,
    cross_attention_layers=[1],
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def mllama():
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(
        MllamaConfig(vision_config=MLLAMA_VISION, text_config=MLLAMA_TEXT, image_token_index=63)
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.8)  # transformers opens them at 0, which would hide the cross-attention
    g = torch.Generator().manual_seed(1)
    Bm, Lq, n_images, n_tiles = 2, 12, 2, 4
    input_ids = torch.randint(3, 60, (Bm, Lq), generator=g)
    pixel_values = torch.randn(Bm, n_images, n_tiles, 3, 28, 28, generator=g)
    aspect_ratio_ids = torch.tensor([[2, 6], [6, 0]])
    aspect_ratio_mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 1, 1]], [[1, 1, 1, 1], [0, 0, 0, 0]]])
    cross_attention_mask = torch.zeros(Bm, Lq, n_images, n_tiles, dtype=torch.int64)
    cross_attention_mask[0, 3:7, 0, :2] = 1  # rows 0-2 of sample 0: text before the first image
    cross_attention_mask[0, 7:, 1, :] = 1
    cross_attention_mask[1, 1:, 0, :] = 1
    return model, dict(
        input_ids=input_ids,
        pixel_values=pixel_values,
        aspect_ratio_ids=aspect_ratio_ids,
        aspect_ratio_mask=aspect_ratio_mask,
        cross_attention_mask=cross_attention_mask,
        attention_mask=torch.ones(Bm, Lq, dtype=torch.int64),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_mllama_logits_and_generate_match_on_device(device):
    model, inputs = mllama()
    model, inputs = model.to(device), to(inputs, device)
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert [r.path for r in report.replacements] == ["model.language_model.layers.1.cross_attn", "model"]
    with torch.no_grad():
        expected = model(**inputs).logits
        with RecordVlmopsDevices() as rec:
            logits = patched(**inputs).logits
        assert any("gated_cross_attention" in c for c in rec.calls) and rec.devices == {device}
        assert not logits.isnan().any()
        torch.testing.assert_close(logits, expected, **fp32_tol(device))
        expected_ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        with RecordVlmopsDevices() as rec:
            ids = patched.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert sum("gated_cross_attention" in c for c in rec.calls) >= 4 and rec.devices == {device}
    assert torch.equal(ids, expected_ids)


# --- Pixtral / Mistral3 -----------------------------------------------------------------------------

PIX_IMAGE = 10
# Head dim 64 as in Pixtral-12B (1024 / 16). 224 px / 14 = 16x16 = 256 patches for the largest image:
# a segment of two 128-row tiles; the others are 8x16 = 128 (exactly one tile) and 4x9 = 36.
PIX_VISION = dict(
    hidden_size=128,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    head_dim=64,
    image_size=224,
    patch_size=14,
)
IMAGE_SIZES = torch.tensor([[224, 224], [112, 224], [56, 126]])


def pix_pixels():
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("device", DEVICES)
def test_pixtral_tower_matches_every_layer_on_device(device):
    torch.manual_seed(0)
    model = PixtralVisionModel._from_config(PixtralVisionConfig(**PIX_VISION), attn_implementation="sdpa").eval()
    model = model.to(device)
    patched = copy.deepcopy(model)
    assert vlmops.patch_model(patched).families == ["Pixtral"]
    x, sizes = pix_pixels().to(device), IMAGE_SIZES.to(device)
    with torch.no_grad():
        expected = model(x, image_sizes=sizes, output_hidden_states=True)
        with RecordVlmopsDevices() as rec:
            got = patched(x, image_sizes=sizes, output_hidden_states=True)
    calls = set(rec.calls)
    assert any("patch_embed" in c for c in calls) and any("varlen_attention" in c for c in calls)
    assert any("rope" in c for c in calls) and rec.devices == {device}
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    for a, b in zip(got.hidden_states, expected.hidden_states):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, **fp32_tol(device))


@pytest.mark.parametrize("device", DEVICES)
def test_mistral3_features_and_logits_match_on_device(device):
    torch.manual_seed(0)
    text = dict(
        model_type="mistral",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=128,
        vocab_size=100,
        head_dim=32,
    )
    config = Mistral3Config(
        vision_config=dict(PIX_VISION, model_type="pixtral"),
        text_config=text,
        image_token_index=PIX_IMAGE,
        spatial_merge_size=2,
    )
    model = Mistral3ForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval().to(device)
    tokens = [int(n) for n in (IMAGE_SIZES // 28).prod(-1)]
    ids = [1, 2] + [PIX_IMAGE] * tokens[0] + [3] + [PIX_IMAGE] * tokens[1] + [4] + [PIX_IMAGE] * tokens[2] + [5]
    input_ids = torch.tensor([ids], device=device)
    patched = copy.deepcopy(model)
    assert vlmops.patch_model(patched).families == ["Pixtral"]
    x, sizes = pix_pixels().to(device), IMAGE_SIZES.to(device)
    with torch.no_grad():
        expected = torch.cat(model.model.get_image_features(x, sizes).pooler_output)
        expected_logits = model(input_ids=input_ids, pixel_values=x, image_sizes=sizes).logits
        with RecordVlmopsDevices() as rec:
            got = torch.cat(patched.model.get_image_features(x, sizes).pooler_output)
            logits = patched(input_ids=input_ids, pixel_values=x, image_sizes=sizes).logits
    assert any("varlen_attention" in c for c in rec.calls) and rec.devices == {device}
    torch.testing.assert_close(got, expected, **fp32_tol(device))
    torch.testing.assert_close(logits, expected_logits, **fp32_tol(device))
