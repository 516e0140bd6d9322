"""patch_model on the CLIP / SigLIP towers, alone and inside LLaVA and LLaVA-OneVision: parity with
the unpatched model, state_dict unchanged, vlmops ops really run, idempotence, ops=, refusals."""

import copy

import pytest
import torch
from conftest import RecordVlmopsCalls
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings as HFCLIPVisionEmbeddings
from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings as HFSiglipVisionEmbeddings

import vlmops
from vlmops.transformers import UnsupportedModelError, UnsupportedTransformersError

IMAGE_TOKEN = 99
# Head dim 32: the smallest varlen_attention takes.
VISION = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=56, patch_size=14
)
TEXT = dict(
    hidden_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=128,
    vocab_size=100,
)
TOWERS = {"CLIP": (CLIPVisionConfig, CLIPVisionModel), "SigLIP": (SiglipVisionConfig, SiglipVisionModel)}
VLMOPS_OPS = {"vlmops::patch_embed", "vlmops::varlen_attention"}


def build_tower(family, **overrides):
    torch.manual_seed(0)
    config_cls, model_cls = TOWERS[family]
    return model_cls(config_cls(**{**VISION, **overrides})).eval()


def build_llava():
    """A tiny LLaVA (CLIP tower), two 56x56 images (16 patch tokens each, CLS dropped) in a prompt."""
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=dict(VISION, model_type="clip_vision_model"),
        text_config=dict(TEXT, model_type="llama"),
        image_token_id=IMAGE_TOKEN,
    )
    model = LlavaForConditionalGeneration(config).eval()
    pixel_values = torch.randn(2, 3, 56, 56)
    input_ids = torch.tensor([[1, 2] + [IMAGE_TOKEN] * 16 + [3] + [IMAGE_TOKEN] * 16 + [4, 5]])
    return model, dict(input_ids=input_ids, pixel_values=pixel_values)


def build_onevision():
    """A tiny LLaVA-OneVision (SigLIP tower, 28 px tiles) with two images of different sizes in one
    prompt: each is cut into its own number of anyres tiles, so the tower sees a ragged set."""
    torch.manual_seed(0)
    config = LlavaOnevisionConfig(
        vision_config=dict(VISION, model_type="siglip_vision_model", image_size=28),
        text_config=dict(TEXT, model_type="qwen2"),
        image_token_index=IMAGE_TOKEN,
        video_token_index=98,
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]],
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    image_sizes = torch.tensor([[30, 60], [50, 40]])
    pixel_values = torch.randn(2, 5, 3, 28, 28)  # up to 5 tiles per image; the unused ones are dropped
    with torch.no_grad():
        # The token count per image is what transformers' own image path produces for these sizes.
        features = model.model.get_image_features(pixel_values, image_sizes)
        lengths = [len(f) for f in getattr(features, "pooler_output", features)]
    input_ids = torch.tensor([[1] + [IMAGE_TOKEN] * lengths[0] + [2, 3] + [IMAGE_TOKEN] * lengths[1] + [4]])
    return model, dict(input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes)


VLMS = {"LLaVA": build_llava, "LLaVA-OneVision": build_onevision}


def image_features(model, inputs):
    kwargs = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
    return torch.cat(list(model.model.get_image_features(inputs["pixel_values"], **kwargs).pooler_output))


def assert_same_state(patched, model):
    assert list(patched.state_dict()) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(patched.state_dict()[key], value), key


@pytest.mark.parametrize("family", list(TOWERS))
def test_tower_matches_and_runs_vlmops(family):
    model = build_tower(family)
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == [family]
    assert {r.path for r in report.replacements} == {"embeddings", ""}
    assert_same_state(patched, model)
    pixel_values = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        expected = model(pixel_values)
        with RecordVlmopsCalls() as recorder:
            got = patched(pixel_values)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, rtol=1e-5, atol=1e-5)
    assert recorder.calls.count("vlmops::patch_embed") == 1
    assert recorder.calls.count("vlmops::varlen_attention") == VISION["num_hidden_layers"]


@pytest.mark.parametrize("family", list(TOWERS))
def test_tower_interpolated_positions(family):
    model = build_tower(family)
    patched = copy.deepcopy(model)
    vlmops.patch_model(patched)
    pixel_values = torch.randn(2, 3, 70, 98)  # 5 x 7 patches: the 4 x 4 position table is resized
    with torch.no_grad():
        expected = model(pixel_values, interpolate_pos_encoding=True).last_hidden_state
        got = patched(pixel_values, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", list(VLMS))
def test_vlm_matches_and_runs_vlmops(family):
    model, inputs = VLMS[family]()
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == [family]
    assert {r.path for r in report.replacements} == {"model.vision_tower.embeddings", "model.vision_tower"}
    assert_same_state(patched, model)
    with torch.no_grad():
        expected_features = image_features(model, inputs)
        expected_logits = model(**inputs).logits
        with RecordVlmopsCalls() as recorder:
            features = image_features(patched, inputs)
            logits = patched(**inputs).logits
    torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert VLMOPS_OPS <= set(recorder.calls)


def test_embeddings_module_alone():
    for family, (hf_cls, vlmops_cls) in {
        "CLIP": (HFCLIPVisionEmbeddings, vlmops.nn.CLIPVisionEmbeddings),
        "SigLIP": (HFSiglipVisionEmbeddings, vlmops.nn.SiglipVisionEmbeddings),
    }.items():
        config = TOWERS[family][0](**VISION)
        torch.manual_seed(0)
        original = hf_cls(config)
        module = vlmops_cls(config)
        assert [(n, p.shape) for n, p in module.named_parameters()] == [
            (n, p.shape) for n, p in original.named_parameters()
        ]
        module.load_state_dict(original.state_dict())
        pixel_values = torch.randn(2, 3, 56, 56, requires_grad=True)
        expected = original(pixel_values)
        got = module(pixel_values)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        grads = torch.autograd.grad(got.sum(), [pixel_values, *module.parameters()])
        expected_grads = torch.autograd.grad(expected.sum(), [pixel_values, *original.parameters()])
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_clip_embeddings_refuse_wrong_size_like_transformers():
    model = build_tower("CLIP")
    vlmops.patch_model(model)
    with pytest.raises(ValueError, match=r"Input image size \(70\*70\) doesn't match model \(56\*56\)"):
        model(torch.randn(1, 3, 70, 70))


def test_siglip_crops_like_the_conv():
    # 62 px with P=14: nn.Conv2d drops the last 6 rows/columns (SigLIP-so400m: 384 px -> 378 px).
    model = build_tower("SigLIP", image_size=62)
    patched = copy.deepcopy(model)
    vlmops.patch_model(patched)
    pixel_values = torch.randn(2, 3, 62, 62)
    with torch.no_grad():
        torch.testing.assert_close(
            patched(pixel_values).last_hidden_state, model(pixel_values).last_hidden_state, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("kind", ["patch_embed", "attention"])
def test_ops_restricts_kinds(kind):
    model, inputs = build_llava()
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched, ops=[kind])
    assert report.families == ["LLaVA"]
    expected_path = "model.vision_tower.embeddings" if kind == "patch_embed" else "model.vision_tower"
    assert [r.path for r in report.replacements] == [expected_path]
    with torch.no_grad():
        with RecordVlmopsCalls() as recorder:
            features = image_features(patched, inputs)
        torch.testing.assert_close(features, image_features(model, inputs), rtol=1e-5, atol=1e-5)
    op = "vlmops::patch_embed" if kind == "patch_embed" else "vlmops::varlen_attention"
    assert set(recorder.calls) == {op}
    # The other kind follows on a second call; a third is a no-op.
    other = vlmops.patch_model(patched)
    assert other.families == ["LLaVA"] and len(other.replacements) == 1
    assert vlmops.patch_model(patched).replacements == []


def test_patch_twice_is_a_no_op_and_submodules_work():
    model, _ = build_llava()
    first = vlmops.patch_model(model.model.vision_tower)  # the tower on its own: family CLIP
    assert first.families == ["CLIP"] and len(first.replacements) == 2
    second = vlmops.patch_model(model)
    assert second.replacements == []
    assert vlmops.patch_model(model.model).replacements == []


def test_clip_model_patches_only_the_vision_side():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=dict(TEXT, max_position_embeddings=16))).eval()
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == ["CLIP"]
    assert {r.path for r in report.replacements} == {"vision_model.embeddings", "vision_model"}
    assert patched.text_model.config._attn_implementation == model.text_model.config._attn_implementation
    pixel_values, input_ids = torch.randn(2, 3, 56, 56), torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixel_values)
        got = patched(input_ids=input_ids, pixel_values=pixel_values)
    torch.testing.assert_close(got.logits_per_image, expected.logits_per_image, rtol=1e-5, atol=1e-5)


def tower_case(family):
    model = build_tower(family)
    return model, {"pixel_values": torch.randn(2, 3, 56, 56)}


SAVE_LOAD = {"CLIP": lambda: tower_case("CLIP"), "SigLIP": lambda: tower_case("SigLIP"), **VLMS}


def outputs(model, inputs):
    with torch.no_grad():
        if "input_ids" in inputs:
            return model(**inputs).logits
        return model(**inputs).last_hidden_state


@pytest.mark.parametrize("family", list(SAVE_LOAD))
def test_save_and_load_round_trip(family, tmp_path):
    model, inputs = SAVE_LOAD[family]()
    expected_keys = list(model.state_dict())
    expected = outputs(model, inputs)
    vlmops.patch_model(model)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert list(loaded.state_dict()) == expected_keys
    assert vlmops.patch_model(loaded).families == [family]
    assert_same_state(loaded, model)
    torch.testing.assert_close(outputs(loaded, inputs), expected, rtol=1e-5, atol=1e-5)


def test_unsupported_model_lists_families():
    with pytest.raises(UnsupportedModelError, match="supported: .*CLIP.*LLaVA, LLaVA-OneVision.*SigLIP"):
        vlmops.patch_model(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "changed",
    ["CLIPAttention.forward", "CLIPVisionEmbeddings.interpolate_pos_encoding", "LlavaModel.get_image_features"],
)
def test_changed_transformers_code_is_refused(monkeypatch, changed):
    import vlmops.transformers.patch as patch

    real = patch.source_fingerprint
    monkeypatch.setattr(patch, "source_fingerprint", lambda spec: "0" * 64 if spec.endswith(changed) else real(spec))
    model, _ = build_llava()
    with pytest.raises(UnsupportedTransformersError, match=f"changed .*{changed}"):
        vlmops.patch_model(model)
    # Refused before anything changed: no rule was applied, not even those whose code is unchanged.
    tower = model.model.vision_tower
    assert type(tower.embeddings) is HFCLIPVisionEmbeddings
    assert tower.config._attn_implementation == "sdpa"
