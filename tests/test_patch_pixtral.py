"""patch_model on Pixtral (PixtralVisionModel alone and as Mistral3's vision tower): parity with the
unpatched model (every layer's hidden states, image features, logits), vlmops ops really run,
state_dict and save/load unchanged, idempotence, ops= restriction, and the drop-in modules."""

import copy

import pytest
import torch
from conftest import RecordVlmopsCalls
from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralVisionConfig, PixtralVisionModel

import vlmops
from vlmops.nn import PackedVisionAttention, PatchEmbed, VisionRotaryEmbedding

IMAGE = 10
# hidden_act silu as in Pixtral-12B and Mistral3 (the config's default is gelu), so the MLPs are patched too.
VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    head_dim=32,
    image_size=112,
    patch_size=14,
    hidden_act="silu",
)
# Three images of different sizes padded into one [3, 3, 112, 112] batch, as the processor pads them.
IMAGE_SIZES = torch.tensor([[112, 84], [56, 112], [28, 56]])


def tower(attn="sdpa"):
    torch.manual_seed(0)
    return PixtralVisionModel._from_config(PixtralVisionConfig(**VISION), attn_implementation=attn).eval()


def pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 112, 112)


def mistral3():
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
        vision_config=dict(VISION, model_type="pixtral"),
        text_config=text,
        image_token_index=IMAGE,
        spatial_merge_size=2,
    )
    model = Mistral3ForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
    tokens = [int(n) for n in (IMAGE_SIZES // 28).prod(-1)]
    ids = [1, 2] + [IMAGE] * tokens[0] + [3] + [IMAGE] * tokens[1] + [4] + [IMAGE] * tokens[2] + [5]
    return model, torch.tensor([ids])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_patched_tower_matches_every_layer(attn):
    model = tower(attn)
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == ["Pixtral"]
    assert patched.state_dict().keys() == model.state_dict().keys()
    x = pixels()
    with torch.no_grad():
        expected = model(x, image_sizes=IMAGE_SIZES, output_hidden_states=True)
        with RecordVlmopsCalls() as recorder:
            got = patched(x, image_sizes=IMAGE_SIZES, output_hidden_states=True)
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    for a, b in zip(got.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert {
        "vlmops::patch_embed",
        "vlmops::rope_",
        "vlmops::varlen_attention",
        "vlmops::rms_norm",
        "vlmops::silu_mul",
    } <= set(recorder.calls)


def test_mistral3_features_and_logits_match():
    model, input_ids = mistral3()
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == ["Pixtral"]
    assert all(r.path.startswith("model.vision_tower") for r in report.replacements)
    x = pixels()
    with torch.no_grad():
        expected = torch.cat(model.model.get_image_features(x, IMAGE_SIZES).pooler_output)
        expected_logits = model(input_ids=input_ids, pixel_values=x, image_sizes=IMAGE_SIZES).logits
        with RecordVlmopsCalls() as recorder:
            got = torch.cat(patched.model.get_image_features(x, IMAGE_SIZES).pooler_output)
            logits = patched(input_ids=input_ids, pixel_values=x, image_sizes=IMAGE_SIZES).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert "vlmops::varlen_attention" in recorder.calls


def test_patch_twice_ops_restriction_and_save_load(tmp_path):
    model = tower()
    x = pixels()
    with torch.no_grad():
        expected = model(x, image_sizes=IMAGE_SIZES).last_hidden_state
    only_rope = copy.deepcopy(model)
    report = vlmops.patch_model(only_rope, ops=["rope"])
    assert [r.new for r in report.replacements] == ["vlmops.nn.VisionRotaryEmbedding"]
    assert type(only_rope.transformer.layers[0].attention).__name__ == "PixtralAttention"
    assert vlmops.patch_model(model).replacements
    assert vlmops.patch_model(model).replacements == []
    with torch.no_grad():
        torch.testing.assert_close(only_rope(x, image_sizes=IMAGE_SIZES).last_hidden_state, expected)
        torch.testing.assert_close(model(x, image_sizes=IMAGE_SIZES).last_hidden_state, expected, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = PixtralVisionModel.from_pretrained(tmp_path).eval()
    vlmops.patch_model(loaded)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, image_sizes=IMAGE_SIZES).last_hidden_state, model(x, image_sizes=IMAGE_SIZES).last_hidden_state
        )


def test_drop_in_modules_match_transformers():
    model = tower()
    x = pixels()
    conv = model.patch_conv
    patch = PatchEmbed.from_conv(conv)
    assert list(patch.state_dict()) == list(conv.state_dict())
    positions = vlmops.pixtral_rope_positions(IMAGE_SIZES // 14)
    hidden = torch.randn(1, positions.shape[0], 64)
    cu = torch.nn.functional.pad((IMAGE_SIZES // 14).prod(-1).cumsum(0), (1, 0)).int()
    block_mask = torch.full((hidden.shape[1],) * 2, torch.finfo(torch.float32).min)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        block_mask[start:end, start:end] = 0
    with torch.no_grad():
        torch.testing.assert_close(patch(x), conv(x), rtol=1e-5, atol=1e-5)
        rope = VisionRotaryEmbedding.from_module(model.patch_positional_embedding, "pixtral")
        cos_sin = model.patch_positional_embedding(hidden, positions)
        for got, want in zip(rope(hidden, positions), cos_sin):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        attn = model.transformer.layers[0].attention
        expected, _ = attn(hidden, attention_mask=block_mask[None, None], position_embeddings=cos_sin)
        packed = PackedVisionAttention.from_pixtral(attn)
        assert list(packed.state_dict()) == list(attn.state_dict())
        for position_embeddings in (rope.rope(positions), cos_sin):
            got, weights = packed(hidden, position_embeddings=position_embeddings, cu_seqlens=cu)
            assert weights is None
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
