"""patch_model on Llama 3.2 Vision (transformers' Mllama): the text cross-attention layers run
vlmops.gated_cross_attention; logits and generate() match the unpatched model, state_dict unchanged,
idempotence, refusal of changed transformers code."""

import copy

import pytest
import torch
from conftest import RecordVlmopsCalls
from transformers import MllamaConfig, MllamaForConditionalGeneration

import vlmops
from vlmops.transformers import UnsupportedTransformersError

# Tiny and CPU-friendly: 28 px tiles of 14 px patches -> 5 tokens per tile, up to 4 tiles per image.
VISION = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_global_layers=1,
    attention_heads=2,
    intermediate_size=32,
    image_size=28,
    patch_size=14,
    max_num_tiles=4,
    intermediate_layers_indices=[0, 1],
    vision_output_dim=48,
)
TEXT = dict(
    vocab_size=64,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    cross_attention_layers=[1],
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def build():
    """A seeded model with open gates (transformers initializes them to 0, which would hide the
    cross-attention), and inputs: two samples, two images, text before the first image."""
    torch.manual_seed(0)
    config = MllamaConfig(vision_config=VISION, text_config=TEXT, image_token_index=63)
    model = MllamaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.8)
    B, Lq, n_images, n_tiles = 2, 12, 2, 4
    input_ids = torch.randint(3, 60, (B, Lq))
    pixel_values = torch.randn(B, n_images, n_tiles, 3, 28, 28)
    aspect_ratio_ids = torch.tensor([[2, 6], [6, 0]])  # [1, 2] and [2, 2] tiles; sample 1 has one image
    aspect_ratio_mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 1, 1]], [[1, 1, 1, 1], [0, 0, 0, 0]]])
    cross_attention_mask = torch.zeros(B, Lq, n_images, n_tiles, dtype=torch.int64)
    cross_attention_mask[0, 3:7, 0, :2] = 1  # rows 0-2: text before the first image
    cross_attention_mask[0, 7:, 1, :] = 1
    cross_attention_mask[1, 1:, 0, :] = 1
    inputs = dict(
        input_ids=input_ids,
        pixel_values=pixel_values,
        aspect_ratio_ids=aspect_ratio_ids,
        aspect_ratio_mask=aspect_ratio_mask,
        cross_attention_mask=cross_attention_mask,
        attention_mask=torch.ones(B, Lq, dtype=torch.int64),
    )
    return model, inputs


def test_patched_mllama_matches_logits_and_generate():
    model, inputs = build()
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched)
    assert report.families == ["Mllama"]
    assert [r.path for r in report.replacements] == ["model.language_model.layers.1.cross_attn", "model"]
    assert patched.model.language_model.layers[1].cross_attn.tokens_per_tile == 5
    assert patched.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(patched.state_dict()[key], value)
    with torch.no_grad():
        expected = model(**inputs).logits
        with RecordVlmopsCalls() as recorder:
            logits = patched(**inputs).logits
        assert "vlmops::gated_cross_attention" in recorder.calls
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        expected_ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        with RecordVlmopsCalls() as recorder:
            ids = patched.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 4
    assert torch.equal(ids, expected_ids)
    # Prefill and every decode step (K/V from the cache) ran the op.
    assert recorder.calls.count("vlmops::gated_cross_attention") >= 4


def test_save_and_load_round_trip(tmp_path):
    model, inputs = build()
    with torch.no_grad():
        expected = model(**inputs).logits
    vlmops.patch_model(model)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert [r.path for r in vlmops.patch_model(loaded).replacements] == [
        "model.language_model.layers.1.cross_attn",
        "model",
    ]
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)


def test_patch_twice_is_a_no_op_and_ops_restrict_kinds():
    model, _ = build()
    assert vlmops.patch_model(model, ops=["pixel_shuffle"]).replacements == []
    assert type(model.model.language_model.layers[1].cross_attn).__name__ == "MllamaTextCrossAttention"
    first = vlmops.patch_model(model.model.language_model)  # no vision tower: reads every mask entry
    assert [r.path for r in first.replacements] == ["layers.1.cross_attn"]
    assert model.model.language_model.layers[1].cross_attn.tokens_per_tile == 1
    second = vlmops.patch_model(model)  # the model's forward: key ranges instead of the dense mask
    assert second.families == ["Mllama"] and [r.path for r in second.replacements] == ["model"]
    assert vlmops.patch_model(model).replacements == []


def test_changed_transformers_code_is_refused(monkeypatch):
    import vlmops.transformers.patch as patch

    real = patch.source_fingerprint
    monkeypatch.setattr(
        patch,
        "source_fingerprint",
        lambda spec: "0" * 64 if spec.endswith("_prepare_cross_attention_mask") else real(spec),
    )
    model, _ = build()
    with pytest.raises(UnsupportedTransformersError, match="changed .*_prepare_cross_attention_mask"):
        vlmops.patch_model(model)
    assert type(model.model.language_model.layers[1].cross_attn).__name__ == "MllamaTextCrossAttention"
