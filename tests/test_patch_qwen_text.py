"""patch_model's text M-RoPE rule on the Qwen2-VL, Qwen2.5-VL and Qwen3-VL language models: logits and
greedy generate (prefill and decode with a KV cache, images and a video in the prompt, so the 3-D
positions differ per axis) equal to the unpatched model's, vlmops::rope running in every decoder layer
with no cos/sin table built, the rule's gating, verify=True, torch.compile and save/load."""

import copy

import pytest
import torch
from conftest import RecordVlmopsCalls
from test_patch_qwen import FAMILIES, RecordCalls, build

import vlmops
from vlmops.nn import MRotaryEmbedding
from vlmops.transformers import qwen_text_rules
from vlmops.transformers.patch import select_rules, verify_rule

TEXT_ROPE = "vlmops.nn.MRotaryEmbedding"


def text_rule(family):
    return next(r for r in select_rules(qwen_text_rules.RULES) if r.family == family)


def language_model(model):
    return model.model.language_model


@pytest.mark.parametrize("family", FAMILIES)
def test_text_rope_matches_logits_and_runs_vlmops_rope(family):
    model, inputs = build(family)
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched, ops=["rope"])
    text = language_model(patched)
    layers = len(text.layers)
    rows = {(r.path, r.new) for r in report.replacements}
    assert ("model.language_model.rotary_emb", TEXT_ROPE) in rows
    patched_layers = {r.path for r in report.replacements if r.new.endswith("vlmops.rope")}
    assert patched_layers == {f"model.language_model.layers.{i}.self_attn" for i in range(layers)}
    assert isinstance(text.rotary_emb, MRotaryEmbedding) and text.rotary_emb.output == "rope"
    assert patched.state_dict().keys() == model.state_dict().keys()

    with torch.no_grad():
        expected = model(**inputs).logits
        got = patched(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    # The language model alone, on the hidden states and 3-D positions the model gave it for this prompt
    # (get_rope_index's): one vlmops::rope per decoder layer (the vision tower rotates in place, with
    # rope_), and the patched text model never computes cos/sin.
    seen = {}
    hook = text.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        patched(**inputs)
    hook.remove()
    embeds, position_ids = seen["inputs_embeds"], seen["position_ids"]
    assert position_ids.shape[0] == 3 and not torch.equal(position_ids[0], position_ids[1])
    with torch.no_grad():
        want = language_model(model)(inputs_embeds=embeds, position_ids=position_ids).last_hidden_state
        with RecordCalls() as recorder:
            have = text(inputs_embeds=embeds, position_ids=position_ids).last_hidden_state
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)
    assert recorder.calls.count("vlmops::rope") == layers
    assert not {"aten::cos", "aten::sin"} & set(recorder.calls)
    with torch.no_grad(), RecordCalls() as unpatched:
        language_model(model)(inputs_embeds=embeds, position_ids=position_ids)
    assert {"aten::cos", "aten::sin"} <= set(unpatched.calls)  # what the check above would see


@pytest.mark.parametrize("family", FAMILIES)
def test_text_rope_generate_gives_identical_tokens(family):
    """Greedy decoding through the KV cache: the prefill at the prompt's 3-D positions, then decode steps
    at the positions the model derives from its rope deltas."""
    model, inputs = build(family)
    patched = copy.deepcopy(model)
    vlmops.patch_model(patched, ops=["rope"])
    steps = 6
    kwargs = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0, use_cache=True)
    with torch.no_grad():
        expected = model.generate(**inputs, **kwargs)
        with RecordVlmopsCalls() as recorder:
            got = patched.generate(**inputs, **kwargs)
    assert got.shape[1] == inputs["input_ids"].shape[1] + steps
    assert torch.equal(got, expected)
    # Every forward of generate (the prefill and each decode step) rotated in every layer.
    assert recorder.calls.count("vlmops::rope") == steps * len(language_model(patched).layers)


@pytest.mark.parametrize("family", ["Qwen2-VL", "Qwen3-VL"])  # contiguous and interleaved sections
def test_patched_language_model_compiles_in_one_graph(family):
    model, _ = build(family)
    text = language_model(model)
    patched = copy.deepcopy(text)
    vlmops.patch_model(patched, ops=["rope"])
    embeds = torch.randn(1, 12, text.config.hidden_size)
    s = torch.arange(12)
    position_ids = torch.stack((s, s // 2, s % 3))[:, None]
    with torch.no_grad():
        expected = text(inputs_embeds=embeds, position_ids=position_ids, use_cache=False).last_hidden_state
        compiled = torch.compile(patched, fullgraph=True, backend="aot_eager")
        got = compiled(inputs_embeds=embeds, position_ids=position_ids, use_cache=False).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_rope_save_load_round_trip(family, tmp_path):
    model, inputs = build(family)
    with torch.no_grad():
        expected = model(**inputs).logits
    vlmops.patch_model(model)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    report = vlmops.patch_model(loaded)
    assert ("model.language_model.rotary_emb", TEXT_ROPE) in {(r.path, r.new) for r in report.replacements}
    assert vlmops.patch_model(loaded).replacements == []
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_rope_verifies_on_the_model(family):
    model, _ = build(family)
    text = language_model(model)
    verdict = verify_rule(text_rule(family), model, text, "model.language_model")
    assert verdict.agreed, verdict
    assert verdict.error is not None and verdict.ratio <= 1.0
    assert not isinstance(text.rotary_emb, MRotaryEmbedding)  # verify changes nothing


def test_text_rope_skips_scaled_rope_and_keeps_the_model_working():
    """A rope type vlmops does not implement: the language model keeps transformers' rotary, the report
    says why, and the vision rules still apply."""
    model, inputs = build("Qwen2.5-VL")
    text = language_model(model)
    text.rotary_emb.rope_type = "linear"
    patched = copy.deepcopy(model)
    report = vlmops.patch_model(patched, ops=["rope"])
    [skip] = [s for s in report.skipped if s.paths == ("model.language_model",)]
    assert (skip.family, skip.kind) == ("Qwen2.5-VL", "rope") and "rope_type 'linear'" in skip.reason
    assert not isinstance(language_model(patched).rotary_emb, MRotaryEmbedding)
    assert any(r.new == "vlmops.nn.VisionRotaryEmbedding" for r in report.replacements)
    with torch.no_grad():
        torch.testing.assert_close(patched(**inputs).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_patched_attention_takes_mrope_and_cos_sin(family):
    """The patched attention rotates the MRope of the patched rotary module with vlmops (positions: a view
    of position_ids, no copy) and transformers' (cos, sin) with transformers' function: both give the
    unpatched attention's output."""
    model, _ = build(family)
    text = language_model(model)
    attn = text.layers[0].self_attn
    patched = copy.deepcopy(text)
    vlmops.patch_model(patched, ops=["rope"])
    twin = patched.layers[0].self_attn
    hidden = torch.randn(2, 5, text.config.hidden_size)
    position_ids = torch.randint(0, 20, (3, 2, 5))
    mrope = patched.rotary_emb(hidden, position_ids)
    assert mrope.positions.shape == (2, 5, 3) and mrope.positions.data_ptr() == position_ids.data_ptr()
    with torch.no_grad():
        cos_sin = text.rotary_emb(hidden, position_ids)
        expected, _ = attn(hidden, position_embeddings=cos_sin, attention_mask=None)
        from_cos_sin, _ = twin(hidden, position_embeddings=cos_sin, attention_mask=None)
        from_mrope, _ = twin(hidden, position_embeddings=mrope, attention_mask=None)
    torch.testing.assert_close(from_cos_sin, expected, rtol=0, atol=0)
    torch.testing.assert_close(from_mrope, expected, rtol=1e-5, atol=1e-5)
