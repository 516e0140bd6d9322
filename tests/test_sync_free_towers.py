"""No host read in the patched vision towers: every family's patched forward, given the metadata its
caller already has, reads no tensor value on the host (proved on CPU with ``RecordHostSyncs``, so it
would not synchronize on a GPU and can be captured in a CUDA graph); the detector catches the
unpatched towers; the device-built metadata that replaced transformers' host loops matches it."""

import copy

import pytest
import test_patch_clip as clip
import test_patch_mllama as mllama
import test_patch_pixel_shuffle as pixel_shuffle
import test_patch_pixtral as pixtral
import test_patch_qwen as qwen
import torch
from conftest import RecordHostSyncs

import vlmops
from vlmops.models.qwen_vl import qwen3_vl_position_interpolation


def qwen_tower(family):
    """A Qwen tower and its call on two images and a video (grids with t > 1)."""
    model, inputs = qwen.build(family)
    pixels = torch.cat([inputs["pixel_values"], inputs["pixel_values_videos"]])
    grid = torch.cat([qwen.IMAGE_GRID, qwen.VIDEO_GRID])
    return model.model.visual, lambda tower, x: tower(x["pixels"], grid_thw=x["grid"]), dict(pixels=pixels, grid=grid)


def pixtral_tower(family):
    """Three images of different sizes; the caller passes the packed length it knows."""
    num_patches = int((pixtral.IMAGE_SIZES // 14).prod(-1).sum())

    def call(tower, x):
        return tower(x["pixels"], image_sizes=x["sizes"], num_patches=num_patches)

    return pixtral.tower(), call, dict(pixels=pixtral.pixels(), sizes=pixtral.IMAGE_SIZES)


def clip_tower(family):
    torch.manual_seed(1)
    return clip.build_tower(family), lambda tower, x: tower(x["pixels"]), dict(pixels=torch.randn(2, 3, 56, 56))


def llava_tower(family):
    """The LLaVA model's image path (tower, feature layer, projector); LLaVA-OneVision's tower (its
    model's anyres packing reads the image sizes in transformers' code, which vlmops does not patch)."""
    model, inputs = clip.VLMS[family]()
    if family == "LLaVA":
        return model, lambda m, x: clip.image_features(m, x), dict(pixel_values=inputs["pixel_values"])
    return model, lambda m, x: m.model.vision_tower(x["pixels"]), dict(pixels=inputs["pixel_values"][0])


def internvl_tower(family):
    model, pixels, _ = pixel_shuffle.build(family)
    return model, lambda m, x: pixel_shuffle.image_features(m, x["pixels"]), dict(pixels=pixels)


def idefics3_connector(family):
    """The patched connector on the tower's features (the vision tower is transformers' own: its
    SDPA mask builder reads the patch mask on the host)."""
    model, pixels, _ = pixel_shuffle.build(family)
    with torch.no_grad():
        features = model.model.vision_model(pixels[0]).last_hidden_state
    return model, lambda m, x: m.model.connector(x["features"]), dict(features=features)


def mllama_vision(family):
    """Mllama's vision model (transformers' own: vlmops patches Mllama's text cross-attention)."""
    model, inputs = mllama.build()
    args = {k: inputs[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}
    return model, lambda m, x: m.model.vision_model(**x), args


# family -> (builder of (module, call(module, inputs), inputs), the vlmops ops its patched call must run;
# none where vlmops patches none of it)
TOWERS = {
    "Qwen2-VL": (qwen_tower, {"vlmops::patch_embed", "vlmops::varlen_attention"}),
    "Qwen2.5-VL": (qwen_tower, {"vlmops::patch_embed", "vlmops::varlen_attention", "vlmops::rms_norm"}),
    "Qwen3-VL": (qwen_tower, {"vlmops::patch_embed", "vlmops::varlen_attention"}),
    "Pixtral": (pixtral_tower, {"vlmops::patch_embed", "vlmops::varlen_attention", "vlmops::silu_mul"}),
    "CLIP": (clip_tower, {"vlmops::patch_embed", "vlmops::varlen_attention"}),
    "SigLIP": (clip_tower, {"vlmops::patch_embed", "vlmops::varlen_attention"}),
    "LLaVA": (llava_tower, {"vlmops::patch_embed", "vlmops::varlen_attention"}),
    "LLaVA-OneVision": (llava_tower, {"vlmops::patch_embed", "vlmops::varlen_attention"}),
    "InternVL": (internvl_tower, {"vlmops::pixel_shuffle_layer_norm"}),
    "Idefics3": (idefics3_connector, {"vlmops::pixel_shuffle"}),
    "SmolVLM": (idefics3_connector, {"vlmops::pixel_shuffle"}),
    "Mllama": (mllama_vision, set()),
}


@pytest.mark.parametrize("family", list(TOWERS))
def test_patched_tower_reads_nothing_on_the_host(family):
    builder, ops = TOWERS[family]
    module, call, inputs = builder(family)
    expected_module = copy.deepcopy(module)
    vlmops.patch_model(module)
    with torch.no_grad():
        with RecordHostSyncs() as recorder:
            got = call(module, inputs)
        expected = call(expected_module, inputs)
    assert recorder.reads == []
    assert recorder.syncs == []
    # The recorded call really ran the patched code, and gave transformers' result.
    assert ops <= set(recorder.calls)
    torch.testing.assert_close(result(got), result(expected), rtol=1e-5, atol=1e-5)


def result(output):
    """The features of a tower's output: its pooled output where it has one, else its last hidden state."""
    for name in ("pooler_output", "last_hidden_state"):
        value = getattr(output, name, None)
        if value is not None:
            return torch.cat(list(value)) if isinstance(value, (list, tuple)) else value
    return output


@pytest.mark.parametrize("family", ["Qwen2.5-VL", "Qwen3-VL", "Pixtral"])
def test_unpatched_tower_is_caught_reading_the_host(family):
    """The detector can fail: transformers' towers read grid_thw / image_sizes back (Qwen3-VL's
    position interpolation sizes its output from a sum on the device)."""
    builder, _ = TOWERS[family]
    module, call, inputs = builder(family)
    with torch.no_grad(), RecordHostSyncs() as recorder:
        call(module, inputs)
    assert recorder.reads or recorder.syncs


def test_detector_catches_a_boolean_gather():
    """A mask-indexed gather (the packing the patched Pixtral forward replaced) is a sync by dispatch."""
    x = torch.randn(4, 3)
    with RecordHostSyncs() as recorder:
        x[x[:, 0] > 0]
    assert recorder.syncs == ["aten::index"] and recorder.reads == []


@pytest.mark.parametrize("how", ["python sizes", "num_patches", "tensor sizes", "no sizes"])
def test_pixtral_packed_length_sources(how):
    """Every way the caller gives the packed length gives transformers' output; only a tensor of
    sizes without num_patches is read on the host."""
    tower = pixtral.tower()
    patched = copy.deepcopy(tower)
    vlmops.patch_model(patched)
    pixels = pixtral.pixels()
    sizes = pixtral.IMAGE_SIZES if how != "no sizes" else None
    kwargs = {
        "python sizes": dict(image_sizes=pixtral.IMAGE_SIZES.tolist()),
        "num_patches": dict(image_sizes=sizes, num_patches=int((pixtral.IMAGE_SIZES // 14).prod(-1).sum())),
        "tensor sizes": dict(image_sizes=sizes),
        "no sizes": {},
    }[how]
    with torch.no_grad():
        expected = tower(pixels, image_sizes=sizes).last_hidden_state
        with RecordHostSyncs() as recorder:
            got = patched(pixels, **kwargs).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert bool(recorder.reads) == (how == "tensor sizes")


def test_pixtral_padding_segment_leaves_the_images_alone():
    """num_patches past the images' patches: the padding is a segment of its own (what a CUDA-graph
    bucket feeds the tower), so the real tokens are transformers' and come first."""
    tower = pixtral.tower()
    patched = copy.deepcopy(tower)
    vlmops.patch_model(patched)
    pixels = pixtral.pixels()
    real = int((pixtral.IMAGE_SIZES // 14).prod(-1).sum())
    with torch.no_grad():
        expected = tower(pixels, image_sizes=pixtral.IMAGE_SIZES).last_hidden_state
        got = patched(pixels, image_sizes=pixtral.IMAGE_SIZES, num_patches=real + 13).last_hidden_state
    assert got.shape[1] == real + 13
    torch.testing.assert_close(got[:, :real], expected, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("side", [1, 4, 7])
def test_qwen3_vl_position_interpolation_matches_transformers(mode, align_corners, side):
    vision_utils = pytest.importorskip("transformers.vision_utils")
    interpolation = getattr(vision_utils, "get_vision_interpolation_indices_and_weights", None)
    if interpolation is None:
        pytest.skip("transformers < 5.17 has only the bilinear helper (the tower test covers it)")
    # Images, a video, a one-row image and an empty row (t = 0).
    grid = torch.tensor([[1, 8, 12], [2, 4, 8], [1, 2, 2], [0, 4, 4], [3, 6, 2]])
    num_patches = int(grid.prod(-1).sum())
    indices, weights = qwen3_vl_position_interpolation(
        grid, side, 2, num_patches, mode=mode, align_corners=align_corners
    )
    expected_indices, expected_weights = interpolation(
        grid, side, mode=mode, align_corners=align_corners, spatial_merge_size=2
    )
    assert indices.dtype == torch.int64 and weights.dtype == torch.float32
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-6, atol=1e-7)


def test_qwen3_vl_position_interpolation_rejects_bad_arguments():
    grid = torch.tensor([[1, 4, 4]])
    with pytest.raises(ValueError, match="mode"):
        qwen3_vl_position_interpolation(grid, 4, 2, 16, mode="nearest")
    with pytest.raises(ValueError, match="grid_thw"):
        qwen3_vl_position_interpolation(grid[:, :2], 4, 2, 16)
