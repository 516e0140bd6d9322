"""verify=True on every family, as on a transformers release vlmops has not verified: with every
fingerprint unknown, each rule is verified on the model before anything is replaced, and
patch_model applies exactly the rules whose outputs agreed, reports the others with their error,
and the patched model matches the unpatched one.

On a release whose code vlmops verified (the pinned one) every fingerprint is treated as unknown and
every rule must agree: the comparison's inputs and tolerance accept the patches the parity tests
accept. ``tools/compat_matrix.py`` also runs this file against releases outside the declared range
(OUTSIDE), with the fingerprint table as it is: the rules whose code is unknown there are verified,
the same assertions hold with whatever rules agree, and transformers code a rule needs but the
release lacks is refused with UnsupportedTransformersError.
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
def test_verify_applies_exactly_the_rules_that_agree(family, monkeypatch, record_property):
    import transformers

    known = transformers.__version__ in supported_transformers()[family]
    if known:  # as if the code had changed: every rule is verified on the model
        monkeypatch.setattr(verified, "FINGERPRINTS", {})
        monkeypatch.setattr(verified, "SOURCES", {})
    model, outputs = CASES[family]()
    with torch.no_grad():
        expected = outputs(model)
    patched = copy.deepcopy(model)
    try:
        report = vlmops.patch_model(patched, verify=True)
    except UnsupportedTransformersError as error:
        # Code the family's rules need is missing from this release: refused before any change.
        assert not known
        assert not any(type(m).__module__.startswith("vlmops") for m in patched.modules())
        record_property("verify", {"refused": str(error)})
        return
    assert report.families == [family] if known else family in report.families
    for verification in report.verifications:
        skipped = [s for s in report.skipped if (s.family, s.kind) == (verification.family, verification.kind)]
        replaced = [r for r in report.replacements if r.path.startswith(verification.path)]
        if verification.agreed:
            assert replaced and not skipped, verification
        else:
            assert skipped and str(verification) in skipped[0].reason, verification
    if known:
        assert all(v.agreed for v in report.verifications), report
        assert {v.kind for v in report.verifications} == {r.kind for r in patch_rules(family)}
    skipped = {s.kind for s in report.skipped if s.family == family}
    # What tools/compat_matrix.py reports for a release outside the declared range.
    record_property(
        "verify",
        {
            "applied": sorted({r.kind for r in patch_rules(family)} - skipped),
            "verified": {
                v.kind: "agreed" if v.agreed else "differs" if v.error is not None else "failed"
                for v in report.verifications
                if v.family == family
            },
        },
    )
    with torch.no_grad():
        got = outputs(patched)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def patch_rules(family):
    from vlmops.transformers import RULES
    from vlmops.transformers.patch import select_rules

    return [rule for rule in select_rules(RULES) if rule.family == family]
