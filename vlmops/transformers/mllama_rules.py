"""Patch rule of Llama 3.2 Vision (transformers' Mllama): its text cross-attention layers run
``vlmops.gated_cross_attention`` on key ranges read from the mask transformers builds, where the op
takes their heads, key/value heads, head dim and dtype, and they have no dropout and transformers'
softmax scale ``head_dim ** -0.5`` (the one ``vlmops.nn.MllamaCrossAttention`` uses)."""

import torch

from vlmops.nn.gated_cross_attention import MllamaCrossAttention
from vlmops.transformers.patch import Replacement, Rule, Zeros, attention_options_refusal, op_refusal, set_submodule

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
    projections = ((attn.q_proj, attn.num_heads), (attn.k_proj, attn.num_key_value_heads),
                   (attn.v_proj, attn.num_key_value_heads))
    q, k, v = (Zeros((1, 1, heads, D), projection.weight.dtype) for projection, heads in projections)
    ranges = Zeros((1, 1), torch.int32)
    return op_refusal("gated_cross_attention", q, k, v, ranges, ranges, None, D**-0.5)


def _patch_cross_attention(root, attn, path):
    set_submodule(root, path, MllamaCrossAttention.from_mllama(attn, tokens_per_tile=_tokens_per_tile(root)))
    return [Replacement(path, type(attn).__name__, "vlmops.nn.MllamaCrossAttention")]


RULES = [
    Rule(
        family="Mllama",
        kind="cross_attention",
        target=f"{MLLAMA}:MllamaTextCrossAttention",
        # sha256 of the source in transformers 5.24.0 (see vlmops.transformers.patch.check_guarded):
        # the replaced forward, the layer that calls it (row mask placement), the mask it reads.
        guarded={
            f"{MLLAMA}:MllamaTextCrossAttention.forward": "a088bfefcf156b981599a6ed630c6054066516d7d6a8d8f6a5ff819bfee034d0",
            f"{MLLAMA}:MllamaCrossAttentionDecoderLayer.forward": "6da2fb91af9d4aaa4c8292660169d2d18d595dc817ff784247db076cc0807723",
            f"{MLLAMA}:_prepare_cross_attention_mask": "300fa05762c62044bda8ba08278368cad461f8d609917c5608ccfb32e3b37e88",
            f"{MLLAMA}:MllamaModel.forward": "d28fe843d788870606338fa51f21db941e4d3655a6f548682c9695bd9d5d17cd",
        },
        apply=_patch_cross_attention,
        patched=lambda module: isinstance(module, MllamaCrossAttention),
        replaces_matched=True,
        check=_cross_attention_refusal,
    ),
]
