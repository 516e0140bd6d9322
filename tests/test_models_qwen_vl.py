"""vlmops.models.qwen_vl: the Qwen2/2.5/3-VL builders (vision RoPE positions, Qwen2.5-VL's window index,
text M-RoPE position ids and tables) against transformers' own functions, the inputs transformers rejects
(ValueError naming the argument on CPU, a device assertion elsewhere), no host read with the sizes given,
torch.compile, and hypothesis over grids and sequences."""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
from transformers.models.qwen2_vl import modeling_qwen2_vl
from transformers.models.qwen3_vl import modeling_qwen3_vl
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

import vlmops

# Grids exercising non-square images, videos (t > 1) and several images in one packed sequence.
VISION_GRIDS = [
    [[1, 4, 6]],
    [[1, 8, 4], [2, 4, 4], [1, 6, 10]],
    [[3, 2, 8]],
]

# Qwen2.5-VL's window layout (window_size 112, patch 14, merge 2: 4x4 merged units per window).
# Grids: odd window counts, sizes that divide the window exactly (transformers pads a whole empty
# window row/column there), videos (t > 1), several images at once, a grid smaller than one window.
WINDOW_GRIDS = [
    [[1, 16, 16]],
    [[1, 18, 30], [2, 10, 6], [1, 2, 2]],
    [[3, 34, 22]],
    [[1, 32, 32], [1, 14, 6], [4, 8, 12]],
    [[1, 2, 2]],
]


def tokens(grid):
    return sum(t * h * w for t, h, w in grid)


# ---- vision RoPE positions ---------------------------------------------------------------------------


@pytest.mark.parametrize("grid", VISION_GRIDS)
@pytest.mark.parametrize("merge", [1, 2])
def test_vision_positions_match_transformers(grid, merge):
    grid_thw = torch.tensor(grid)
    expected = get_vision_position_ids(grid_thw, merge)
    assert torch.equal(vlmops.vision_rope_positions(grid_thw, merge), expected)
    assert torch.equal(vlmops.vision_rope_positions(grid_thw.int(), merge, num_tokens=expected.shape[0]), expected)
    assert torch.equal(vlmops.vision_rope_positions(grid_thw, merge, expected.shape[0], check_values=False), expected)


@settings(max_examples=40, deadline=None)
@given(merge=st.integers(1, 3), data=st.data())
def test_hypothesis_vision_positions_match_transformers(merge, data):
    grid = data.draw(
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 5)), min_size=0, max_size=4)
    )
    grid = [[t, h * merge, w * merge] for t, h, w in grid]
    grid_thw = torch.tensor(grid, dtype=torch.long).view(-1, 3)
    got = vlmops.vision_rope_positions(grid_thw, merge, num_tokens=tokens(grid))
    if grid:
        assert torch.equal(got, get_vision_position_ids(grid_thw, merge))
    else:
        assert got.shape == (0, 2)


# Inputs transformers rejects (its get_vision_position_ids cannot reshape a grid that is not a multiple
# of the merge size, its tower cannot take a hidden-state length other than the grids' count). The
# overflowing grids wrap in int64 to a count that agrees with num_tokens: t*h*w = 2**64 -> 0, and four
# rows of 2**62 tokens each -> 0.
BAD_VISION_GRIDS = [
    ([[1, 6, 5]], None, r"grid_thw\[0\] = \(t=1, h=6, w=5\): h and w must be multiples of spatial_merge_size = 2"),
    ([[1, 4, 4], [2, 3, 4]], 44, r"grid_thw\[1\] = \(t=2, h=3, w=4\): h and w must be multiples"),
    ([[1, -4, 4]], None, r"grid_thw entries must be >= 0, got grid_thw\[0\] = \(t=1, h=-4, w=4\)"),
    ([[-1, 4, 4]], 0, r"grid_thw entries must be >= 0"),
    ([[1, 8, 4]], 28, r"num_tokens = 28 must equal the token count of grid_thw, sum\(t\*h\*w\) = 32"),
    ([[1, 8, 4]], 36, r"num_tokens = 36 must equal the token count of grid_thw, sum\(t\*h\*w\) = 32"),
    (
        [[2**32, 2**32, 2]],
        0,
        r"grid_thw\[0\] = \(t=4294967296, h=4294967296, w=2\) has t\*h\*w = \d+ tokens, "
        "more than int64 can count",
    ),
    ([[1, 2**31, 2**31]] * 4, 0, r"grid_thw has sum\(t\*h\*w\) = 18446744073709551616 tokens, more than int64"),
]


@pytest.mark.parametrize("grid, num_tokens, match", BAD_VISION_GRIDS)
def test_vision_positions_reject_what_transformers_rejects(grid, num_tokens, match):
    grid_thw = torch.tensor(grid)
    with pytest.raises(ValueError, match="vlmops.vision_rope_positions: " + match):
        vlmops.vision_rope_positions(grid_thw, 2, num_tokens=num_tokens)


@pytest.mark.parametrize("grid, num_tokens, match", BAD_VISION_GRIDS)
def test_window_index_rejects_what_transformers_rejects(grid, num_tokens, match):
    grid_thw = torch.tensor(grid)
    match = match.replace("num_tokens", "num_patches")
    with pytest.raises(ValueError, match="vlmops.qwen2_5_vl_window_index: " + match):
        vlmops.qwen2_5_vl_window_index(grid_thw, 112, 14, 2, num_patches=num_tokens)


def test_check_values_false_skips_the_value_checks():
    grid_thw = torch.tensor([[1, 3, 4]])  # h not a multiple of 2
    assert vlmops.vision_rope_positions(grid_thw, 2, num_tokens=12, check_values=False).shape == (12, 2)
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        vlmops.vision_rope_positions(grid_thw, 2, num_tokens=12)
    grid_thw = torch.tensor([[1, 4, 4]])
    types = torch.tensor([[0] + [1] * 3 + [0]])  # a run of 3 tokens for a grid of 4
    position_ids, _ = vlmops.mrope_position_ids(types, grid_thw, spatial_merge_size=2, check_values=False)
    assert position_ids.shape == (3, 1, 5)
    with pytest.raises(ValueError, match="has 3 tokens"):
        vlmops.mrope_position_ids(types, grid_thw, spatial_merge_size=2)


def test_position_builders_are_pure_tensor_code():
    """On meta tensors nothing can be read back: any .item()/.tolist() or data-dependent Python branch
    raises. So the builders are host-sync free (usable under CUDA graph capture) when the sizes are given,
    with their value checks (then a device assertion) and without."""
    grid_thw = torch.tensor([[1, 8, 4], [2, 4, 4]], device="meta")
    for check_values in (True, False):
        assert vlmops.vision_rope_positions(grid_thw, 2, num_tokens=64, check_values=check_values).shape == (64, 2)
        index, reverse, cu = vlmops.qwen2_5_vl_window_index(
            grid_thw, 112, 14, 2, num_patches=64, check_values=check_values
        )
        assert index.shape == reverse.shape == (16,) and cu.shape == (17,)


def test_mrope_position_ids_are_pure_tensor_code():
    types = torch.zeros(2, 40, dtype=torch.long, device="meta")
    grid = torch.ones(2, 3, dtype=torch.long, device="meta")
    for check_values in (True, False):
        position_ids, deltas = vlmops.mrope_position_ids(
            types,
            grid,
            grid,
            spatial_merge_size=2,
            attention_mask=torch.ones(2, 40, device="meta"),
            video_time_interval=torch.ones(2, device="meta"),
            split_video_frames=True,
            check_values=check_values,
        )
        assert position_ids.shape == (3, 2, 40) and deltas.shape == (2, 1)


HOST_READS = ("tolist", "item", "__bool__", "__int__", "__index__", "__float__")


@pytest.fixture
def host_reads(monkeypatch):
    """Every Python-level read of a tensor's values (``.tolist()`` does not pass the dispatcher)."""
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    return reads


@pytest.mark.parametrize("check_values", [False, True])
def test_builders_read_the_host_only_to_check_values(host_reads, check_values):
    """With the sizes given, the builders read nothing back but for their value checks on CPU tensors,
    which check_values=False skips (the hot-path contract); with them, the detector sees the reads."""
    grid_thw = torch.tensor([[1, 8, 4], [2, 4, 4]])
    types = torch.tensor([[0, 0] + [1] * 8 + [0] * 3 + [2] * 8 + [0]])
    mask = torch.ones(1, 3, 2, 2)
    vlmops.vision_rope_positions(grid_thw, 2, num_tokens=64, check_values=check_values)
    vlmops.qwen2_5_vl_window_index(grid_thw, 112, 14, 2, num_patches=64, check_values=check_values)
    vlmops.mrope_position_ids(types, grid_thw[:1], grid_thw[1:], spatial_merge_size=2, check_values=check_values)
    vlmops.pixtral_rope_positions(grid_thw[:, 1:], num_tokens=48, check_values=check_values)
    vlmops.mllama_kv_ranges(mask, 3, check_values=check_values)
    vlmops.flamingo_kv_ranges(torch.zeros(1, 5, dtype=torch.bool), 4, num_media=2)
    assert bool(host_reads) == check_values


def test_builders_compile_fullgraph_with_device_side_checks():
    """Under torch.compile the value checks do not branch on data: they are an assertion in the graph."""
    grid_thw = torch.tensor([[1, 8, 4], [2, 4, 4]])
    types = torch.tensor([[0, 0] + [1] * 8 + [0] * 3 + [2] * 8 + [0]])

    @torch.compile(fullgraph=True, backend="aot_eager")
    def build(grid_thw, types):
        return (
            vlmops.vision_rope_positions(grid_thw, 2, num_tokens=64),
            vlmops.qwen2_5_vl_window_index(grid_thw, 112, 14, 2, num_patches=64),
            vlmops.mrope_position_ids(types, grid_thw[:1], grid_thw[1:], spatial_merge_size=2),
        )

    got = build(grid_thw, types)
    assert torch.equal(got[0], vlmops.vision_rope_positions(grid_thw, 2))
    assert all(torch.equal(a, b) for a, b in zip(got[1], vlmops.qwen2_5_vl_window_index(grid_thw, 112, 14, 2)))
    expected = vlmops.mrope_position_ids(types, grid_thw[:1], grid_thw[1:], spatial_merge_size=2)
    assert torch.equal(got[2][0], expected[0]) and torch.equal(got[2][1], expected[1])
    with pytest.raises(RuntimeError, match="grid_thw must be >= 0 with h and w multiples of spatial_merge_size"):
        build(torch.tensor([[1, 8, 4], [2, 4, 6]]), types)
    with pytest.raises(RuntimeError, match="runs of mm_token_type_ids must match"):
        build(grid_thw, torch.tensor([[0, 0] + [1] * 7 + [0] * 4 + [2] * 8 + [0]]))


@pytest.mark.requires_cuda
def test_position_builders_capture_in_cuda_graph():
    grid_thw = torch.tensor([[1, 8, 4], [2, 4, 4]], device="cuda")
    types = torch.tensor([[0, 0] + [1] * 8 + [0] * 3 + [2] * 8 + [0]], device="cuda")
    expected_vision = vlmops.vision_rope_positions(grid_thw, 2)
    expected_text = vlmops.mrope_position_ids(types, grid_thw[:1], grid_thw[1:], spatial_merge_size=2)

    def build():
        vision = vlmops.vision_rope_positions(grid_thw, 2, num_tokens=expected_vision.shape[0])
        text = vlmops.mrope_position_ids(types, grid_thw[:1], grid_thw[1:], spatial_merge_size=2)
        return vision, text

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture, as CUDA graphs require
        build()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        vision, (text, deltas) = build()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(vision, expected_vision)
    assert torch.equal(text, expected_text[0]) and torch.equal(deltas, expected_text[1])


# ---- RoPE tables -------------------------------------------------------------------------------------


def test_table_builders_check_arguments():
    with pytest.raises(ValueError, match=r"sum\(mrope_section\) = 15 must equal len\(inv_freq\) = 16"):
        vlmops.mrope_tables(torch.ones(16), [4, 6, 5])
    with pytest.raises(ValueError, match="mrope_section must be 3 non-negative ints"):
        vlmops.interleaved_mrope_tables(torch.ones(16), [8, 8])
    with pytest.raises(ValueError, match="inv_freq must be one of float32"):
        vlmops.qwen_vision_rope_tables(torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"grid_thw must be \[n, 3\]"):
        vlmops.vision_rope_positions(torch.ones(2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="spatial_merge_size must be >= 1"):
        vlmops.vision_rope_positions(torch.ones(2, 3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="num_tokens must be >= 0"):
        vlmops.vision_rope_positions(torch.ones(2, 3, dtype=torch.long), 1, num_tokens=-1)


# ---- Qwen2.5-VL window index -------------------------------------------------------------------------


@pytest.mark.parametrize("grids", WINDOW_GRIDS)
@pytest.mark.parametrize("window_size,patch_size,merge", [(112, 14, 2), (64, 16, 2), (56, 14, 1)])
def test_window_index_matches_transformers(grids, window_size, patch_size, merge):
    grid_thw = torch.tensor(grids)
    expected_index, expected_cu = get_vision_window_index(grid_thw, merge, window_size, patch_size)
    num_patches = tokens(grids)
    for size in (num_patches, None):
        window_index, reverse_index, cu = vlmops.qwen2_5_vl_window_index(
            grid_thw, window_size, patch_size, merge, num_patches=size
        )
        assert torch.equal(window_index, expected_index)
        assert torch.equal(reverse_index, torch.argsort(expected_index))
        assert cu.dtype == torch.int32 and cu.shape == (num_patches // merge**2 + 1,)
        assert torch.equal(torch.unique_consecutive(cu), expected_cu)


@settings(max_examples=40, deadline=None)
@given(window=st.integers(1, 4), merge=st.integers(1, 2), data=st.data())
def test_hypothesis_window_index_matches_transformers(window, merge, data):
    grid = data.draw(
        st.lists(st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=3)
    )
    grid = [[t, h * merge, w * merge] for t, h, w in grid]
    grid_thw = torch.tensor(grid)
    patch = 2
    expected_index, expected_cu = get_vision_window_index(grid_thw, merge, window * merge * patch, patch)
    window_index, reverse_index, cu = vlmops.qwen2_5_vl_window_index(
        grid_thw, window * merge * patch, patch, merge, num_patches=tokens(grid)
    )
    assert torch.equal(window_index, expected_index)
    assert torch.equal(reverse_index, torch.argsort(expected_index))
    assert torch.equal(torch.unique_consecutive(cu), expected_cu)


def test_window_index_bad_inputs():
    grid = torch.tensor([[1, 4, 4]])
    with pytest.raises(ValueError, match="grid_thw must be one of int64, int32"):
        vlmops.qwen2_5_vl_window_index(grid.float(), 112, 14, 2)
    with pytest.raises(ValueError, match=r"grid_thw must be \[n, 3\]"):
        vlmops.qwen2_5_vl_window_index(grid[:, :2], 112, 14, 2)
    with pytest.raises(ValueError, match="smaller than one merged unit"):
        vlmops.qwen2_5_vl_window_index(grid, 14, 14, 2)
    with pytest.raises(ValueError, match="not a multiple of spatial_merge_size"):
        vlmops.qwen2_5_vl_window_index(grid, 112, 14, 2, num_patches=15, check_values=False)
    with pytest.raises(ValueError, match="num_patches = 15 must equal"):
        vlmops.qwen2_5_vl_window_index(grid, 112, 14, 2, num_patches=15)
    with pytest.raises(TypeError, match="patch_size must be an int"):
        vlmops.qwen2_5_vl_window_index(grid, 112, 14.0, 2)


# ---- text M-RoPE position ids ------------------------------------------------------------------------


@functools.cache
def _tiny_qwen_model(model):
    """A tiny language+vision model: only its get_rope_index (and config) is used."""
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=100,
        bos_token_id=0,
        eos_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    )
    vision = dict(depth=1, hidden_size=32, num_heads=2, spatial_merge_size=2)
    if model == "qwen2_vl":
        return modeling_qwen2_vl.Qwen2VLModel(Qwen2VLConfig(text_config=text, vision_config=dict(vision, embed_dim=32)))
    vision.update(intermediate_size=64, out_hidden_size=32)
    if model == "qwen2_5_vl":
        return modeling_qwen2_5_vl.Qwen2_5_VLModel(
            Qwen2_5_VLConfig(text_config=text, vision_config=dict(vision, tokens_per_second=2))
        )
    return modeling_qwen3_vl.Qwen3VLModel(
        Qwen3VLConfig(text_config=dict(text, head_dim=16), vision_config=dict(vision, deepstack_visual_indexes=[]))
    )


def _mm_sequence(rows, image_grids, video_grids, split_frames, merge=2):
    """mm_token_type_ids and attention_mask [B, S] from per-row segment lists ("pad", n), ("text", n),
    ("image", i), ("video", i); Qwen3-VL (split_frames) puts timestamp text between video frames."""
    built = []
    for row in rows:
        types, mask = [], []
        for kind, value in row:
            if kind in ("pad", "text"):
                types += [0] * value
                mask += [int(kind == "text")] * value
            elif kind == "image":
                t, h, w = image_grids[value]
                types += [1] * (t * h * w // merge**2)
                mask += [1] * (t * h * w // merge**2)
            else:
                t, h, w = video_grids[value]
                frames = [(1, h, w)] * t if split_frames else [(t, h, w)]
                for i, (ft, fh, fw) in enumerate(frames):
                    if split_frames and i:
                        types += [0] * 2
                        mask += [1] * 2
                    types += [2] * (ft * fh * fw // merge**2)
                    mask += [1] * (ft * fh * fw // merge**2)
        built.append((types, mask))
    S = max(len(t) for t, _ in built)
    types = torch.tensor([[0] * (S - len(t)) + t for t, _ in built])  # left padding
    mask = torch.tensor([[0] * (S - len(m)) + m for _, m in built])
    return types, mask


def _both(model, types, image_grids, video_grids, mask=None, seconds=None):
    """(transformers' get_rope_index, vlmops.mrope_position_ids) on the same inputs, as thunks."""
    tiny = _tiny_qwen_model(model)
    image_grid_thw = None if image_grids is None else torch.tensor(image_grids, dtype=torch.long).view(-1, 3)
    video_grid_thw = None if video_grids is None else torch.tensor(video_grids, dtype=torch.long).view(-1, 3)
    kwargs = dict(
        mm_token_type_ids=types, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw, attention_mask=mask
    )
    interval = None
    if model == "qwen2_5_vl" and seconds is not None:
        # Fractional seconds per temporal patch: temporal ids long(t * tokens_per_second * seconds).
        kwargs["second_per_grid_ts"] = seconds
        interval = tiny.config.vision_config.tokens_per_second * seconds

    def theirs():
        return tiny.get_rope_index(torch.randint(0, 100, types.shape), **kwargs)

    def ours():
        return vlmops.mrope_position_ids(
            types,
            image_grid_thw,
            video_grid_thw,
            spatial_merge_size=2,
            attention_mask=mask,
            video_time_interval=interval,
            split_video_frames=model == "qwen3_vl",
        )

    return theirs, ours


@pytest.mark.parametrize("model", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("padded", [False, True])
def test_mrope_position_ids_match_get_rope_index(model, padded):
    image_grids = [[1, 4, 6], [1, 8, 4], [1, 2, 2]]
    video_grids = [[3, 4, 4], [2, 6, 2]]
    rows = [
        [("text", 3), ("image", 0), ("text", 2), ("video", 0), ("text", 4), ("image", 1)],
        [("pad", 5 if padded else 0), ("text", 2), ("image", 2), ("video", 1), ("text", 1)],
    ]
    types, mask = _mm_sequence(rows, image_grids, video_grids, model == "qwen3_vl")
    if not padded:
        types, mask = types[:, (mask == 0).sum(1).min() :], None
    theirs, ours = _both(model, types, image_grids, video_grids, mask, torch.tensor([0.75, 1.3]))
    expected, expected_deltas = theirs()
    got, deltas = ours()
    assert torch.equal(got, expected)
    assert torch.equal(deltas, expected_deltas.to(deltas.dtype))


_SEGMENT = st.one_of(
    st.tuples(st.just("text"), st.integers(1, 3)),
    st.tuples(st.just("image"), st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3))),
    st.tuples(st.just("video"), st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 3))),
)


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]),
    rows=st.lists(st.lists(_SEGMENT, min_size=1, max_size=5), min_size=1, max_size=3),
    pads=st.lists(st.integers(0, 3), min_size=3, max_size=3),
)
def test_hypothesis_mrope_position_ids_match_get_rope_index(model, rows, pads):
    """Random rows of text, images and videos (grids in merged units, doubled to patches), left padding."""
    image_grids, video_grids, segments = [], [], []
    for row, pad in zip(rows, pads):
        segments.append([("pad", pad)] if pad else [])
        for kind, value in row:
            if kind == "text":
                segments[-1].append((kind, value))
                continue
            grids = image_grids if kind == "image" else video_grids
            if segments[-1] and segments[-1][-1][0] == kind:
                segments[-1].append(("text", 1))  # two images in a row are one run without a token between
            segments[-1].append((kind, len(grids)))
            grids.append([value[0], 2 * value[1], 2 * value[2]])
    types, mask = _mm_sequence(segments, image_grids, video_grids, model == "qwen3_vl")
    seconds = torch.rand(len(video_grids)) * 2
    theirs, ours = _both(model, types, image_grids or None, video_grids or None, mask, seconds)
    if not image_grids and not video_grids:
        ours()  # a text-only batch: nothing to compare (transformers' models do not call get_rope_index)
        return
    expected, expected_deltas = theirs()
    got, deltas = ours()
    assert torch.equal(got, expected)
    assert torch.equal(deltas, expected_deltas.to(deltas.dtype))


# Runs of mm_token_type_ids that disagree with the grids. "theirs": get_rope_index itself raises too (the
# others pass get_rope_index and fail later in transformers' model, whose get_placeholder_mask requires as
# many image/video tokens as the grids give, or whose vision tower cannot reshape the grid).
IMAGE = [[1, 4, 4]]  # 4 tokens at merge 2
BAD_RUNS = [
    (
        "more image runs than grids",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 0, 1, 1, 1, 1]],
        IMAGE,
        None,
        True,
        r"mm_token_type_ids has 2 image runs \(maximal runs of 1 among the attended tokens\) but image_grid_thw has "
        "1 rows",
    ),
    (
        "fewer image runs than grids",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 0]],
        IMAGE * 2,
        None,
        False,
        "mm_token_type_ids has 1 image runs .* but image_grid_thw has 2 rows",
    ),
    (
        "image runs without a grid",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 0]],
        None,
        None,
        True,
        "mm_token_type_ids has 1 image runs but image_grid_thw is None",
    ),
    (
        "video runs without a grid",
        "qwen2_5_vl",
        [[0, 2, 2, 2, 2, 0]],
        None,
        None,
        True,
        "mm_token_type_ids has 1 video runs but video_grid_thw is None",
    ),
    (
        "a run shorter than its grid",
        "qwen2_vl",
        [[0, 1, 1, 1, 0, 0]],
        IMAGE,
        None,
        True,
        r"image run 0 \(batch 0, attended tokens \[1, 4\)\) has 3 tokens but image_grid_thw\[0\] = \[1, 4, 4\] gives "
        r"t\*h\*w/spatial_merge_size\*\*2 = 4",
    ),
    (
        "a run longer than its grid",
        "qwen2_vl",
        [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
        IMAGE * 2,
        None,
        True,
        r"image run 1 \(batch 1, attended tokens \[0, 5\)\) has 5 tokens but image_grid_thw\[1\]",
    ),
    (
        "compensating run lengths",
        "qwen2_vl",
        [[1, 1, 1, 0, 1, 1, 1, 1, 1]],
        IMAGE * 2,
        None,
        False,
        r"image run 0 .* has 3 tokens",
    ),
    (
        "a video run of two frames",
        "qwen3_vl",
        [[0, 2, 2, 2, 2, 2, 2, 2, 2, 0]],
        None,
        [[2, 4, 4]],
        True,
        r"mm_token_type_ids has 1 video runs .* but video_grid_thw has 2 frames \(sum of t, one run per frame\)",
    ),
    (
        "a frame of the wrong length",
        "qwen3_vl",
        [[2, 2, 2, 2, 0, 2, 2, 2]],
        None,
        [[2, 4, 4]],
        True,
        r"video run 1 .* has 3 tokens but video_grid_thw\[0\] = \[2, 4, 4\] gives "
        r"h\*w/spatial_merge_size\*\*2 per frame",
    ),
    (
        "a token type other than 0, 1, 2",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 3]],
        IMAGE,
        None,
        True,
        r"mm_token_type_ids must be 0 \(text\), 1 \(image\) or 2 \(video\) where attended, got 3 at \[0, 5\]",
    ),
    (
        "a negative token type",
        "qwen2_vl",
        [[-1, 1, 1, 1, 1, 0]],
        IMAGE,
        None,
        True,
        r"mm_token_type_ids must be 0 \(text\), 1 \(image\) or 2 \(video\) where attended, got -1 at \[0, 0\]",
    ),
    (
        "a grid that is not a multiple of the merge size",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 0]],
        [[1, 5, 4]],
        None,
        False,
        r"image_grid_thw\[0\] = \(t=1, h=5, w=4\): h and w must be multiples of spatial_merge_size = 2",
    ),
    (
        "a negative grid",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 0]],
        [[-1, 4, -4]],
        None,
        True,
        r"image_grid_thw entries must be >= 0, got image_grid_thw\[0\] = \(t=-1, h=4, w=-4\)",
    ),
    (
        "a grid whose int64 product wraps",
        "qwen2_vl",
        [[0, 1, 1, 1, 1, 0]],
        [[2**32, 2**32, 4]],
        None,
        False,
        r"image_grid_thw\[0\] = \(t=4294967296, h=4294967296, w=4\) has t\*h\*w = \d+ tokens, more than int64",
    ),
]


@pytest.mark.parametrize(
    "case, model, types, image_grids, video_grids, theirs_raises, match", BAD_RUNS, ids=[case[0] for case in BAD_RUNS]
)
def test_mrope_position_ids_reject_runs_that_disagree_with_grids(
    case, model, types, image_grids, video_grids, theirs_raises, match
):
    theirs, ours = _both(model, torch.tensor(types), image_grids, video_grids)
    with pytest.raises(ValueError, match="vlmops.mrope_position_ids: " + match):
        ours()
    if theirs_raises:
        with pytest.raises(Exception):  # noqa: B017 (transformers raises IndexError, ValueError or RuntimeError)
            theirs()


def test_mrope_position_ids_check_the_attended_tokens_only():
    # Padding may hold any type id; a run broken by padding is one run (transformers drops padding first).
    types = torch.tensor([[7, 1, 1, 0, 1, 1, 0]])
    mask = torch.tensor([[0, 1, 1, 0, 1, 1, 1]])
    theirs, ours = _both("qwen2_vl", types, IMAGE, None, mask)
    expected, expected_deltas = theirs()
    got, deltas = ours()
    assert torch.equal(got, expected) and torch.equal(deltas, expected_deltas)


def test_mrope_position_ids_ignore_empty_grids_and_unused_intervals():
    types = torch.tensor([[0, 0, 1, 1, 1, 1, 0]])
    empty = torch.zeros(0, 3, dtype=torch.long)
    expected = vlmops.mrope_position_ids(types, torch.tensor(IMAGE), spatial_merge_size=2)
    got = vlmops.mrope_position_ids(
        types, torch.tensor(IMAGE), empty, spatial_merge_size=2, video_time_interval=torch.zeros(0)
    )
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    with pytest.raises(ValueError, match=r"video_time_interval must be \[0\], got \(1,\)"):
        vlmops.mrope_position_ids(
            types, torch.tensor(IMAGE), empty, spatial_merge_size=2, video_time_interval=torch.ones(1)
        )
