"""Patch rule of Llama 3.2 Vision (transformers' Mllama): its text cross-attention layers run
``vlmops.gated_cross_attention`` on key ranges read from the mask transformers builds."""

from vlmops.nn.gated_cross_attention import MllamaCrossAttention
from vlmops.transformers.patch import Replacement, Rule, set_submodule

MLLAMA = "transformers.models.mllama.modeling_mllama"


def _tokens_per_tile(root) -> int:
    """The vision tower's tokens per tile (its ``num_patches``), so the ranges are read from one mask
    entry per tile; 1 (every entry) when the patched module holds no vision tower."""
    for module in root.modules():
        if type(module).__name__ == "MllamaVisionModel":
            return module.num_patches
    return 1


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
    ),
]
