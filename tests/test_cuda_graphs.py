"""vlmops.cuda_graph_tower: bucket selection, the padding (run eagerly on CPU: the padded call, cut back,
is the unpadded call), argument errors, the runner's logic with each graph replaced by an eager rerun
(CPU) and with real CUDA graphs (GPU) against the eager tower; on a GPU also every other family's
tower captured whole and replayed."""

import copy

import pytest
import test_patch_pixtral as pixtral
import torch
from conftest import DEVICES, capture_cuda_graph
from test_sync_free_towers import TOWERS, qwen_tower, result

import vlmops
from vlmops.cuda_graphs import CUDAGraphTower, pad_pixtral_inputs, pad_qwen_inputs, select_bucket, unpad_outputs

QWEN = ["Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"]


def patched(module):
    module = copy.deepcopy(module)
    vlmops.patch_model(module)
    return module


def assert_same_output(got, expected):
    """Every tensor field (lists item by item) equal within fp32 tolerance, None where None."""
    for name in expected.keys() | got.keys():
        a, b = got.get(name), expected.get(name)
        if isinstance(b, (list, tuple)):
            assert len(a) == len(b), name
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_select_bucket():
    buckets = [64, 256, 1024]
    assert [select_bucket(n, buckets) for n in (0, 1, 64, 65, 256, 1000, 1024)] == [64, 64, 64, 256, 256, 1024, 1024]
    assert select_bucket(1025, buckets) is None


@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("extra", [0, 4, 36])
def test_qwen_padding_segment_leaves_the_images_alone(family, extra):
    """What a replay computes, run eagerly on CPU: the call padded to a bucket with one more image and
    zero grid rows (empty images), through the patched tower, cut back to the real tokens."""
    tower, _, inputs = qwen_tower(family)
    tower = patched(tower)
    pixels, grid = inputs["pixels"], inputs["grid"]
    bucket = pixels.shape[0] + extra
    rows = torch.full((bucket + 8, pixels.shape[1]), 7.0)  # stale values where the padding goes
    padded_grid = torch.full((grid.shape[0] + 3, 3), 5, dtype=torch.long)
    pad_qwen_inputs(pixels, grid, bucket, 2, rows, padded_grid)
    assert padded_grid[: grid.shape[0]].equal(grid) and padded_grid[grid.shape[0] + 1 :].eq(0).all()
    assert int(padded_grid.prod(-1).sum()) == bucket
    with torch.no_grad():
        expected = tower(pixels, grid_thw=grid)
        got = unpad_outputs(tower(rows[:bucket], grid_thw=padded_grid), pixels.shape[0], bucket, 4)
    assert type(got) is type(expected)
    assert_same_output(got, expected)


def test_qwen_padding_rejects_what_it_cannot_pad():
    rows, grid = torch.zeros(16, 3), torch.zeros(3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="cannot pad 16 tokens to 8"):
        pad_qwen_inputs(torch.zeros(16, 3), torch.tensor([[1, 4, 4]]), 8, 2, rows, grid)
    with pytest.raises(ValueError, match="units of 4"):
        pad_qwen_inputs(torch.zeros(8, 3), torch.tensor([[1, 2, 4]]), 10, 2, rows, grid)
    with pytest.raises(ValueError, match="padding row"):
        pad_qwen_inputs(torch.zeros(8, 3), torch.tensor([[1, 2, 4]] * 3), 16, 2, rows, grid)


@pytest.mark.parametrize("sizes", ["tensor", "none"])
def test_pixtral_canvas_padding_leaves_the_images_alone(sizes):
    """A Pixtral call copied into a larger canvas with an extra empty image slot, run on a bucket larger
    than its patches, cut back."""
    tower = pixtral.tower()
    patched_tower = patched(tower)
    pixels = pixtral.pixels()[:, :, :98, :]  # 7 x 8 patches per slot: the canvas (8 x 8) is larger
    image_sizes = torch.tensor([[98, 84], [56, 112], [28, 56]]) if sizes == "tensor" else None
    canvas = torch.full((4, 3, 112, 112), 3.0)  # stale pixels outside the images
    out_sizes = torch.full((4, 2), 9, dtype=torch.long)
    pad_pixtral_inputs(pixels, image_sizes, 14, canvas, out_sizes)
    assert out_sizes[3].eq(0).all()
    tokens = int((out_sizes // 14).prod(-1).sum())
    bucket = tokens + 20
    with torch.no_grad():
        expected = tower(pixels, image_sizes=image_sizes)
        got = patched_tower(canvas, image_sizes=out_sizes, num_patches=bucket)
    assert got.last_hidden_state.shape[1] == bucket
    assert_same_output(unpad_outputs(got, tokens, bucket), expected)


def test_pixtral_canvas_rejects_larger_images():
    with pytest.raises(ValueError, match="do not fit the canvas"):
        pad_pixtral_inputs(torch.zeros(2, 3, 56, 56), None, 14, torch.zeros(2, 3, 28, 56), torch.zeros(2, 2))


def test_argument_errors():
    tower, _, _ = qwen_tower("Qwen2.5-VL")
    with pytest.raises(ValueError, match="not a vision tower patched by vlmops.patch_model"):
        vlmops.cuda_graph_tower(tower)
    clip_tower = patched(TOWERS["CLIP"][0]("CLIP")[0])
    with pytest.raises(ValueError, match="CLIPVisionModel is not a vision tower patched"):
        vlmops.cuda_graph_tower(clip_tower)
    tower = patched(tower)
    with pytest.raises(ValueError, match="multiples of spatial_merge_size\\*\\*2 = 4.*\\[6\\]"):
        vlmops.cuda_graph_tower(tower, buckets=(64, 6))
    for buckets in ((), (0,), (64.0,)):
        with pytest.raises(ValueError, match="buckets must be positive ints"):
            vlmops.cuda_graph_tower(tower, buckets=buckets)
    with pytest.raises(ValueError, match="max_images must be an int >= 1"):
        vlmops.cuda_graph_tower(tower, max_images=0)
    with pytest.raises(ValueError, match="training mode"):
        vlmops.cuda_graph_tower(copy.deepcopy(tower).train())
    with pytest.raises(ValueError, match="CUDA graphs need the tower on a CUDA device, it is on cpu"):
        vlmops.cuda_graph_tower(tower)


def to(inputs, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def tensors(output):
    """The tensors of a tower output, lists flattened, in field order."""
    for value in output.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, torch.Tensor):
                yield item


class EagerReplayTower(CUDAGraphTower):
    """The runner with every graph replaced by a rerun of the captured call whose result is written into
    the captured output tensors, as a replay rewrites them: the runner's own logic (static buffers,
    padding, bucket choice, cutting, fallback) on any device."""

    def _capture_graph(self, fn):
        output = fn()

        class Replay:
            def replay(self):
                for captured, new in zip(tensors(output), tensors(fn()), strict=True):
                    captured.copy_(new)

        return Replay(), output


def runner_for(tower, device, buckets, max_images):
    if device == "cuda":
        return vlmops.cuda_graph_tower(tower, buckets=buckets, max_images=max_images)
    return EagerReplayTower(tower, buckets, max_images)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", QWEN)
def test_qwen_cuda_graph_tower_matches_eager(family, device):
    tower, _, inputs = qwen_tower(family)
    tower = patched(tower.to(device))  # patched on its device, as a user does (layouts depend on it)
    pixels, grid = inputs["pixels"].to(device), inputs["grid"].to(device)
    runner = runner_for(tower, device, (64, 256), 8)
    # Two images (96 + 60 tokens) and a video (64): bucket 256; the video alone fills bucket 64 exactly
    # (no padding image); the images alone (156) after it: bucket 256 again, over the first call's
    # rows; all of it twice (440 tokens) runs eagerly.
    calls = [
        (pixels, grid),
        (pixels[156:], grid[2:]),
        (pixels[:156], grid[:2]),
        (torch.cat([pixels, pixels]), torch.cat([grid, grid])),
    ]
    with torch.no_grad():
        results = [runner(rows, grid_thw) for rows, grid_thw in calls]
        for (rows, grid_thw), got in zip(calls, results):  # each result survives the later replays
            assert_same_output(got, tower(rows, grid_thw=grid_thw))
    assert runner.eager_calls == 1 and sorted(runner.graphs) == [64, 256]


@pytest.mark.parametrize("device", DEVICES)
def test_pixtral_cuda_graph_tower_matches_eager(device):
    tower = patched(pixtral.tower().to(device))
    pixels, sizes = pixtral.pixels().to(device), pixtral.IMAGE_SIZES
    runner = runner_for(tower, device, (64, 128), 4)
    # Host sizes (88 patches: bucket 128), a device tensor with num_patches (40: bucket 64), no sizes
    # (3 x 64 patches: eager), then smaller images than the canvas (2 x 4 x 8 = 64: bucket 64).
    calls = [
        (pixels, dict(image_sizes=sizes.tolist())),
        (pixels[1:], dict(image_sizes=sizes[1:].to(device), num_patches=40)),
        (pixels, dict(image_sizes=None)),
        (pixels[:2, :, :56, :], dict(image_sizes=None)),
    ]
    with torch.no_grad():
        results = [runner(images, **kwargs) for images, kwargs in calls]
        for (images, kwargs), got in zip(calls, results):
            assert_same_output(got, tower(images, image_sizes=kwargs["image_sizes"]))
    assert runner.eager_calls == 1


@pytest.mark.requires_cuda
@pytest.mark.parametrize("family", [f for f in TOWERS if f not in (*QWEN, "Pixtral")])
def test_other_towers_capture_in_a_cuda_graph(family):
    """The fixed-size towers and connectors (static shapes per batch) captured whole and replayed."""
    builder, _ = TOWERS[family]
    module, call, inputs = builder(family)
    module = patched(module.cuda())
    inputs = to(inputs, "cuda")
    with torch.no_grad():
        expected = result(call(module, inputs))
        graph, output = capture_cuda_graph(lambda: call(module, inputs))
        graph.replay()
    torch.testing.assert_close(result(output), expected, rtol=1e-5, atol=1e-5)
