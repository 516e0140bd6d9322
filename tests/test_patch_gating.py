"""patch_model never turns a working model into a failing one.

For every rule family, a tiny model whose configuration the vlmops ops (or modules) cannot take: the
rule is skipped, the report says which rule, where and why (the op's own message where the op
refused), and the model computes exactly what it computed before. Mixed cases: one rule skipped, the
others applied, parity kept. No rule replaces part of a module before all its checks passed. Every
rule asks the op before replacing. Missing transformers code is refused cleanly, naming the family
and the object, and never disturbs the patching of other families.

The head dim the attention ops cannot take is HEAD_DIM = 264 (a multiple of 8 above 256: outside
every head dim range the attention contracts take, including a widening to every head dim in
[1, 256]); each test first asks the op itself that it refuses it.
"""

import sys

import pytest
import torch
from conftest import RecordVlmopsCalls
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    InternVLConfig,
    InternVLForConditionalGeneration,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MllamaConfig,
    MllamaForConditionalGeneration,
    PixtralVisionConfig,
    PixtralVisionModel,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen3VLConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

import vlmops
import vlmops.transformers.patch as patch
from vlmops.nn import PackedVisionAttention
from vlmops.transformers import Skip, UnsupportedTransformersError

HEAD_DIM = 264


def op_message(op, *args):
    """The message of the ValueError / RuntimeError the raw op raises for these arguments, or None."""
    try:
        getattr(torch.ops.vlmops, op)(*args)
    except (ValueError, RuntimeError) as error:
        return str(error).split("\n")[0]
    return None


def varlen_message(heads, head_dim, kv_heads=None, dtype=torch.float32):
    q = torch.zeros(1, heads, head_dim, dtype=dtype)
    k = torch.zeros(1, kv_heads or heads, head_dim, dtype=dtype)
    cu = torch.tensor([0, 1], dtype=torch.int32)
    return op_message("varlen_attention", q, k, k.clone(), cu, cu, None, None, head_dim**-0.5)


def gated_message(heads, kv_heads, head_dim):
    q, k = torch.zeros(1, 1, heads, head_dim), torch.zeros(1, 1, kv_heads, head_dim)
    ranges = torch.zeros(1, 1, dtype=torch.int32)
    return op_message("gated_cross_attention", q, k, k.clone(), ranges, ranges, None, head_dim**-0.5)


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch):
    """Each test asks the ops afresh (a test that replaces what the ops answer must not leak it)."""
    monkeypatch.setattr(patch, "_PROBES", {})


def assert_only_skip(report, family, kind, paths, reason_part):
    assert report.skipped == [Skip(family, kind, tuple(paths), report.skipped[0].reason)], report
    assert reason_part in report.skipped[0].reason, report.skipped[0].reason
    assert "skipped" in str(report) and report.skipped[0].reason in str(report)


# Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision towers.

GRID = torch.tensor([[1, 8, 12], [1, 6, 10]])
PATCH_ROW = 3 * 2 * 14 * 14


def qwen_tower(family, width=HEAD_DIM, heads=1, **overrides):
    vision = dict(
        depth=2, hidden_size=width, num_heads=heads, spatial_merge_size=2, patch_size=14, temporal_patch_size=2
    )
    if family == "Qwen2-VL":
        config = Qwen2VLConfig(vision_config=dict(vision, embed_dim=width, hidden_size=32, mlp_ratio=1, **overrides))
        cls = Qwen2VisionTransformerPretrainedModel
    elif family == "Qwen2.5-VL":
        config = Qwen2_5_VLConfig(
            vision_config=dict(
                vision,
                intermediate_size=100,
                out_hidden_size=32,
                window_size=56,
                fullatt_block_indexes=[1],
                **overrides,
            )
        )
        cls = Qwen2_5_VisionTransformerPretrainedModel
    else:
        config = Qwen3VLConfig(
            vision_config=dict(
                vision,
                intermediate_size=64,
                out_hidden_size=32,
                num_position_embeddings=16,
                deepstack_visual_indexes=[0],
                **overrides,
            )
        )
        cls = Qwen3VLVisionModel
    torch.manual_seed(0)
    return cls._from_config(config.vision_config, attn_implementation="sdpa").eval()


def qwen_outputs(tower):
    torch.manual_seed(1)
    pixels = torch.randn(int(GRID.prod(-1).sum()), PATCH_ROW, dtype=tower.patch_embed.proj.weight.dtype)
    with torch.no_grad():
        out = tower(pixels, grid_thw=GRID)
    return out.last_hidden_state, out.pooler_output


def assert_exact(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def assert_close(got, expected):
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


QWEN = ["Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"]


@pytest.mark.parametrize("family", QWEN)
def test_qwen_attention_the_op_refuses_is_skipped_and_outputs_are_unchanged(family):
    message = varlen_message(1, HEAD_DIM)
    assert message is not None, f"varlen_attention takes head dim {HEAD_DIM}: choose another"
    tower = qwen_tower(family)
    expected = qwen_outputs(tower)
    report = vlmops.patch_model(tower, ops=["attention"])
    assert report.families == [family] and report.replacements == []
    assert_only_skip(report, family, "attention", [""], f"blocks.0.attn: {message}")
    assert "forward" not in vars(tower)
    assert not any(isinstance(block.attn, PackedVisionAttention) for block in tower.blocks)
    assert_exact(qwen_outputs(tower), expected)  # it ran before patching, it runs the same after


@pytest.mark.parametrize("family", QWEN)
def test_qwen_mixed_attention_skipped_the_other_rules_applied(family):
    tower = qwen_tower(family)
    expected = qwen_outputs(tower)
    report = vlmops.patch_model(tower)
    assert [(s.kind, s.paths) for s in report.skipped] == [("attention", ("",))]
    replaced = {r.new for r in report.replacements}
    assert {"vlmops.nn.PatchEmbed", "vlmops.nn.VisionRotaryEmbedding"} <= replaced
    assert "vlmops.nn.PackedVisionAttention" not in replaced
    with RecordVlmopsCalls() as recorder:
        got = qwen_outputs(tower)
    assert "vlmops::patch_embed" in recorder.calls and "vlmops::varlen_attention" not in recorder.calls
    assert_close(got, expected)
    # Patching again changes nothing and says the same.
    again = vlmops.patch_model(tower)
    assert again.replacements == [] and again.skipped == report.skipped


def test_qwen_tower_is_replaced_whole_or_not_at_all(monkeypatch):
    """The last block has an option vlmops' attention does not implement: no block is replaced."""
    built = []
    real = PackedVisionAttention.from_qwen
    monkeypatch.setattr(PackedVisionAttention, "from_qwen", lambda attn: built.append(attn) or real(attn))
    tower = qwen_tower("Qwen2.5-VL", width=64, heads=2)
    tower.blocks[1].attn.attention_dropout = 0.1
    expected = qwen_outputs(tower)
    report = vlmops.patch_model(tower, ops=["attention"])
    assert_only_skip(report, "Qwen2.5-VL", "attention", [""], "blocks.1.attn: attention dropout")
    assert built == [] and "forward" not in vars(tower)
    assert_exact(qwen_outputs(tower), expected)
    tower.blocks[1].attn.attention_dropout = 0.0  # without it, the same tower is patched
    assert len(vlmops.patch_model(tower, ops=["attention"]).replacements) == 3
    assert len(built) == 2


def test_qwen2_5_vl_mlp_with_another_activation_is_skipped():
    tower = qwen_tower("Qwen2.5-VL", width=64, heads=2, hidden_act="gelu")
    expected = qwen_outputs(tower)
    report = vlmops.patch_model(tower, ops=["mlp"])
    assert report.replacements == []
    assert_only_skip(report, "Qwen2.5-VL", "mlp", ["blocks.0.mlp", "blocks.1.mlp"], "act_fn must be SiLU")
    assert_exact(qwen_outputs(tower), expected)


def test_qwen2_5_vl_norm_eps_the_op_refuses_is_skipped():
    tower = qwen_tower("Qwen2.5-VL", width=64, heads=2)
    norms = [path for path, m in tower.named_modules() if type(m).__name__ == "Qwen2_5_VLRMSNorm"]
    for path in norms:
        tower.get_submodule(path).variance_epsilon = -1e-7
    message = op_message("rms_norm", torch.zeros(1, 64), torch.zeros(64), -1e-7)
    assert message is not None
    expected = qwen_outputs(tower)
    report = vlmops.patch_model(tower, ops=["norm"])
    assert report.replacements == []
    assert_only_skip(report, "Qwen2.5-VL", "norm", norms, message)
    assert_exact(qwen_outputs(tower), expected)


def test_qwen_patch_conv_with_groups_is_skipped():
    tower = qwen_tower("Qwen2-VL", width=96, heads=2)
    conv = tower.patch_embed.proj
    tower.patch_embed.proj = nn.Conv3d(3, 96, conv.kernel_size, stride=conv.stride, bias=False, groups=3)
    expected = qwen_outputs(tower)
    report = vlmops.patch_model(tower, ops=["patch_embed"])
    assert report.replacements == []
    assert_only_skip(report, "Qwen2-VL", "patch_embed", ["patch_embed"], "groups 3")
    assert_exact(qwen_outputs(tower), expected)


# Pixtral.


def pixtral(width=HEAD_DIM, heads=1, **overrides):
    config = dict(
        hidden_size=width,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        head_dim=width // heads,
        image_size=56,
        patch_size=14,
        **overrides,
    )
    torch.manual_seed(0)
    return PixtralVisionModel._from_config(PixtralVisionConfig(**config), attn_implementation="sdpa").eval()


def pixtral_outputs(tower):
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 56, 56, dtype=tower.patch_conv.weight.dtype)
    with torch.no_grad():
        return (tower(pixels, image_sizes=torch.tensor([[56, 56], [28, 42]])).last_hidden_state,)


def test_pixtral_attention_the_op_refuses_is_skipped():
    message = varlen_message(1, HEAD_DIM)
    assert message is not None
    tower = pixtral()
    expected = pixtral_outputs(tower)
    report = vlmops.patch_model(tower, ops=["attention"])
    assert report.replacements == []
    assert_only_skip(report, "Pixtral", "attention", [""], f"transformer.layers.0.attention: {message}")
    assert_exact(pixtral_outputs(tower), expected)


def test_pixtral_mixed_two_rules_skipped_the_others_applied():
    """Head dim 264 (attention skipped) and the config's default GELU MLP (mlp skipped); the patch conv,
    rotary embedding and norms are patched."""
    tower = pixtral()
    expected = pixtral_outputs(tower)
    report = vlmops.patch_model(tower)
    assert {s.kind: s.paths for s in report.skipped} == {
        "attention": ("",),
        "mlp": ("transformer.layers.0.feed_forward", "transformer.layers.1.feed_forward"),
    }
    assert {r.new for r in report.replacements} == {
        "vlmops.nn.PatchEmbed",
        "vlmops.nn.VisionRotaryEmbedding",
        "vlmops.nn.RMSNorm",
    }
    with RecordVlmopsCalls() as recorder:
        got = pixtral_outputs(tower)
    assert {"vlmops::patch_embed", "vlmops::rms_norm"} <= set(recorder.calls)
    assert not {"vlmops::varlen_attention", "vlmops::silu_mul"} & set(recorder.calls)
    assert_close(got, expected)


def test_pixtral_tower_is_replaced_whole_or_not_at_all():
    tower = pixtral(width=64, heads=2, hidden_act="silu")
    tower.transformer.layers[1].attention.dropout = 0.1
    expected = pixtral_outputs(tower)
    report = vlmops.patch_model(tower, ops=["attention"])
    assert_only_skip(report, "Pixtral", "attention", [""], "transformer.layers.1.attention: attention dropout")
    assert type(tower.transformer.layers[0].attention).__name__ == "PixtralAttention"
    assert_exact(pixtral_outputs(tower), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_probes_use_the_model_configuration_and_dtype(monkeypatch, dtype):
    asked = []
    real = patch._probe
    monkeypatch.setattr(patch, "_probe", lambda op, args: asked.append((op, args)) or real(op, args))
    tower = pixtral(width=64, heads=2, hidden_act="silu").to(dtype)
    report = vlmops.patch_model(tower)
    assert report.skipped == [] and report.replacements
    ops = {op: args for op, args in asked}
    assert set(ops) == {"patch_embed", "rope", "varlen_attention", "rms_norm", "silu_mul"}
    q = ops["varlen_attention"][0]
    assert q == patch.Zeros((1, 2, 32), dtype)
    assert ops["rope"][0] == patch.Zeros((1, 1, 2, 32), dtype)
    assert ops["rms_norm"][0] == patch.Zeros((1, 64), dtype)
    assert ops["silu_mul"][0] == patch.Zeros((1, 64), dtype)
    assert ops["patch_embed"][1] == patch.Zeros((64, 3, 14, 14), dtype)
    # One question per (op, configuration): the two layers and four norms share theirs.
    assert len(asked) == len(ops)


# CLIP / SigLIP towers and LLaVA.

TOWERS = {"CLIP": (CLIPVisionConfig, CLIPVisionModel), "SigLIP": (SiglipVisionConfig, SiglipVisionModel)}
CLIP_VISION = dict(num_hidden_layers=2, intermediate_size=64, image_size=56, patch_size=14)


def clip_tower(family, width=HEAD_DIM, heads=1):
    config_cls, model_cls = TOWERS[family]
    torch.manual_seed(0)
    return model_cls(config_cls(hidden_size=width, num_attention_heads=heads, **CLIP_VISION)).eval()


def clip_outputs(tower):
    torch.manual_seed(1)
    with torch.no_grad():
        return (tower(torch.randn(2, 3, 56, 56)).last_hidden_state,)


@pytest.mark.parametrize("family", list(TOWERS))
def test_clip_attention_the_op_refuses_is_skipped(family):
    message = varlen_message(1, HEAD_DIM)
    assert message is not None
    tower = clip_tower(family)
    expected = clip_outputs(tower)
    report = vlmops.patch_model(tower, ops=["attention"])
    assert report.replacements == []
    assert_only_skip(report, family, "attention", [""], f"encoder.layers.0.self_attn: {message}")
    assert tower.config._attn_implementation == "sdpa"
    assert_exact(clip_outputs(tower), expected)
    mixed = vlmops.patch_model(tower)  # the embeddings are patched, the attention still skipped
    assert [r.path for r in mixed.replacements] == ["embeddings"] and mixed.skipped == report.skipped
    assert_close(clip_outputs(tower), expected)


@pytest.mark.parametrize("family", list(TOWERS))
def test_clip_patch_conv_with_groups_is_skipped(family):
    tower = clip_tower(family, width=66, heads=2)
    conv = tower.embeddings.patch_embedding
    tower.embeddings.patch_embedding = nn.Conv2d(3, 66, 14, stride=14, bias=conv.bias is not None, groups=3)
    expected = clip_outputs(tower)
    report = vlmops.patch_model(tower, ops=["patch_embed"])
    assert report.replacements == []
    assert_only_skip(report, family, "patch_embed", ["embeddings"], "groups 3")
    assert_exact(clip_outputs(tower), expected)


def test_llava_attention_skipped_is_reported_once_for_llava():
    """The LLaVA rules keep the tower they skipped: the CLIP tower rules do not report it again."""
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=dict(CLIP_VISION, hidden_size=HEAD_DIM, num_attention_heads=1, model_type="clip_vision_model"),
        text_config=dict(
            model_type="llama",
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            vocab_size=100,
        ),
        image_token_id=99,
    )
    model = LlavaForConditionalGeneration(config).eval()
    pixels = torch.randn(1, 3, 56, 56)
    input_ids = torch.tensor([[1, 2] + [99] * 16 + [3]])
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixels).logits
    report = vlmops.patch_model(model)
    assert report.families == ["LLaVA"]
    assert [r.path for r in report.replacements] == ["model.vision_tower.embeddings"]
    assert_only_skip(report, "LLaVA", "attention", ["model"], "model.vision_tower.encoder.layers.0.self_attn")
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=input_ids, pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-5
        )


# Mllama.


def mllama(text_width=2 * HEAD_DIM):
    torch.manual_seed(0)
    vision = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_global_layers=1,
        attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=14,
        max_num_tiles=4,
        intermediate_layers_indices=[0],
        vision_output_dim=32,
    )
    text = dict(
        vocab_size=64,
        hidden_size=text_width,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        cross_attention_layers=[1],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = MllamaForConditionalGeneration(
        MllamaConfig(vision_config=vision, text_config=text, image_token_index=63)
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.8)
    return model


def mllama_logits(model):
    torch.manual_seed(1)
    cross_attention_mask = torch.zeros(1, 6, 1, 4, dtype=torch.int64)
    cross_attention_mask[0, 2:, 0, :2] = 1  # rows 0-1: text before the image; the image has [1, 2] tiles
    inputs = dict(
        input_ids=torch.randint(3, 60, (1, 6)),
        pixel_values=torch.randn(1, 1, 4, 3, 28, 28),
        aspect_ratio_ids=torch.tensor([[2]]),
        aspect_ratio_mask=torch.tensor([[[1, 1, 0, 0]]]),
        cross_attention_mask=cross_attention_mask,
    )
    with torch.no_grad():
        return (model(**inputs).logits,)


CROSS = "model.language_model.layers.1.cross_attn"


def assert_mllama_skips(report, reason_part):
    """The layer rule skips the cross-attention layer, and the model rule, whose ranges only vlmops'
    layers take, skips the model for the same reason, naming the layer."""
    layer, model = report.skipped
    assert (layer.family, layer.kind, layer.paths) == ("Mllama", "cross_attention", (CROSS,)), report
    assert (model.family, model.kind, model.paths) == ("Mllama", "cross_attention_mask", ("model",)), report
    assert reason_part in layer.reason and model.reason == f"{CROSS}: {layer.reason}", report


def test_mllama_cross_attention_the_op_refuses_is_skipped():
    message = gated_message(2, 1, HEAD_DIM)
    assert message is not None
    model = mllama()
    expected = mllama_logits(model)
    report = vlmops.patch_model(model)
    assert report.families == ["Mllama"] and report.replacements == []
    assert_mllama_skips(report, message)
    assert_exact(mllama_logits(model), expected)


@pytest.mark.parametrize(
    "option, value, reason",
    [
        ("scaling", 0.5, "softmax scale 0.5 is not head_dim ** -0.5"),
        ("dropout", 0.1, "attention dropout (dropout=0.1)"),
    ],
)
def test_mllama_cross_attention_options_are_checked(option, value, reason):
    model = mllama(text_width=64)
    setattr(model.get_submodule(CROSS), option, value)
    expected = mllama_logits(model)
    report = vlmops.patch_model(model)
    assert_mllama_skips(report, reason)
    assert_exact(mllama_logits(model), expected)
    setattr(model.get_submodule(CROSS), option, {"scaling": 32**-0.5, "dropout": 0.0}[option])
    assert [r.path for r in vlmops.patch_model(model).replacements] == [CROSS, "model"]


# Pixel shuffle: InternVL.


def internvl():
    torch.manual_seed(0)
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=56,
            patch_size=14,
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            vocab_size=100,
        ),
        image_token_id=99,
        image_seq_length=4,
    )
    return InternVLForConditionalGeneration(config).eval()


def internvl_features(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return (model.model.get_image_features(torch.randn(2, 3, 56, 56)).pooler_output,)


def test_internvl_layer_norm_eps_the_op_refuses_is_skipped():
    model = internvl()
    model.model.multi_modal_projector.layer_norm.eps = -1e-7  # F.layer_norm takes it, the fused op does not
    message = op_message(
        "pixel_shuffle_layer_norm", torch.zeros(1, 2, 2, 32), 2, torch.zeros(128), torch.zeros(128), -1e-7
    )
    assert message is not None
    expected = internvl_features(model)
    report = vlmops.patch_model(model)
    assert report.replacements == []
    assert_only_skip(report, "InternVL", "pixel_shuffle", ["model"], message)
    assert "pixel_shuffle" not in vars(model.model)
    assert_exact(internvl_features(model), expected)


# Every rule asks the op before it replaces anything.


def smolvlm():
    torch.manual_seed(0)
    config = SmolVLMConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=56,
            patch_size=14,
        ),
        text_config=dict(
            model_type="llama",
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            vocab_size=100,
        ),
        scale_factor=2,
        image_token_id=99,
    )
    return SmolVLMForConditionalGeneration(config).eval()


def smolvlm_features(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return tuple(model.model.get_image_features(torch.randn(1, 2, 3, 56, 56)).pooler_output)


CASES = {
    "Qwen2.5-VL": (lambda: qwen_tower("Qwen2.5-VL", width=64, heads=2), qwen_outputs, 5),
    "Pixtral": (lambda: pixtral(width=64, heads=2, hidden_act="silu"), pixtral_outputs, 5),
    "SigLIP": (lambda: clip_tower("SigLIP", width=64, heads=2), clip_outputs, 2),
    "Mllama": (lambda: mllama(text_width=64), mllama_logits, 2),
    "InternVL": (internvl, internvl_features, 1),
    "SmolVLM": (smolvlm, smolvlm_features, 1),
}


@pytest.mark.parametrize("family", list(CASES))
def test_every_rule_obeys_the_op(monkeypatch, family):
    """Where every op refuses, no rule replaces anything: each one asked before replacing."""
    build, outputs, rules = CASES[family]
    model = build()
    expected = outputs(model)
    monkeypatch.setattr(patch, "_probe", lambda op, args: f"vlmops.{op}: refused")
    report = vlmops.patch_model(model)
    assert report.replacements == []
    assert len(report.skipped) == rules and all(s.family == family for s in report.skipped)
    assert all(s.reason.split(": ")[-1] == "refused" for s in report.skipped), report
    assert_exact(outputs(model), expected)


def test_op_refusal_asks_the_op_once_per_configuration(monkeypatch):
    asked = []
    real = patch._probe
    monkeypatch.setattr(patch, "_probe", lambda op, args: asked.append(args) or real(op, args))
    cu = patch.CuSeqlens(1)

    def ask(head_dim, dtype=torch.float32):
        q = patch.Zeros((1, 2, head_dim), dtype)
        return patch.op_refusal("varlen_attention", q, q, q, cu, cu, None, None, 0.125)

    assert ask(64) is None and ask(64) is None
    assert ask(HEAD_DIM) == varlen_message(2, HEAD_DIM) and ask(HEAD_DIM) == varlen_message(2, HEAD_DIM)
    assert ask(64, torch.bfloat16) is None
    assert len(asked) == 3


def test_op_refusal_is_not_a_way_to_hide_a_wrong_argument():
    q = patch.Zeros((1, 2, 64), torch.float32)
    with pytest.raises(TypeError, match="softmax_scale"):
        patch.op_refusal("varlen_attention", q, q, q, patch.CuSeqlens(1), patch.CuSeqlens(1), None, None, "0.1")


# Missing transformers code: a clean refusal of that family only.


def test_missing_transformers_class_refuses_its_family_only(monkeypatch):
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    qwen = qwen_tower("Qwen2-VL", width=64, heads=2)
    monkeypatch.delattr(modeling_qwen2_vl, "Qwen2VLVisionRotaryEmbedding")
    other = pixtral(width=64, heads=2)
    assert vlmops.patch_model(other).families == ["Pixtral"]
    with pytest.raises(
        UnsupportedTransformersError,
        match=r"has no transformers\.models\.qwen2_vl\.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding, "
        r"which the Qwen2-VL patch \(rope\)",
    ):
        vlmops.patch_model(qwen)
    assert type(qwen.patch_embed).__name__ == "PatchEmbed" and "forward" not in vars(qwen)
    assert vlmops.patch_model(qwen, ops=["patch_embed"]).replacements  # the kinds that need no such class


def test_missing_guarded_function_refuses_its_family_only(monkeypatch):
    import transformers.vision_utils

    monkeypatch.delattr(transformers.vision_utils, "get_vision_window_index")
    tower = qwen_tower("Qwen2.5-VL", width=64, heads=2)
    with pytest.raises(UnsupportedTransformersError, match=r"vision_utils:get_vision_window_index, which the Qwen2\.5"):
        vlmops.patch_model(tower)
    assert type(tower.patch_embed).__name__ == "Qwen2_5_VisionPatchEmbed"
    assert vlmops.patch_model(qwen_tower("Qwen2-VL", width=64, heads=2)).families == ["Qwen2-VL"]


def test_missing_transformers_helper_refuses_the_towers_that_call_it(monkeypatch):
    import transformers.utils.output_capturing as output_capturing

    from vlmops.transformers import pixtral_rules, qwen_rules

    # The tower forwards are built on first use: none is built yet here.
    qwen_rules._forward.cache_clear()
    pixtral_rules._forward.cache_clear()
    monkeypatch.delattr(output_capturing, "capture_outputs")
    assert vlmops.patch_model(clip_tower("SigLIP", width=64, heads=2)).families == ["SigLIP"]
    tower = pixtral(width=64, heads=2)
    with pytest.raises(UnsupportedTransformersError, match="output_capturing:capture_outputs, which the Pixtral"):
        vlmops.patch_model(tower)
    assert vlmops.patch_model(tower, ops=["norm"]).replacements


def test_missing_transformers_module_leaves_other_families_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers.models.qwen3_vl.modeling_qwen3_vl", None)
    report = vlmops.patch_model(qwen_tower("Qwen2.5-VL", width=64, heads=2))
    assert report.families == ["Qwen2.5-VL"] and report.skipped == []
