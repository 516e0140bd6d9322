"""patch_model on Llama 3.2 Vision without its dense cross-attention mask: the patched ``MllamaModel``
builds the key ranges once per forward from ``cross_attention_mask`` and transformers'
``full_text_row_masked_out_mask`` from the same small tensor. Logits and greedy ``generate`` (KV cache)
match transformers on masks the processor writes and on hand-made ones (rows that see no image after
an image, several images and tile counts); no op creates a tensor of the dense mask's size; the
forward's peak memory is lower by at least the mask's size."""

import copy

import pytest
import torch
from conftest import RecordVlmopsCalls
from test_patch_mllama import TEXT, VISION
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import MllamaConfig, MllamaForConditionalGeneration
from transformers.models.mllama.processing_mllama import (
    convert_sparse_cross_attention_mask_to_dense,
    get_cross_attention_token_mask,
)

import vlmops

IMAGE = 63  # image_token_index
TOKENS = 5  # tokens per tile: (28 / 14) ** 2 + 1


def model_of(vision=VISION, dtype=torch.float32):
    """A seeded model with open gates (transformers initializes them to 0, hiding the cross-attention)."""
    torch.manual_seed(0)
    config = MllamaConfig(vision_config=vision, text_config=TEXT, image_token_index=IMAGE)
    model = MllamaForConditionalGeneration(config).eval().to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.8)
    return model


def patched_copy(model, **options):
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched, **options)
    assert report.skipped == [], report
    return patched, report


def prompt(layout, length=13):
    """input_ids and the processor's cross_attention_mask of one sample: ``layout`` is a list of
    (position, tiles) of its ``<|image|>`` tokens."""
    ids = torch.randint(3, 60, (length,), generator=torch.Generator().manual_seed(len(layout) + length))
    for position, _ in layout:
        ids[position] = IMAGE
    return ids, get_cross_attention_token_mask(ids.tolist(), IMAGE), [tiles for _, tiles in layout]


def inputs_of(layouts, dtype=torch.float32, max_tiles=4):
    """Model inputs of a batch of prompts (``prompt`` layouts), with pixels for every image."""
    prompts = [prompt(layout) for layout in layouts]
    n_images = max(len(layout) for layout in layouts)
    mask = convert_sparse_cross_attention_mask_to_dense(
        [p[1] for p in prompts], [p[2] for p in prompts], max_tiles, prompts[0][0].shape[0]
    )
    B = len(layouts)
    ratio_ids = {1: 1, 2: 2, 3: 3, 4: 6}  # tiles -> an aspect ratio of that many tiles ([1,1], [1,2], [1,3], [2,2])
    aspect_ratio_ids = torch.zeros(B, n_images, dtype=torch.int64)
    aspect_ratio_mask = torch.zeros(B, n_images, max_tiles, dtype=torch.int64)
    for b, layout in enumerate(layouts):
        for n, (_, tiles) in enumerate(layout):
            aspect_ratio_ids[b, n] = ratio_ids[tiles]
            aspect_ratio_mask[b, n, :tiles] = 1
    generator = torch.Generator().manual_seed(1)
    return dict(
        input_ids=torch.stack([p[0] for p in prompts]),
        pixel_values=torch.randn(B, n_images, max_tiles, 3, 28, 28, generator=generator).to(dtype),
        aspect_ratio_ids=aspect_ratio_ids,
        aspect_ratio_mask=aspect_ratio_mask,
        cross_attention_mask=torch.from_numpy(mask),
        attention_mask=torch.ones(B, prompts[0][0].shape[0], dtype=torch.int64),
    )


# Batches of prompts, each a list of (position of <|image|>, its tiles). Every row sees one run of
# consecutive tiles: images apart, or consecutive after an image with every tile.
LAYOUTS = {
    "one-image": [[(3, 2)], [(0, 4)]],  # one image each, text before it in sample 0
    "apart": [[(1, 2), (5, 4), (9, 1)], [(2, 3), (7, 4)]],  # images apart, 2 / 4 / 1 and 3 / 4 tiles
    "consecutive": [[(2, 4), (3, 3)], [(4, 4), (5, 4), (6, 1)]],  # the first of a group has every tile
}


def cache_of(out):
    """The output's cache as a forward takes it: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    return {"cache": out.cache} if "cache" in out else {"past_key_values": out.past_key_values}


def hand_made_rows(inputs):
    """Rows that see no image after an image (transformers: attend to every key, then zeroed after the
    MLP), and a row that sees some middle tiles of the last image only."""
    mask = inputs["cross_attention_mask"].clone()
    mask[0, 7:9] = 0
    mask[1, 11] = 0
    mask[1, 12, :, :] = 0
    mask[1, 12, -1, 1:3] = 1
    return {**inputs, "cross_attention_mask": mask}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_logits_match_transformers(layout, dtype):
    model = model_of(dtype=dtype)
    patched, report = patched_copy(model)
    assert {r.path for r in report.replacements} == {"model", "model.language_model.layers.1.cross_attn"}
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    inputs = inputs_of(LAYOUTS[layout], dtype)
    for case in (inputs, hand_made_rows(inputs)):
        with torch.no_grad():
            expected = model(**case).logits
            with RecordVlmopsCalls() as recorder:
                got = patched(**case).logits
        assert "vlmops::gated_cross_attention" in recorder.calls
        torch.testing.assert_close(got, expected, **tolerance)


def test_rows_that_see_no_image_are_zeroed_after_the_mlp():
    """The cross-attention decoder layer gets transformers' row mask from the patched forward: 0 for the
    rows that see no image (here the text before sample 0's image), 1 elsewhere, in the model's dtype;
    the layer multiplies its MLP output by it."""
    model = model_of()
    patched, _ = patched_copy(model)
    inputs = inputs_of(LAYOUTS["one-image"])
    layer = patched.model.language_model.layers[1]
    seen = []
    hook = layer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["full_text_row_masked_out_mask"]), with_kwargs=True
    )
    with torch.no_grad():
        patched(**inputs)
    hook.remove()
    rows = inputs["cross_attention_mask"].any(-1).any(-1)
    assert seen[0].shape == (2, 1, 13, 1) and seen[0].dtype == torch.float32
    assert torch.equal(seen[0][:, 0, :, 0], rows.float())
    assert not rows[0, :3].any()


def test_generate_matches_with_kv_cache():
    model = model_of()
    patched, _ = patched_copy(model)
    inputs = hand_made_rows(inputs_of(LAYOUTS["apart"]))
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        with RecordVlmopsCalls() as recorder:
            got = patched.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert got.shape[1] == inputs["input_ids"].shape[1] + 5
    assert torch.equal(got, expected)
    assert recorder.calls.count("vlmops::gated_cross_attention") == 5  # prefill and every decode step


def test_decode_rows_from_the_full_mask_match():
    """A plain forward with a cache and the mask of every row so far: the decode step takes its row
    (``[past, past + 1)``), as transformers does; then a step whose last row sees no image."""
    model = model_of()
    patched, _ = patched_copy(model)
    inputs = inputs_of(LAYOUTS["apart"])
    step = torch.tensor([[5], [6]])
    ids = torch.cat([inputs["input_ids"], step], 1)
    mask = inputs["cross_attention_mask"]
    for last in (mask[:, -1:], torch.zeros_like(mask[:, -1:])):
        full = torch.cat([mask, last], 1)
        logits = []
        for m in (model, patched):
            with torch.no_grad():
                out = m(**inputs, use_cache=True)
                logits.append(
                    m(
                        input_ids=step,
                        cross_attention_mask=full,
                        attention_mask=torch.ones_like(ids),
                        use_cache=True,
                        **cache_of(out),
                    ).logits
                )
        torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)


def test_non_contiguous_tiles_are_refused_with_the_row():
    """Consecutive images whose first has padding tiles: a row sees tiles {0, 1} and {4..7}, which no
    single key range holds; transformers runs it, the patched model raises (as the layer rule does)."""
    model = model_of()
    patched, _ = patched_copy(model)
    inputs = inputs_of([[(2, 2), (3, 4)]])
    with torch.no_grad():
        model(**inputs)
        with pytest.raises(ValueError, match=r"not one contiguous run.*row 3 sees chunks \[0, 1, 4, 5, 6, 7\]"):
            patched(**inputs)


class RecordShapes(TorchDispatchMode):
    """The shape of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.shapes.append((func.name(), tuple(t.shape)))
        return out


def mask_sized(shapes, B, Lq, Lk):
    """The ops whose output has as many elements as a dense mask of one or all batch entries."""
    return [(name, shape) for name, shape in shapes if torch.Size(shape).numel() in (Lq * Lk, B * Lq * Lk)]


def test_no_op_creates_a_tensor_of_the_dense_mask_size():
    """Prefill (13 rows) and a decode step (1 row) against 2 images x 4 tiles x 5 tokens = 40 keys:
    transformers' forward creates tensors of Lq * Lk and B * Lq * Lk elements, the patched one none."""
    model = model_of()
    patched, _ = patched_copy(model)
    inputs = inputs_of(LAYOUTS["apart"])
    inputs["pixel_values"] = inputs["pixel_values"][:, :2]
    inputs["aspect_ratio_ids"] = inputs["aspect_ratio_ids"][:, :2]
    inputs["aspect_ratio_mask"] = inputs["aspect_ratio_mask"][:, :2]
    inputs["cross_attention_mask"] = inputs["cross_attention_mask"][:, :, :2]
    B, Lq, Lk = 2, 13, 2 * 4 * TOKENS
    for m, dense in ((model, True), (patched, False)):
        with torch.no_grad():
            # The vision tower runs outside the recording: its tensors have nothing to do with the mask.
            states = m.model.multi_modal_projector(
                m.model.vision_model(
                    pixel_values=inputs["pixel_values"],
                    aspect_ratio_ids=inputs["aspect_ratio_ids"],
                    aspect_ratio_mask=inputs["aspect_ratio_mask"],
                ).last_hidden_state
            ).reshape(B, Lk, -1)
            with RecordShapes() as prefill:
                out = m(
                    input_ids=inputs["input_ids"],
                    cross_attention_states=states,
                    cross_attention_mask=inputs["cross_attention_mask"],
                    use_cache=True,
                )
            # The mask of every row so far, as every release's forward takes it (and slices the last row).
            mask = inputs["cross_attention_mask"]
            with RecordShapes() as decode:
                m(
                    input_ids=torch.tensor([[5], [6]]),
                    cross_attention_mask=torch.cat([mask, mask[:, -1:]], 1),
                    use_cache=True,
                    **cache_of(out),
                )
        assert bool(mask_sized(prefill.shapes, B, Lq, Lk)) == dense, mask_sized(prefill.shapes, B, Lq, Lk)
        assert bool(mask_sized(decode.shapes, B, 1, Lk)) == dense, mask_sized(decode.shapes, B, 1, Lk)


def peak_bytes(fn):
    """The peak of the bytes allocated while fn() runs, above what was allocated before: the running
    sum of the profiler's CPU allocation events (``profile_memory``: every allocation and free)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def test_peak_memory_is_lower_by_at_least_the_mask():
    """512 text rows against 2 images x 4 tiles x 257 tokens (224 px tiles) = 2056 keys: the dense mask
    is 512 x 2056 x 4 bytes = 4.2 MB in float32, and the patched forward's peak is at least that lower."""
    vision = {**VISION, "image_size": 224, "patch_size": 14}
    model = model_of(vision)
    patched, _ = patched_copy(model)
    P = model.model.vision_model.num_patches
    B, Lq, n_images, n_tiles = 1, 512, 2, 4
    Lk = n_images * n_tiles * P
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(B, Lk, TEXT["hidden_size"], generator=generator)
    mask = torch.zeros(B, Lq, n_images, n_tiles, dtype=torch.int64)
    mask[:, 10:300, 0, :3] = 1
    mask[:, 300:, 1, :] = 1
    ids = torch.randint(3, 60, (B, Lq), generator=generator)

    def forward(m):
        with torch.no_grad():
            return m.model(input_ids=ids, cross_attention_states=states, cross_attention_mask=mask, use_cache=False)

    torch.testing.assert_close(
        forward(patched).last_hidden_state, forward(model).last_hidden_state, rtol=1e-5, atol=1e-5
    )
    dense, ranges = peak_bytes(lambda: forward(model)), peak_bytes(lambda: forward(patched))
    mask_bytes = B * Lq * Lk * torch.float32.itemsize
    assert dense - ranges >= mask_bytes, (dense, ranges, mask_bytes)


def test_rule_kinds_and_fallbacks():
    """ops names the kinds: the mask rule alone also replaces the cross-attention layers it feeds; the
    layer rule alone keeps transformers' forward and mask (read one entry per tile); a text model
    without MllamaModel gets the layer rule."""
    model = model_of()
    inputs = inputs_of(LAYOUTS["apart"])
    with torch.no_grad():
        expected = model(**inputs).logits
    for ops, paths, then in (
        (["cross_attention_mask"], ["model.language_model.layers.1.cross_attn", "model"], []),
        (["cross_attention"], ["model.language_model.layers.1.cross_attn"], ["model"]),
    ):
        patched, report = patched_copy(model, ops=ops)
        assert [r.path for r in report.replacements] == paths
        with torch.no_grad():
            torch.testing.assert_close(patched(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
        # Patching again with every kind adds what ops left out.
        assert [r.path for r in vlmops.patch_model(patched).replacements] == then
    text = copy.deepcopy(model)
    report = vlmops.patch_model(text.model.language_model)
    assert [r.path for r in report.replacements] == ["layers.1.cross_attn"]


def test_ranges_and_row_mask_are_pure_tensor_code():
    """On meta tensors nothing can be read back: the patched forward's mask inputs need no host read."""
    from vlmops.transformers.mllama_rules import mllama_cross_attention_inputs

    mask = torch.ones(2, 7, 3, 4, dtype=torch.int64, device="meta")
    (start, end), rows = mllama_cross_attention_inputs(mask, TOKENS, torch.bfloat16)
    assert start.shape == end.shape == (2, 7) and start.dtype == end.dtype == torch.int32
    assert rows.shape == (2, 1, 7, 1) and rows.dtype == torch.bfloat16


def test_row_mask_and_ranges_follow_transformers_mask_function():
    """Against transformers' _prepare_cross_attention_mask on masks of 0, 1 and other values (only
    entries equal to 1 are visible there): the row mask is equal, and the ranges' dense mask is its
    additive mask's zero pattern."""
    from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

    from vlmops.reference.gated_cross_attention import dense_mask
    from vlmops.transformers.mllama_rules import mllama_cross_attention_inputs

    mask = torch.zeros(2, 6, 2, 3)
    mask[0, 1:4, 0, :2] = 1
    mask[0, 4:, 1, :] = 1
    mask[1, 2:, :, :] = 1
    mask[1, 3, 0, :] = 2.0  # not visible in transformers
    mask[1, 4, :, :] = 0.5  # a row that sees nothing
    for dtype in (torch.float32, torch.bfloat16):
        additive, expected_rows = _prepare_cross_attention_mask(mask, num_vision_tokens=TOKENS, dtype=dtype)
        (start, end), rows = mllama_cross_attention_inputs(mask, TOKENS, dtype)
        assert rows.dtype == expected_rows.dtype and torch.equal(rows, expected_rows)
        assert torch.equal(dense_mask(start, end, 2 * 3 * TOKENS), additive[:, 0] == 0)
