"""patch_model across transformers releases: the verified fingerprint sets, the refusals, and
verify=True against planted changes of transformers' code.

- supported_transformers() and the generated fingerprint table (vlmops.transformers.verified) agree
  with the matrix's recorded results (tools/compat_matrix.json), and so does README's table: both
  are generated, not typed.
- Refusals name the family, the function and the verified releases; a rule variant is picked per
  code generation; the source of a function is read below the wrappers transformers' kernel
  decorators put around it.
- verify=True: a planted semantic change (a transformers function monkeypatched to compute something
  else) makes exactly that rule refused, with the measured error, while the others are applied and
  the patched model matches the (changed) unpatched one; a change of the source that keeps the
  semantics is verified and applied; verify=False refuses both.
"""

import copy
import dataclasses
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import vlmops
import vlmops.transformers.patch as patch
from vlmops.transformers import (
    RULES,
    SUPPORTED_FAMILIES,
    UnsupportedTransformersError,
    supported_transformers,
    verified,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import compat_matrix  # noqa: E402

sys.path.remove(str(ROOT / "tools"))


def test_supported_transformers_lists_every_family_with_its_verified_releases():
    import transformers

    supported = supported_transformers()
    assert set(supported) == set(SUPPORTED_FAMILIES)
    results, _ = compat_matrix.load_results()
    for family, releases in supported.items():
        assert releases == tuple(
            r for r in sorted(results, key=patch.release_key) if results[r]["families"][family] == "verified"
        )
        assert transformers.__version__ in releases, family  # the pinned release is verified for every family
    oldest, newest = compat_matrix.ci_releases()
    assert verified.RANGE == (oldest, newest)


def test_generated_files_match_the_recorded_results():
    results, outside = compat_matrix.load_results()
    assert set(results) == set(compat_matrix.RELEASES) and set(outside) == set(compat_matrix.OUTSIDE)
    assert Path(verified.__file__).read_text() == compat_matrix.verified_source(results)
    readme = (ROOT / "README.md").read_text()
    assert f"{compat_matrix.BEGIN}\n{compat_matrix.table(results, outside)}\n{compat_matrix.END}" in readme


def test_outside_the_range_verify_patched_only_what_agreed_and_refused_cleanly():
    """The matrix's verify=True runs outside the range passed, and exercised both paths."""
    _, outside = compat_matrix.load_results()
    entries = [entry for release in outside.values() for entry in release["families"].values()]
    assert all(entry["outcome"] == "passed" for entry in entries)
    assert any("agreed" in entry.get("verified", {}).values() for entry in entries)
    assert any("refused" in entry or set(entry["verified"].values()) - {"agreed"} for entry in entries)


def test_every_fingerprint_was_verified_on_a_release_its_family_passed():
    for key, prints in verified.FINGERPRINTS.items():
        family = key.split("/")[0]
        for releases in prints.values():
            assert set(releases) <= set(verified.RELEASES[family]), key


def test_the_declared_range_spans_the_last_six_months():
    """The newest release and at least five other 5.x releases of the six months before it."""
    import datetime

    results, _ = compat_matrix.load_results()
    dates = sorted(
        datetime.date.fromisoformat(results[r]["date"]) for r in compat_matrix.RELEASES if r.startswith("5.")
    )
    newest = dates[-1]
    recent = [d for d in dates[:-1] if (newest - d).days <= 183]
    assert len(recent) >= 5 and (newest - recent[0]).days >= 150, dates


def test_parity_tests_of_the_matrix_exist():
    for nodes in compat_matrix.PARITY.values():
        for node in nodes:
            path, _, name = node.partition("::")
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), node


# Refusals.


def qwen2_vl():
    from test_patch_qwen import build

    return build("Qwen2-VL")


def test_refusal_names_family_function_and_releases(monkeypatch):
    spec = "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.recomposition_frequencies"
    real = patch.source_fingerprint
    monkeypatch.setattr(patch, "source_fingerprint", lambda s: "0" * 64 if s == spec else real(s))
    model, _ = qwen2_vl()
    releases = ", ".join(supported_transformers()["Qwen2-VL"])
    with pytest.raises(UnsupportedTransformersError) as raised:
        vlmops.patch_model(model)
    message = str(raised.value)
    assert f"changed {spec}, which the Qwen2-VL patch (rope) relies on" in message
    assert f"verified this patch on transformers {releases}" in message and "verify=True" in message
    assert not any(type(m).__module__.startswith("vlmops") for m in model.modules())


def test_a_combination_never_verified_together_is_refused(monkeypatch):
    """Each function's source is known, but the rule's fingerprint (all of them together) is not."""
    rule = next(r for r in patch.select_rules(RULES) if r.key == "Qwen2-VL/rope")
    combined, _ = patch.fingerprint(rule)
    monkeypatch.setitem(verified.FINGERPRINTS, rule.key, {})
    model, _ = qwen2_vl()
    with pytest.raises(UnsupportedTransformersError, match="never verified together"):
        vlmops.patch_model(model)
    assert combined not in verified.FINGERPRINTS[rule.key]


def test_rule_variants_are_picked_per_code_generation():
    chosen = {rule.key: rule for rule in patch.select_rules(RULES)}
    assert len(chosen) == len({rule.key for rule in RULES})
    assert chosen["Qwen2-VL/rope"].api == ""  # transformers >= 5.17: cos/sin rotary modules
    legacy = next(r for r in RULES if r.key == "Qwen2-VL/rope" and r.api)
    assert not legacy.serves()
    serving = dataclasses.replace(legacy, serves=lambda: True)
    rules = [serving if r is legacy else r for r in RULES]
    assert {r.key: r for r in patch.select_rules(rules)}["Qwen2-VL/rope"] is serving


def test_source_is_read_below_kernel_decorator_wrappers(monkeypatch):
    """transformers >= 5.25 with the kernels package wraps functions in nn.Module instances and
    __init__ methods in closures without __wrapped__: the fingerprint is the wrapped code's."""
    module = types.ModuleType("vlmops_test_wrapped")
    source = (
        "import torch\n"
        "def apply_rotary(q, k):\n"
        "    return q + 1, k\n"
        "class Attention(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.scale = 2\n"
    )
    module.__file__ = "<vlmops_test_wrapped>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    import linecache

    monkeypatch.setitem(linecache.cache, module.__file__, (len(source), None, source.splitlines(True), module.__file__))
    plain = {name: patch.source_of(f"vlmops_test_wrapped:{name}") for name in ("apply_rotary", "Attention.__init__")}

    function = module.apply_rotary

    class Func(nn.Module):  # the kernels package's module made from a function
        def forward(self, *args):
            return function(*args)

    Func.__module__ = module.__name__
    orig_init = module.Attention.__init__

    def new_init(self, *args):
        orig_init(self, *args)

    monkeypatch.setattr(module, "apply_rotary", Func())
    monkeypatch.setattr(module.Attention, "__init__", new_init)
    for name, text in plain.items():
        assert patch.source_of(f"vlmops_test_wrapped:{name}") == text
    assert "self.scale = 2" in plain["Attention.__init__"] and "q + 1" in plain["apply_rotary"]


# verify=True against planted changes.


def swapped_recomposition(self, freq):
    """Qwen2VLVisionRotaryEmbedding.recomposition_frequencies with w before h: another rotation."""
    freq_h, freq_w = freq[:, 0], freq[:, 1]
    freq_hw = torch.cat([freq_w, freq_h], dim=-1)
    return torch.cat([freq_hw, freq_hw], dim=-1)


def same_recomposition(self, freq):
    """The same computation as transformers', written differently (its source, hence fingerprint, differs)."""
    halves = torch.cat([freq[:, 0], freq[:, 1]], dim=-1)
    return halves.repeat(1, 2)


def qwen2_vl_with(monkeypatch, recomposition):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding

    monkeypatch.setattr(Qwen2VLVisionRotaryEmbedding, "recomposition_frequencies", recomposition)
    from test_patch_qwen import features

    model, inputs = qwen2_vl()
    with torch.no_grad():
        expected = features(model, inputs)
    return model, inputs, expected, features


def test_planted_semantic_change_is_refused_with_the_measured_error(monkeypatch):
    model, inputs, expected, features = qwen2_vl_with(monkeypatch, swapped_recomposition)
    with pytest.raises(UnsupportedTransformersError, match="recomposition_frequencies"):
        vlmops.patch_model(copy.deepcopy(model))
    report = vlmops.patch_model(model, verify=True)
    [verification] = report.verifications
    where = (verification.family, verification.kind, verification.path)
    assert where == ("Qwen2-VL", "rope", "model.visual.rotary_pos_emb")
    assert not verification.agreed and verification.ratio > 10 and verification.error > 0
    [skip] = report.skipped
    assert (skip.family, skip.kind, skip.paths) == ("Qwen2-VL", "rope", ("model.visual.rotary_pos_emb",))
    assert "changed transformers.models.qwen2_vl" in skip.reason
    assert f"max abs error {verification.error:.3g}" in skip.reason
    # The rules whose code is verified are applied; the rotary module keeps transformers' (changed) code.
    assert {r.new for r in report.replacements} >= {"vlmops.nn.PatchEmbed", "vlmops.nn.PackedVisionAttention"}
    assert type(model.model.visual.rotary_pos_emb).__name__ == "Qwen2VLVisionRotaryEmbedding"
    with torch.no_grad():
        torch.testing.assert_close(features(model, inputs), expected, rtol=1e-5, atol=1e-5)
    assert "differs from transformers'" in str(report)


def test_planted_change_that_keeps_the_semantics_is_verified_and_applied(monkeypatch):
    model, inputs, expected, features = qwen2_vl_with(monkeypatch, same_recomposition)
    with pytest.raises(UnsupportedTransformersError, match="recomposition_frequencies"):
        vlmops.patch_model(copy.deepcopy(model))
    report = vlmops.patch_model(model, verify=True)
    [verification] = report.verifications
    assert verification.agreed and verification.ratio <= 1 and verification.kind == "rope"
    assert report.skipped == []
    assert "vlmops.nn.VisionRotaryEmbedding" in {r.new for r in report.replacements}
    with torch.no_grad():
        torch.testing.assert_close(features(model, inputs), expected, rtol=1e-5, atol=1e-5)


def gelu_mlp_forward(self, hidden_state):
    """PixtralMLP.forward with GELU for the gate: not what GatedMLP computes."""
    return self.down_proj(torch.nn.functional.gelu(self.gate_proj(hidden_state)) * self.up_proj(hidden_state))


def test_planted_change_in_another_family_is_refused(monkeypatch):
    from test_patch_pixtral import IMAGE_SIZES, pixels, tower
    from transformers.models.pixtral.modeling_pixtral import PixtralMLP

    monkeypatch.setattr(PixtralMLP, "forward", gelu_mlp_forward)
    model = tower()
    x = pixels()
    with torch.no_grad():
        expected = model(x, image_sizes=IMAGE_SIZES).last_hidden_state
    report = vlmops.patch_model(model, verify=True)
    assert [(v.kind, v.agreed) for v in report.verifications] == [("mlp", False)]
    assert [(s.kind, len(s.paths)) for s in report.skipped] == [("mlp", 2)]
    assert "vlmops.nn.GatedMLP" not in {r.new for r in report.replacements}
    assert {"vlmops.nn.RMSNorm", "vlmops.nn.PackedVisionAttention"} <= {r.new for r in report.replacements}
    with torch.no_grad():
        torch.testing.assert_close(model(x, image_sizes=IMAGE_SIZES).last_hidden_state, expected, rtol=1e-5, atol=1e-5)


def test_verify_reports_a_rule_that_cannot_run_on_the_changed_code(monkeypatch):
    """A planted change the replacement cannot even be built on (a renamed attribute) is a refusal with
    its error, not a crash."""
    from test_patch_pixel_shuffle import build, image_features
    from transformers.models.smolvlm.modeling_smolvlm import SmolVLMConnector

    real_init = SmolVLMConnector.__init__

    def renamed_init(self, config):
        real_init(self, config)
        self.factor = self.scale_factor
        del self.scale_factor

    def forward(self, image_hidden_states):
        return self.modality_projection(self.pixel_shuffle(image_hidden_states, self.factor))

    monkeypatch.setattr(SmolVLMConnector, "__init__", renamed_init)
    monkeypatch.setattr(SmolVLMConnector, "forward", forward)
    model, pixel_values, _ = build("SmolVLM")
    with torch.no_grad():
        expected = image_features(model, pixel_values)
    report = vlmops.patch_model(model, verify=True)
    [verification] = report.verifications
    assert not verification.agreed and verification.error is None and "AttributeError" in verification.detail
    assert report.replacements == [] and report.skipped[0].kind == "pixel_shuffle"
    with torch.no_grad():
        torch.testing.assert_close(image_features(model, pixel_values), expected)


def test_verify_changes_nothing_before_it_decides(monkeypatch):
    """The replacement is built on a structural copy that shares the weights: no parameter is copied
    and the model is untouched when every rule disagrees."""
    model, inputs, expected, features = qwen2_vl_with(monkeypatch, swapped_recomposition)
    monkeypatch.setattr(patch, "compare", lambda got, want: (1.0, 2.0, "forced"))
    monkeypatch.setitem(verified.FINGERPRINTS, "Qwen2-VL/attention", {})
    monkeypatch.setitem(verified.FINGERPRINTS, "Qwen2-VL/patch_embed", {})
    monkeypatch.setitem(verified.FINGERPRINTS, "Qwen2-VL/rope/text", {})
    params = {id(p) for p in model.parameters()}
    report = vlmops.patch_model(model, verify=True)
    assert report.replacements == [] and {v.kind for v in report.verifications} == {"rope", "attention", "patch_embed"}
    assert {id(p) for p in model.parameters()} == params
    assert not any(type(m).__module__.startswith("vlmops") for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(features(model, inputs), expected, rtol=0, atol=0)
    copied = patch.structural_copy(model.model.visual)
    assert {id(p) for p in copied.parameters()} <= params and copied is not model.model.visual


def test_verify_on_verified_code_is_the_usual_patch():
    """verify=True measures only rules whose code changed: on verified code it patches as verify=False."""
    model, _ = qwen2_vl()
    other = copy.deepcopy(model)
    report = vlmops.patch_model(model, verify=True)
    assert report.verifications == [] and report.skipped == []
    assert report.replacements == vlmops.patch_model(other).replacements
