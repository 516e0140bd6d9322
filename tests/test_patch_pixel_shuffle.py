"""patch_model on the pixel-shuffle families (InternVL, Idefics3, SmolVLM): parity with the
unpatched model, state_dict unchanged, vlmops ops really run, idempotence, refusals."""

import copy
import re

import pytest
import torch
from conftest import RecordVlmopsCalls
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    InternVLConfig,
    InternVLForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)

import vlmops
from vlmops.transformers import SUPPORTED_FAMILIES, UnsupportedModelError, UnsupportedTransformersError

IMAGE_TOKEN = 99
VISION = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14
)


def text_config(model_type):
    return dict(
        model_type=model_type,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        vocab_size=100,
    )


def build(family):
    """A tiny seeded model of the family, its pixel_values and a prompt with its image tokens."""
    torch.manual_seed(0)
    if family == "InternVL":
        config = InternVLConfig(
            vision_config=VISION, text_config=text_config("qwen2"), image_token_id=IMAGE_TOKEN, image_seq_length=4
        )
        model = InternVLForConditionalGeneration(config).eval()
        pixel_values = torch.randn(2, 3, 56, 56)  # 2 images -> 4x4 patches -> 2x2 merged tokens each
        input_ids = torch.tensor([[1, 2] + [IMAGE_TOKEN] * 4 + [3], [4] + [IMAGE_TOKEN] * 4 + [5, 6]])
    else:
        config_cls, model_cls = {
            "Idefics3": (Idefics3Config, Idefics3ForConditionalGeneration),
            "SmolVLM": (SmolVLMConfig, SmolVLMForConditionalGeneration),
        }[family]
        # SmolVLM: 32 px images of 4 px patches, 16 tokens each after the shuffle: transformers 5.20's
        # SmolVLM merges image tokens in blocks of patch_size, so their count must be a multiple of it.
        size, patch = (56, 14) if family == "Idefics3" else (32, 4)
        tokens = (size // patch // 2) ** 2
        config = config_cls(
            vision_config=dict(VISION, image_size=size, patch_size=patch),
            text_config=text_config("llama"),
            scale_factor=2,
            image_token_id=IMAGE_TOKEN,
        )
        model = model_cls(config).eval()
        pixel_values = torch.randn(1, 2, 3, size, size)  # one sample, two images
        input_ids = torch.tensor([[1] + [IMAGE_TOKEN] * tokens + [2] + [IMAGE_TOKEN] * tokens + [3]])
    return model, pixel_values, input_ids


def image_features(model, pixel_values):
    out = model.model.get_image_features(pixel_values)
    pooled = out.pooler_output
    return torch.cat(list(pooled)) if isinstance(pooled, (list, tuple)) else pooled


FAMILIES = ["InternVL", "Idefics3", "SmolVLM"]


@pytest.mark.parametrize("family", FAMILIES)
def test_patched_model_matches_and_runs_vlmops(family):
    model, pixel_values, input_ids = build(family)
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == [family]
    assert report.replacements, report
    assert patched.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(patched.state_dict()[key], value)

    with torch.no_grad():
        expected_features = image_features(model, pixel_values)
        expected_logits = model(input_ids=input_ids, pixel_values=pixel_values).logits
        with RecordVlmopsCalls() as recorder:
            features = image_features(patched, pixel_values)
            logits = patched(input_ids=input_ids, pixel_values=pixel_values).logits
    torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    expected_op = "vlmops::pixel_shuffle_layer_norm" if family == "InternVL" else "vlmops::pixel_shuffle"
    assert expected_op in recorder.calls


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(family, tmp_path):
    model, pixel_values, _ = build(family)
    with torch.no_grad():
        expected = image_features(model, pixel_values)
    vlmops.patch_model(model)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert vlmops.patch_model(loaded).replacements
    with torch.no_grad():
        torch.testing.assert_close(image_features(loaded, pixel_values), image_features(model, pixel_values))
        torch.testing.assert_close(image_features(loaded, pixel_values), expected, rtol=1e-5, atol=1e-5)


def test_patch_twice_is_a_no_op_and_submodules_work():
    model, pixel_values, _ = build("SmolVLM")
    first = vlmops.patch_model(model.model)  # a submodule of the whole model
    assert [r.path for r in first.replacements] == ["connector"]
    second = vlmops.patch_model(model)
    assert second.families == ["SmolVLM"] and second.replacements == []


def test_ops_restricts_kinds():
    model, _, _ = build("InternVL")
    report = vlmops.patch_model(model, ops=["attention"])
    assert report.families == ["InternVL"] and report.replacements == []
    assert type(model.model.multi_modal_projector).__name__ == "InternVLMultiModalProjector"
    with pytest.raises(ValueError, match="unknown ops"):
        vlmops.patch_model(model, ops=["pixelshuffle"])


def test_unsupported_model_lists_families():
    supported = ", ".join(sorted(SUPPORTED_FAMILIES))
    assert "Idefics3, InternVL" in supported and "SmolVLM" in supported
    with pytest.raises(UnsupportedModelError, match=f"supported: {re.escape(supported)}"):
        vlmops.patch_model(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        vlmops.patch_model("model")


def test_connector_as_root_is_refused():
    model, _, _ = build("Idefics3")
    with pytest.raises(ValueError, match="patch a module that contains it"):
        vlmops.patch_model(model.model.connector)


def test_changed_transformers_code_is_refused(monkeypatch):
    import vlmops.transformers.patch as patch

    real = patch.source_fingerprint
    monkeypatch.setattr(
        patch, "source_fingerprint", lambda spec: "0" * 64 if spec.endswith("get_image_features") else real(spec)
    )
    model, _, _ = build("InternVL")
    with pytest.raises(UnsupportedTransformersError, match="changed .*get_image_features"):
        vlmops.patch_model(model)
    assert type(model.model.multi_modal_projector).__name__ == "InternVLMultiModalProjector"
