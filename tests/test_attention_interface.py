"""attn_implementation="vlmops": transformers' AttentionInterface running vlmops.varlen_attention.

Compared with transformers' own sdpa implementation (function and whole models); refusals of what
varlen attention cannot express (masks, causal, dropout); flash-style cu_seq_lens kwargs; no host
synchronization and no copies of the packed views.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    AutoModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipTextConfig,
    SiglipTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import vlmops
from vlmops.transformers.attention_interface import vlmops_attention_forward

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


@pytest.fixture(autouse=True, scope="module")
def registered():
    assert vlmops.register_attention() == "vlmops"
    assert vlmops.register_attention() == "vlmops"  # idempotent


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(func.name())
        return func(*args, **(kwargs or {}))


class Attention(torch.nn.Module):
    """The attributes transformers' attention functions read from the calling module."""

    def __init__(self, groups=1, is_causal=False):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = is_causal


def projections(batch, length, heads, kv_heads, head_dim, dtype=torch.float32):
    """q, k, v as the models hand them over: [B, H, L, D] transposes of [B, L, H, D] projections."""
    q = torch.randn(batch, length, heads, head_dim, dtype=dtype).transpose(1, 2)
    k = torch.randn(batch, length, kv_heads, head_dim, dtype=dtype).transpose(1, 2)
    v = torch.randn(batch, length, kv_heads, head_dim, dtype=dtype).transpose(1, 2)
    return q, k, v


@pytest.mark.parametrize(
    "batch,length,heads,kv_heads,head_dim", [(3, 17, 4, 4, 32), (2, 9, 4, 2, 64), (1, 1, 2, 1, 40)]
)
def test_matches_transformers_sdpa(batch, length, heads, kv_heads, head_dim):
    torch.manual_seed(0)
    q, k, v = projections(batch, length, heads, kv_heads, head_dim, torch.float64)
    module = Attention(groups=heads // kv_heads)
    expected, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.3)
    got, weights = vlmops_attention_forward(module, q, k, v, None, scaling=0.3)
    assert weights is None and got.shape == (batch, length, heads, head_dim)
    torch.testing.assert_close(got, expected)


def test_empty_sequences():
    # transformers' sdpa cannot reshape an empty output; varlen attention returns one.
    q, k, v = projections(2, 0, 2, 2, 32)
    out, _ = vlmops_attention_forward(Attention(), q, k, v, None)
    assert out.shape == (2, 0, 2, 32)


def test_packed_views_are_not_copied():
    q, k, v = projections(2, 8, 2, 2, 32)
    with RecordOps() as recorder:
        vlmops_attention_forward(Attention(), q, k, v, None)
    assert not {"aten::clone", "aten::copy_", "aten::_to_copy", "aten::contiguous"} & set(recorder.calls), (
        recorder.calls
    )


def test_no_host_synchronization():
    # On meta tensors every value is unknown: an .item()/.tolist() would fail, and any would show up
    # as aten::_local_scalar_dense.
    q, k, v = (t.to("meta") for t in projections(2, 8, 2, 2, 32))
    with RecordOps() as recorder:
        out, _ = vlmops_attention_forward(Attention(), q, k, v, None)
    assert out.shape == (2, 8, 2, 32) and "aten::_local_scalar_dense" not in recorder.calls


def test_flash_style_cu_seq_lens_are_honored():
    torch.manual_seed(0)
    lengths = [5, 0, 11, 3]
    cu = torch.tensor([0, 5, 5, 16, 19], dtype=torch.int32)
    q, k, v = projections(1, sum(lengths), 2, 2, 32, torch.float64)
    got, _ = vlmops_attention_forward(
        Attention(),
        q,
        k,
        v,
        None,
        cu_seq_lens_q=cu,
        cu_seq_lens_k=cu,
        max_length_q=11,
        max_length_k=11,
        is_causal=False,
    )
    # Per segment, transformers' sdpa on that segment alone (as Qwen-VL's vision attention does).
    pieces = [
        sdpa_attention_forward(Attention(), *(t[:, :, s:e] for t in (q, k, v)), None)[0]
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())
        if e > s
    ]
    torch.testing.assert_close(got, torch.cat(pieces, dim=1))


def test_refusals():
    q, k, v = projections(2, 8, 2, 2, 32)
    with pytest.raises(ValueError, match="is causal"):
        vlmops_attention_forward(Attention(is_causal=True), q, k, v, None)
    with pytest.raises(ValueError, match="is causal"):
        vlmops_attention_forward(Attention(), q, k, v, None, is_causal=True)
    with pytest.raises(ValueError, match="attention mask of shape"):
        vlmops_attention_forward(Attention(), q, k, v, torch.ones(2, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout"):
        vlmops_attention_forward(Attention(), q, k, v, None, dropout=0.1)
    with pytest.raises(ValueError, match="softcap"):
        vlmops_attention_forward(Attention(), q, k, v, None, softcap=30.0)
    with pytest.raises(ValueError, match="batch 1"):
        vlmops_attention_forward(Attention(), q, k, v, None, cu_seq_lens_q=torch.tensor([0, 8], dtype=torch.int32))


@pytest.mark.parametrize("family", ["CLIP", "SigLIP"])
@pytest.mark.parametrize("factory", ["_from_config", "AutoModel.from_config"])
def test_from_config_matches_sdpa(family, factory):
    config_cls, model_cls = {
        "CLIP": (CLIPVisionConfig, CLIPVisionModel),
        "SigLIP": (SiglipVisionConfig, SiglipVisionModel),
    }[family]
    build = model_cls._from_config if factory == "_from_config" else AutoModel.from_config
    torch.manual_seed(0)
    reference = build(config_cls(**VISION), attn_implementation="sdpa").eval()
    model = build(config_cls(**VISION), attn_implementation="vlmops").eval()
    model.load_state_dict(reference.state_dict())
    assert model.config._attn_implementation == "vlmops"
    pixel_values = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        expected = reference(pixel_values)
        with RecordOps() as recorder:
            got = model(pixel_values)
    assert recorder.calls.count("vlmops::varlen_attention") == VISION["num_hidden_layers"]
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, rtol=1e-5, atol=1e-5)


def test_llava_vision_config_only():
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=dict(VISION, model_type="clip_vision_model"),
        text_config=dict(TEXT, model_type="llama"),
        image_token_id=99,
    )
    reference = LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
    model = LlavaForConditionalGeneration._from_config(
        config, attn_implementation={"vision_config": "vlmops", "text_config": "sdpa"}
    ).eval()
    model.load_state_dict(reference.state_dict())
    assert model.model.vision_tower.config._attn_implementation == "vlmops"
    inputs = dict(input_ids=torch.tensor([[1] + [99] * 16 + [2]]), pixel_values=torch.randn(1, 3, 56, 56))
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, rtol=1e-5, atol=1e-5)
    # The whole model on "vlmops" reaches the causal language model: refused, not computed without its mask.
    whole = LlavaForConditionalGeneration._from_config(config, attn_implementation="vlmops").eval()
    with pytest.raises(ValueError, match="is causal"), torch.no_grad():
        whole(**inputs)


def test_padding_mask_is_refused_not_dropped():
    # SigLIP's text encoder is bidirectional; transformers builds its padding mask for "vlmops" through
    # the registered mask interface and skips it only when every token is visible.
    torch.manual_seed(0)
    config = SiglipTextConfig(**{k: v for k, v in TEXT.items() if k != "num_key_value_heads"})
    reference = SiglipTextModel._from_config(config, attn_implementation="sdpa").eval()
    model = SiglipTextModel._from_config(config, attn_implementation="vlmops").eval()
    model.load_state_dict(reference.state_dict())
    input_ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        full = torch.ones_like(input_ids)
        torch.testing.assert_close(
            model(input_ids, attention_mask=full).last_hidden_state,
            reference(input_ids, attention_mask=full).last_hidden_state,
            rtol=1e-5,
            atol=1e-5,
        )
        with pytest.raises(ValueError, match="attention mask of shape"):
            model(input_ids, attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))


def test_training_dropout_is_refused():
    model = CLIPVisionModel._from_config(
        CLIPVisionConfig(**VISION, attention_dropout=0.1), attn_implementation="vlmops"
    ).train()
    with pytest.raises(ValueError, match="dropout"):
        model(torch.randn(1, 3, 56, 56))
    model.eval()(torch.randn(1, 3, 56, 56))


def test_backward_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = (t.requires_grad_() for t in projections(2, 6, 2, 2, 32, torch.float64))
    out, _ = vlmops_attention_forward(Attention(), q, k, v, None)
    expected, _ = sdpa_attention_forward(Attention(), q, k, v, None)
    grad = torch.randn_like(out)
    for g, e in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(expected, (q, k, v), grad)):
        torch.testing.assert_close(g, e)


def test_qwen2_vl_vision_tower_runs_on_vlmops():
    # Not a flash implementation by name, so Qwen2-VL's vision attention calls it once per frame.
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    config = Qwen2VLVisionConfig(depth=2, embed_dim=64, hidden_size=48, num_heads=2, mlp_ratio=2)
    torch.manual_seed(0)
    reference = Qwen2VisionTransformerPretrainedModel._from_config(config, attn_implementation="sdpa").eval()
    model = Qwen2VisionTransformerPretrainedModel._from_config(config, attn_implementation="vlmops").eval()
    model.load_state_dict(reference.state_dict())
    grid_thw = torch.tensor([[1, 4, 6], [2, 2, 4]])
    pixel_values = torch.randn(int(grid_thw.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        expected = reference(pixel_values, grid_thw=grid_thw).last_hidden_state
        with RecordOps() as recorder:
            got = model(pixel_values, grid_thw=grid_thw).last_hidden_state
    assert recorder.calls.count("vlmops::varlen_attention") == config.depth * int(grid_thw[:, 0].sum())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
