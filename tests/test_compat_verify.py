"""verify=True on every family, as on a transformers release vlmops has not verified: with every
fingerprint unknown, each rule is verified on the model before anything is replaced, and
patch_model applies exactly the rules whose outputs agreed, reports the others with their error,
and the patched model matches the unpatched one.

On a release whose code vlmops verified (the pinned one) every rule must agree: the comparison's
inputs and tolerance accept the patches the parity tests accept. ``tools/compat_matrix.py
--verify-release`` runs this file against releases outside the declared range, where the same
assertions hold with whatever rules agree, and transformers code a rule needs but the release
lacks is refused with UnsupportedTransformersError.
"""

import copy

import pytest
import torch

import vlmops
from vlmops.transformers import UnsupportedTransformersError, supported_transformers, verified


def qwen(family):
    from test_patch_qwen import build, features

    model, inputs = build(family)
    return model, lambda m: (features(m, inputs), m(**inputs).logits)


def pixtral():
    from test_patch_pixtral import IMAGE_SIZES, mistral3, pixels

    model, input_ids = mistral3()
    x = pixels()
    return model, lambda m: m(input_ids=input_ids, pixel_values=x, image_sizes=IMAGE_SIZES).logits


def shuffle(family):
    from test_patch_pixel_shuffle import build

    model, pixel_values, input_ids = build(family)
    return model, lambda m: m(input_ids=input_ids, pixel_values=pixel_values).logits


def clip_vlm(family):
    from test_patch_clip import VLMS

    model, inputs = VLMS[family]()
    return model, lambda m: m(**inputs).logits


def clip_tower(family):
    from test_patch_clip import build_tower

    model = build_tower(family)
    pixel_values = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    return model, lambda m: m(pixel_values).last_hidden_state


def mllama():
    from test_patch_mllama import build

    model, inputs = build()
    return model, lambda m: m(**inputs).logits


CASES = {
    "Qwen2-VL": lambda: qwen("Qwen2-VL"),
    "Qwen2.5-VL": lambda: qwen("Qwen2.5-VL"),
    "Qwen3-VL": lambda: qwen("Qwen3-VL"),
    "InternVL": lambda: shuffle("InternVL"),
    "Idefics3": lambda: shuffle("Idefics3"),
    "SmolVLM": lambda: shuffle("SmolVLM"),
    "Pixtral": pixtral,
    "Mllama": mllama,
    "LLaVA": lambda: clip_vlm("LLaVA"),
    "LLaVA-OneVision": lambda: clip_vlm("LLaVA-OneVision"),
    "CLIP": lambda: clip_tower("CLIP"),
    "SigLIP": lambda: clip_tower("SigLIP"),
}


@pytest.mark.parametrize("family", list(CASES))
def test_verify_applies_exactly_the_rules_that_agree(family, monkeypatch):
    import transformers

    monkeypatch.setattr(verified, "FINGERPRINTS", {})
    monkeypatch.setattr(verified, "SOURCES", {})
    model, outputs = CASES[family]()
    with torch.no_grad():
        expected = outputs(model)
    patched = copy.deepcopy(model)
    try:
        report = vlmops.patch_model(patched, verify=True)
    except UnsupportedTransformersError:
        # Code the family's rules need is missing from this release: refused before any change.
        assert transformers.__version__ not in supported_transformers()[family]
        assert not any(type(m).__module__.startswith("vlmops") for m in patched.modules())
        return
    assert report.families == [family] and report.verifications
    for verification in report.verifications:
        skipped = [s for s in report.skipped if (s.family, s.kind) == (verification.family, verification.kind)]
        replaced = [r for r in report.replacements if r.path.startswith(verification.path)]
        if verification.agreed:
            assert replaced and not skipped, verification
        else:
            assert skipped and str(verification) in skipped[0].reason, verification
    if transformers.__version__ in supported_transformers()[family]:
        assert all(v.agreed for v in report.verifications), report
        assert {v.kind for v in report.verifications} == {r.kind for r in patch_rules(family)}
    with torch.no_grad():
        for got, want in zip(torch.utils._pytree.tree_leaves(outputs(patched)), torch.utils._pytree.tree_leaves(expected)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def patch_rules(family):
    from vlmops.transformers import RULES
    from vlmops.transformers.patch import select_rules

    return [rule for rule in select_rules(RULES) if rule.family == family]
