"""Patch rule of Llama 3.2 Vision (transformers' Mllama): its text cross-attention layers run
``vlmops.gated_cross_attention`` on key ranges read from the mask transformers builds, where the op
takes their heads, key/value heads, head dim and dtype, and they have no dropout and transformers'
softmax scale ``head_dim ** -0.5`` (the one ``vlmops.nn.MllamaCrossAttention`` uses)."""

import inspect

import torch

from vlmops.nn.gated_cross_attention import MllamaCrossAttention
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    Sample,
    Zeros,
    attention_options_refusal,
    op_refusal,
    set_submodule,
)

MLLAMA = "transformers.models.mllama.modeling_mllama"


def _tokens_per_tile(root) -> int:
    """The vision tower's tokens per tile (its ``num_patches``), so the ranges are read from one mask
    entry per tile; 1 (every entry) when the patched module holds no vision tower."""
    for module in root.modules():
        if type(module).__name__ == "MllamaVisionModel":
            return module.num_patches
    return 1


def _cross_attention_refusal(root, attn, path):
    """Options, then gated_cross_attention on one text token attending to one image token:
    q ``[1, 1, H, D]``, k/v ``[1, 1, Hk, D]`` in the projections' dtypes, no gate."""
    reason = attention_options_refusal(attn, "dropout")
    if reason:
        return reason
    D = attn.head_dim
    if attn.scaling != D**-0.5:
        return f"softmax scale {attn.scaling} is not head_dim ** -0.5 = {D**-0.5}, the scale MllamaCrossAttention uses"
    projections = (
        (attn.q_proj, attn.num_heads),
        (attn.k_proj, attn.num_key_value_heads),
        (attn.v_proj, attn.num_key_value_heads),
    )
    q, k, v = (Zeros((1, 1, heads, D), projection.weight.dtype) for projection, heads in projections)
    ranges = Zeros((1, 1), torch.int32)
    return op_refusal("gated_cross_attention", q, k, v, ranges, ranges, None, D**-0.5)


def _patch_cross_attention(root, attn, path):
    set_submodule(root, path, MllamaCrossAttention.from_mllama(attn, tokens_per_tile=_tokens_per_tile(root)))
    return [Replacement(path, type(attn).__name__, "vlmops.nn.MllamaCrossAttention")]


def _cross_attention_sample(root, attn, path):
    """verify=True on the module: 3 text rows attending to 4 image tokens (cross_attention_states in the
    model's width) through an additive mask of transformers' form (row 0 sees every token, row 1 the
    first two, row 2 the last two), with a fresh cache; then one decode row that reads the keys and
    values back from that cache."""
    from transformers.cache_utils import DynamicCache

    weight = attn.q_proj.weight
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(weight.device, weight.dtype)

    width, image_width = attn.q_proj.in_features, attn.k_proj.in_features
    hidden, states, step = randn(1, 3, width), randn(1, 4, image_width), randn(1, 1, width)
    visible = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool, device=weight.device)
    mask = torch.zeros(1, 1, 3, 4, dtype=weight.dtype, device=weight.device)
    mask = mask.masked_fill(~visible, torch.finfo(weight.dtype).min)
    # The cache's keyword in the installed transformers' signature ("cache", earlier "past_key_values").
    name = "cache" if "cache" in inspect.signature(type(attn).forward).parameters else "past_key_values"

    def run(module):
        cache = {name: DynamicCache()}
        prefill = module(
            hidden_states=hidden, cross_attention_states=states, attention_mask=mask, use_cache=True, **cache
        )[0]
        decode = module(
            hidden_states=step, cross_attention_states=None, attention_mask=mask[:, :, :1], use_cache=True, **cache
        )[0]
        return prefill, decode

    return Sample(path, run, "3 text rows and 4 image tokens with a cache, then one decode row")


RULES = [
    Rule(
        family="Mllama",
        kind="cross_attention",
        target=f"{MLLAMA}:MllamaTextCrossAttention",
        # The replaced forward, the layer that calls it (row mask placement), the mask it reads.
        guarded=(
            f"{MLLAMA}:MllamaTextCrossAttention.forward",
            f"{MLLAMA}:MllamaCrossAttentionDecoderLayer.forward",
            f"{MLLAMA}:_prepare_cross_attention_mask",
            f"{MLLAMA}:MllamaModel.forward",
        ),
        apply=_patch_cross_attention,
        patched=lambda module: isinstance(module, MllamaCrossAttention),
        replaces_matched=True,
        check=_cross_attention_refusal,
        sample=_cross_attention_sample,
    ),
]
