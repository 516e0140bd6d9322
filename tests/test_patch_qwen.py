"""patch_model on Qwen2-VL, Qwen2.5-VL and Qwen3-VL: parity with the unpatched model (vision features,
logits, generate, every Qwen2.5-VL window/full layer), vlmops ops really run (no host sync: see
test_sync_free_towers.py), state_dict and save/load unchanged, idempotence, ops= restriction, torch.compile,
and the drop-in modules against the transformers modules they replace."""

import copy
import re

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

import vlmops
from vlmops.nn import (
    MRotaryEmbedding,
    PackedVisionAttention,
    PatchEmbed,
    PatchMerger,
    VisionRotaryEmbedding,
    vision_cu_seqlens,
)
from vlmops.transformers import UnsupportedTransformersError

IMAGE, VIDEO, VISION_START = 190, 191, 192
PATCH_ROW = 3 * 2 * 14 * 14  # C * temporal_patch * P * P
# Two images of different sizes and a video of two temporal patches (4 frames), in patches (t, h, w).
IMAGE_GRID = torch.tensor([[1, 8, 12], [1, 6, 10]])
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
)
TOKENS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START)


def config(family):
    vision = dict(depth=4, hidden_size=64, num_heads=2, spatial_merge_size=2, patch_size=14, temporal_patch_size=2)
    if family == "Qwen2-VL":
        text = dict(TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
        return Qwen2VLForConditionalGeneration, Qwen2VLConfig(
            text_config=text, vision_config=dict(vision, embed_dim=64, mlp_ratio=2), **TOKENS
        )
    if family == "Qwen2.5-VL":
        text = dict(TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
        # window 56 px = 4 patches = 2 merged units per side: the 8x12 image has 2x3 windows, the
        # 6x10 image (3x5 units) 2x3 windows cut by its edges; blocks 1 and 3 attend over whole frames.
        # intermediate 100: 400-byte MLP rows, so the patched MLP's GEMMs write padded rows.
        return Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig(
            text_config=text,
            vision_config=dict(
                vision, intermediate_size=100, out_hidden_size=64, window_size=56, fullatt_block_indexes=[1, 3]
            ),
            **TOKENS,
        )
    text = dict(
        TEXT,
        head_dim=32,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        },
    )
    return Qwen3VLForConditionalGeneration, Qwen3VLConfig(
        text_config=text,
        vision_config=dict(
            vision,
            intermediate_size=128,
            out_hidden_size=64,
            num_position_embeddings=16,
            deepstack_visual_indexes=[1, 2],
        ),
        **TOKENS,
    )


def build(family, attn="sdpa"):
    """A tiny seeded model, pixel rows for IMAGE_GRID and VIDEO_GRID, and a prompt with their tokens."""
    model_cls, cfg = config(family)
    torch.manual_seed(0)
    model = model_cls._from_config(cfg, attn_implementation=attn).eval()
    pixel_values = torch.randn(int(IMAGE_GRID.prod(-1).sum()), PATCH_ROW)
    pixel_values_videos = torch.randn(int(VIDEO_GRID.prod(-1).sum()), PATCH_ROW)
    units = [int(n) for n in IMAGE_GRID.prod(-1) // 4]
    frame_units = int(VIDEO_GRID[0, 1:].prod()) // 4
    if family == "Qwen3-VL":  # every frame is its own run, after its timestamp tokens
        video = [8, VISION_START] + [VIDEO] * frame_units + [9, VISION_START] + [VIDEO] * frame_units
    else:
        video = [VISION_START] + [VIDEO] * (2 * frame_units)
    ids = [3, 4, VISION_START] + [IMAGE] * units[0] + [5, VISION_START] + [IMAGE] * units[1] + video + [6, 7]
    input_ids = torch.tensor([ids])
    mm_token_type_ids = (input_ids == IMAGE).int() + 2 * (input_ids == VIDEO).int()
    inputs = dict(
        input_ids=input_ids,
        mm_token_type_ids=mm_token_type_ids,
        pixel_values=pixel_values,
        image_grid_thw=IMAGE_GRID,
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=VIDEO_GRID,
    )
    return model, inputs


def features(model, inputs):
    image = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    video = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    # pooler_output: the outputs of transformers >= 5.0 (earlier releases return the features).
    return torch.cat([*getattr(image, "pooler_output", image), *getattr(video, "pooler_output", video)])


class RecordCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(f"{func.namespace}::{func.name().split('::')[-1]}")
        return func(*args, **(kwargs or {}))

    def vlmops(self):
        return {c for c in self.calls if c.startswith("vlmops::")}


FAMILIES = ["Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"]


@pytest.mark.parametrize("family", FAMILIES)
def test_patched_model_matches_and_runs_vlmops(family):
    model, inputs = build(family)
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == [family]
    replaced = {r.new for r in report.replacements}
    assert {"vlmops.nn.PatchEmbed", "vlmops.nn.VisionRotaryEmbedding", "vlmops.nn.PackedVisionAttention"} <= replaced
    assert patched.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(patched.state_dict()[key], value)

    with torch.no_grad():
        expected_features, expected_logits = features(model, inputs), model(**inputs).logits
        with RecordCalls() as recorder:
            got_features, got_logits = features(patched, inputs), patched(**inputs).logits
    torch.testing.assert_close(got_features, expected_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_logits, expected_logits, rtol=1e-5, atol=1e-5)
    # A patch that silently ran transformers' code would record none of these.
    assert {"vlmops::patch_embed", "vlmops::rope_", "vlmops::varlen_attention"} <= recorder.vlmops()
    if family == "Qwen2.5-VL":
        assert {"vlmops.nn.RMSNorm", "vlmops.nn.GatedMLP"} <= replaced
        assert {"vlmops::rms_norm", "vlmops::silu_mul"} <= recorder.vlmops()


def test_qwen2_5_vl_window_and_full_attention_layers_match():
    model, inputs = build("Qwen2.5-VL")
    tower = model.model.visual
    patched = copy.deepcopy(tower)
    vlmops.patch_model(patched)
    pixels = torch.cat([inputs["pixel_values"], inputs["pixel_values_videos"]])
    grid = torch.cat([IMAGE_GRID, VIDEO_GRID])
    with torch.no_grad():
        expected = tower(pixels, grid_thw=grid, output_hidden_states=True)
        got = patched(pixels, grid_thw=grid, output_hidden_states=True)
    # hidden_states: the input of every block and the last output, in window order (blocks 0 and 2
    # are window layers, 1 and 3 full-frame layers).
    assert len(got.hidden_states) == len(expected.hidden_states) == 5
    for layer, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, layer=layer: f"block {layer}: {m}")
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, rtol=1e-5, atol=1e-5)


def test_qwen2_vl_generate_gives_identical_tokens():
    model, inputs = build("Qwen2-VL")
    patched = copy.deepcopy(model)
    vlmops.patch_model(patched)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected = model.generate(**inputs, **kwargs)
        got = patched.generate(**inputs, **kwargs)
    assert got.shape[1] == inputs["input_ids"].shape[1] + 4
    assert torch.equal(got, expected)


def test_tower_alone_and_ops_restriction():
    _, cfg = config("Qwen2.5-VL")
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config, attn_implementation="eager").eval()
    pixels = torch.randn(int(IMAGE_GRID.prod(-1).sum()), PATCH_ROW)
    with torch.no_grad():
        expected = tower(pixels, grid_thw=IMAGE_GRID).pooler_output
    only_attention = copy.deepcopy(tower)
    report = vlmops.patch_model(only_attention, ops=["attention"])
    assert {r.new for r in report.replacements} == {
        "vlmops.nn.PackedVisionAttention",
        "vlmops tower forward (metadata built once on device, varlen attention)",
    }
    assert type(only_attention.patch_embed).__name__ == "Qwen2_5_VisionPatchEmbed"
    assert type(only_attention.rotary_pos_emb).__name__ == "Qwen2_5_VLVisionRotaryEmbedding"
    only_embed = copy.deepcopy(tower)
    report = vlmops.patch_model(only_embed, ops=["patch_embed"])
    assert [r.path for r in report.replacements] == ["patch_embed"]
    assert type(only_embed.blocks[0].attn).__name__ == "Qwen2_5_VLVisionAttention"
    with torch.no_grad(), RecordCalls() as recorder:
        for patched in (only_attention, only_embed):
            torch.testing.assert_close(
                patched(pixels, grid_thw=IMAGE_GRID).pooler_output, expected, rtol=1e-5, atol=1e-5
            )
    assert recorder.vlmops() == {"vlmops::varlen_attention", "vlmops::patch_embed"}  # rope kind not patched


def test_patch_twice_is_a_no_op():
    model, _ = build("Qwen2-VL")
    first = vlmops.patch_model(model.model.visual)  # a submodule first, then the whole model
    assert first.replacements
    second = vlmops.patch_model(model)  # only the language model is left to patch
    assert second.families == ["Qwen2-VL"] and second.replacements
    assert all(r.path.startswith("model.language_model.") for r in second.replacements)
    third = vlmops.patch_model(model)
    assert third.families == ["Qwen2-VL"] and third.replacements == []


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(family, tmp_path):
    model, inputs = build(family)
    with torch.no_grad():
        expected = features(model, inputs)
    vlmops.patch_model(model)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    report = vlmops.patch_model(loaded)
    assert report.families == [family] and report.replacements
    with torch.no_grad():
        torch.testing.assert_close(features(loaded, inputs), features(model, inputs))
        torch.testing.assert_close(features(loaded, inputs), expected, rtol=1e-5, atol=1e-5)


def test_changed_transformers_code_is_refused(monkeypatch):
    import vlmops.transformers.patch as patch
    from vlmops.transformers import qwen_rules

    rule = next(r for r in patch.select_rules(qwen_rules.RULES) if r.family == "Qwen2.5-VL" and r.kind == "attention")
    spec = rule.guarded[0]
    real = patch.source_fingerprint
    monkeypatch.setattr(patch, "source_fingerprint", lambda s: "0" * 64 if s == spec else real(s))
    model, _ = build("Qwen2.5-VL")
    with pytest.raises(
        UnsupportedTransformersError,
        match=rf"changed {re.escape(spec)}, which the Qwen2\.5-VL patch \(attention\) relies on"
        r".*verified this patch on transformers .*5\.24\.0",
    ):
        vlmops.patch_model(model, ops=["attention"])


def test_compiled_patched_qwen2_5_vl_tower_fullgraph():
    _, cfg = config("Qwen2.5-VL")
    vision = cfg.vision_config
    vision.depth = 2
    vision.fullatt_block_indexes = [1]
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(vision, attn_implementation="sdpa").eval()
    pixels = torch.randn(int(IMAGE_GRID.prod(-1).sum()), PATCH_ROW)
    with torch.no_grad():
        expected = tower(pixels, grid_thw=IMAGE_GRID).pooler_output
        vlmops.patch_model(tower)
        # aot_eager: the whole tower traced as one graph and functionalized (the in-place RoPE on
        # the qkv views included); Inductor's C++ codegen of it passes too but takes minutes on 2 cores.
        compiled = torch.compile(tower, fullgraph=True, backend="aot_eager")
        got = compiled(pixels, grid_thw=IMAGE_GRID).pooler_output
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# Drop-in modules against the transformers modules they replace (transformers.vision_utils is
# imported by these tests only: the parity tests above also run on releases without it).


def test_vision_cu_seqlens_matches_transformers():
    from transformers.vision_utils import get_vision_cu_seqlens

    grid = torch.tensor([[2, 4, 8], [1, 8, 12], [3, 2, 2]])
    num_tokens = int(grid.prod(-1).sum())
    cu = vision_cu_seqlens(grid, num_tokens, min_frame_tokens=4)
    assert cu.shape == (num_tokens // 4 + 1,) and cu.dtype == torch.int32
    torch.testing.assert_close(torch.unique_consecutive(cu), get_vision_cu_seqlens(grid))


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_in_modules_match_transformers(family):
    from transformers.vision_utils import get_vision_cu_seqlens

    model, inputs = build(family)
    tower = model.model.visual
    rows = inputs["pixel_values"]
    n = rows.shape[0]
    positions = vlmops.vision_rope_positions(IMAGE_GRID, 2, num_tokens=n)
    hidden = torch.randn(n, 64)
    with torch.no_grad():
        torch.testing.assert_close(PatchEmbed.from_qwen(tower.patch_embed)(rows), tower.patch_embed(rows))
        rope = VisionRotaryEmbedding.from_module(tower.rotary_pos_emb, "qwen")
        for got, want in zip(rope(hidden, positions), tower.rotary_pos_emb(hidden, positions)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        cu = get_vision_cu_seqlens(IMAGE_GRID)
        attn = tower.blocks[0].attn
        cos_sin = tower.rotary_pos_emb(hidden, positions)
        expected = attn(hidden, cu_seqlens=cu, position_embeddings=cos_sin)
        packed = PackedVisionAttention.from_qwen(attn)
        torch.testing.assert_close(packed(hidden, cu, rope.rope(positions)), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed(hidden, cu, cos_sin), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(PatchMerger(tower.merger)(hidden), tower.merger(hidden))
        text_rope = model.model.language_model.rotary_emb
        position_ids = torch.randint(0, 50, (3, 2, 7))
        mrope = MRotaryEmbedding.from_module(text_rope, interleaved=family == "Qwen3-VL")
        for got, want in zip(mrope(hidden, position_ids), text_rope(hidden, position_ids)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert list(PatchEmbed.from_qwen(tower.patch_embed).state_dict()) == list(tower.patch_embed.state_dict())
    assert list(packed.state_dict()) == list(attn.state_dict())
