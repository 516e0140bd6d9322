"""Patch rules of the Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision towers.

- "patch_embed": the tower's Conv3d patch embedding -> ``vlmops.nn.PatchEmbed`` (one GEMM), where the
  conv is a patch embedding (kernel == stride, no padding, dilation 1, groups 1) and ``patch_embed``
  takes its weight.
- "rope": the tower's 2D rotary module -> ``vlmops.nn.VisionRotaryEmbedding``, where its convention
  is one vlmops implements (no attention scaling) and ``rope`` takes the tower's heads, head dim and
  dtype (the patched attention rotates with it).
- "attention": every block's attention -> ``vlmops.nn.PackedVisionAttention``, and the tower's
  forward -> one that builds the packed metadata once per forward on the device (RoPE positions,
  per-frame cu_seqlens, Qwen2.5-VL's window permutation and window cu_seqlens, no ``.tolist()``) and
  passes the blocks a ``VisionRope`` (when "rope" is patched too) instead of cos/sin tables; where
  ``varlen_attention`` takes every block's heads, head dim, dtype and scale, and no block has
  dropout. All blocks or none: the tower's forward serves the packed blocks only.
- Qwen2.5-VL only: "norm": every ``Qwen2_5_VLRMSNorm`` (vision blocks, merger, language model) ->
  ``vlmops.nn.RMSNorm``; "mlp": the vision blocks' SiLU ``Qwen2_5_VLMLP`` -> ``vlmops.nn.GatedMLP``
  (see ``vlmops.transformers.norm_mlp_rules``).
"""

import functools
import types

from vlmops.nn.attention import PackedVisionAttention, vision_cu_seqlens
from vlmops.nn.patch_embed import PatchEmbed
from vlmops.nn.rope import VisionRotaryEmbedding
from vlmops.models.qwen_vl import qwen2_5_vl_window_index, vision_rope_positions
from vlmops.transformers.norm_mlp_rules import norm_mlp_rules
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    attention_options_refusal,
    build_refusal,
    heads_of,
    parent_of,
    patch_conv_refusal,
    replace_module,
    rope_refusal,
    varlen_refusal,
)

QWEN2 = "transformers.models.qwen2_vl.modeling_qwen2_vl"
QWEN2_5 = "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl"
QWEN3 = "transformers.models.qwen3_vl.modeling_qwen3_vl"
VISION_UTILS = "transformers.vision_utils"


def _position_embeddings(tower, hidden_states, positions):
    """A VisionRope for the patched attention when the rotary module is vlmops', else transformers' cos/sin."""
    if isinstance(tower.rotary_pos_emb, VisionRotaryEmbedding):
        return tower.rotary_pos_emb.rope(positions)
    return tower.rotary_pos_emb(hidden_states, positions)


def _packed_metadata(tower, hidden_states, grid_thw):
    """(positions [N, 2], per-frame cu_seqlens) of a packed Qwen vision sequence, built once per forward.

    The builders skip their value checks (reading grid_thw on the host): the attention op checks the
    segments it is given against the token count, on CPU eagerly."""
    num_tokens = hidden_states.shape[0]
    m = tower.spatial_merge_size
    positions = vision_rope_positions(grid_thw, m, num_tokens=num_tokens, check_values=False)
    return positions, vision_cu_seqlens(grid_thw, num_tokens, min_frame_tokens=m * m)


def _qwen2_vl_forward(self, hidden_states, grid_thw, **kwargs):
    """Qwen2VisionTransformerPretrainedModel.forward on vlmops ops (same outputs)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    hidden_states = self.patch_embed(hidden_states)
    positions, cu_seqlens = _packed_metadata(self, hidden_states, grid_thw)
    position_embeddings = _position_embeddings(self, hidden_states, positions)
    for block in self.blocks:
        hidden_states = block(hidden_states, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings, **kwargs)
    return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=self.merger(hidden_states))


def _qwen2_5_vl_forward(self, hidden_states, grid_thw, **kwargs):
    """Qwen2_5_VisionTransformerPretrainedModel.forward on vlmops ops (same outputs).

    The blocks run in window order as in transformers: window layers attend within
    ``cu_window_seqlens``, the ``fullatt_block_indexes`` layers within each frame."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    hidden_states = self.patch_embed(hidden_states)
    num_tokens, unit = hidden_states.shape[0], self.spatial_merge_unit
    positions, cu_seqlens = _packed_metadata(self, hidden_states, grid_thw)
    window_index, reverse_index, cu_window_seqlens = qwen2_5_vl_window_index(
        grid_thw, self.window_size, self.patch_size, self.spatial_merge_size, num_patches=num_tokens,
        check_values=False,
    )
    hidden_states = hidden_states.view(num_tokens // unit, unit, -1)[window_index].view(num_tokens, -1)
    positions = positions.view(num_tokens // unit, unit, 2)[window_index].view(num_tokens, 2)
    position_embeddings = _position_embeddings(self, hidden_states, positions)
    for layer, block in enumerate(self.blocks):
        cu = cu_seqlens if layer in self.fullatt_block_indexes else cu_window_seqlens
        hidden_states = block(hidden_states, cu_seqlens=cu, position_embeddings=position_embeddings, **kwargs)
    merged = self.merger(hidden_states)[reverse_index]
    return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=merged)


def _qwen3_vl_forward(self, hidden_states, grid_thw, **kwargs):
    """Qwen3VLVisionModel.forward on vlmops ops (same outputs, DeepStack features included)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    interp_indices, interp_weights = get_vision_interpolation_indices_and_weights(
        grid_thw, num_grid_per_side=self.num_grid_per_side, mode=self.interpolation_mode,
        align_corners=self.interpolation_align_corners, spatial_merge_size=self.config.spatial_merge_size,
    )
    hidden_states = self.patch_embed(hidden_states)
    pos_embeds = (self.pos_embed(interp_indices) * interp_weights[:, :, None]).sum(1)
    hidden_states = hidden_states + pos_embeds.to(hidden_states.dtype)
    positions, cu_seqlens = _packed_metadata(self, hidden_states, grid_thw)
    position_embeddings = _position_embeddings(self, hidden_states, positions)
    deepstack_features = []
    for layer, block in enumerate(self.blocks):
        hidden_states = block(hidden_states, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings, **kwargs)
        if layer in self.deepstack_visual_indexes:
            merger = self.deepstack_merger_list[self.deepstack_visual_indexes.index(layer)]
            deepstack_features.append(merger(hidden_states))
    return BaseModelOutputWithDeepstackFeatures(
        last_hidden_state=hidden_states, pooler_output=self.merger(hidden_states), deepstack_features=deepstack_features
    )


_RAW_FORWARDS = {"Qwen2-VL": _qwen2_vl_forward, "Qwen2.5-VL": _qwen2_5_vl_forward, "Qwen3-VL": _qwen3_vl_forward}


# What the tower forwards call in transformers besides the guarded functions.
_DECORATORS = ("transformers.utils.generic:merge_with_config_defaults",
               "transformers.utils.output_capturing:capture_outputs")
_OUTPUTS = {
    "Qwen2-VL": ("transformers.modeling_outputs:BaseModelOutputWithPooling",),
    "Qwen2.5-VL": ("transformers.modeling_outputs:BaseModelOutputWithPooling",),
    "Qwen3-VL": (f"{QWEN3}:BaseModelOutputWithDeepstackFeatures",),
}


@functools.cache
def _forward(family):
    """The tower forward of a family wrapped in transformers' decorators (output_hidden_states and
    return_dict handling stay theirs: hooks on the blocks). Built on first use: transformers is optional.
    It carries its family in ``vlmops_tower_forward``."""
    from transformers.utils.generic import merge_with_config_defaults
    from transformers.utils.output_capturing import capture_outputs

    forward = merge_with_config_defaults(capture_outputs(_RAW_FORWARDS[family]))
    forward.vlmops_tower_forward = family
    return forward


def _tower_patched(family):
    # Reads the tag only: deciding whether a module is patched imports nothing from transformers.
    return lambda module: getattr(getattr(module.forward, "__func__", None), "vlmops_tower_forward", None) == family


def _attention_shapes(attn):
    """(q, k, v) of one token as PackedVisionAttention views the fused qkv projection."""
    q = heads_of(attn.qkv, attn.num_heads, parts=3)
    return q, q, q


def _patch_embed_refusal(root, patch_embed, path):
    """The Conv3d and the rows the tower feeds it, then what vlmops.nn.PatchEmbed checks itself."""
    return patch_conv_refusal(patch_embed.proj, rows=True) or build_refusal(PatchEmbed.from_qwen, patch_embed)


def _tower_refusal(root, tower, path):
    """Every block's attention: options, then varlen_attention on its shapes."""
    prefix = f"{path}." if path else ""
    for index, block in enumerate(tower.blocks):
        attn = block.attn
        reason = attention_options_refusal(attn, "attention_dropout") or varlen_refusal(
            *_attention_shapes(attn), attn.scaling)
        if reason:
            return f"{prefix}blocks.{index}.attn: {reason}"
    return None


def _rope_refusal(root, rotary, path):
    """The rotary module against the attention of each block of the tower that holds it."""
    tower_path = path.rpartition(".")[0]
    prefix = f"{tower_path}." if tower_path else ""
    blocks = getattr(parent_of(root, path), "blocks", ())
    consumers = {f"{prefix}blocks.{i}.attn": _attention_shapes(block.attn)[:2] for i, block in enumerate(blocks)}
    return rope_refusal(rotary, "qwen", consumers)


def _patch_tower(family):
    def apply(root, tower, path):
        prefix = f"{path}." if path else ""
        replacements = []
        for index, block in enumerate(tower.blocks):
            if not isinstance(block.attn, PackedVisionAttention):
                old = type(block.attn).__name__
                block.attn = PackedVisionAttention.from_qwen(block.attn)
                replacements.append(Replacement(f"{prefix}blocks.{index}.attn", old, "vlmops.nn.PackedVisionAttention"))
        tower.forward = types.MethodType(_forward(family), tower)
        replacements.append(Replacement(path, f"{type(tower).__name__}.forward",
                                        "vlmops tower forward (metadata built once on device, varlen attention)"))
        return replacements

    return apply


def _replaced(cls, class_name):
    return lambda module: isinstance(module, cls) and module.replaces == class_name


def _rules(family, module, tower, patch_embed, rotary, guarded):
    def spec(name):
        return f"{module}:{name}"

    return [
        Rule(family=family, kind="patch_embed", target=spec(patch_embed),
             guarded={k: v for k, v in guarded.items() if k.startswith(spec(patch_embed))},
             apply=replace_module(PatchEmbed.from_qwen, "vlmops.nn.PatchEmbed"),
             patched=_replaced(PatchEmbed, patch_embed), replaces_matched=True,
             check=_patch_embed_refusal),
        Rule(family=family, kind="rope", target=spec(rotary),
             guarded={k: v for k, v in guarded.items() if k.startswith(spec(rotary))},
             apply=replace_module(lambda m: VisionRotaryEmbedding.from_module(m, "qwen"), "vlmops.nn.VisionRotaryEmbedding"),
             patched=_replaced(VisionRotaryEmbedding, rotary), replaces_matched=True, check=_rope_refusal),
        Rule(family=family, kind="attention", target=spec(tower),
             guarded={k: v for k, v in guarded.items()
                      if not k.startswith((spec(patch_embed), spec(rotary)))},
             apply=_patch_tower(family), patched=_tower_patched(family), replaces_matched=False,
             check=_tower_refusal, requires=(*_DECORATORS, *_OUTPUTS[family])),
    ]


# sha256 of the source in transformers 5.24.0 (see vlmops.transformers.patch.check_guarded).
RULES = [
    *_rules("Qwen2-VL", QWEN2, "Qwen2VisionTransformerPretrainedModel", "PatchEmbed", "Qwen2VLVisionRotaryEmbedding", {
                f"{QWEN2}:Qwen2VisionTransformerPretrainedModel.forward": "4e3008c99d30062bb4883eb7b99fb7e7ba7e94231272741d0db2ce5a35b20c0d",
                f"{QWEN2}:Qwen2VisionTransformerPretrainedModel.__init__": "779db4cdf078339b82e81bd3f9377f255d528dc262d69d7b5ce49a8b9cc04ece",
                f"{QWEN2}:VisionAttention.forward": "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2",
                f"{QWEN2}:VisionAttention.__init__": "34af800ded68139d1982955a51c181b2b4559bf82f394226c6a014412f9e0a95",
                f"{QWEN2}:Qwen2VLVisionBlock.forward": "c68a8532e7df1519fe71de85be52510889fd25c56688680b185995fe9fa788b3",
                f"{QWEN2}:apply_rotary_pos_emb_vision": "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00",
                f"{QWEN2}:PatchEmbed.forward": "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968",
                f"{QWEN2}:PatchEmbed.__init__": "7d39d6114757c6d331719fcdd6e42056ed012d60ab6920e8f0fcd1b87fbc7092",
                f"{QWEN2}:Qwen2VLVisionRotaryEmbedding.forward": "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059",
                f"{QWEN2}:Qwen2VLVisionRotaryEmbedding.recomposition_frequencies": "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2",
                f"{QWEN2}:Qwen2VLVisionRotaryEmbedding.compute_axial_rope_parameters": "e17521ebbd668fc93b2e8649515ddffb293a80862bc3d28d21aa9097b4d27692",
                f"{VISION_UTILS}:get_vision_position_ids": "8ac4d99395f31a6d890534b9138f69d933ef8526162960ccfda62bc799409db8",
                f"{VISION_UTILS}:get_vision_cu_seqlens": "efc6af7d177a041fe4886f33fbdcc0790c8e4261452db2bc9e939c72ce48ab17",
            }),
    *_rules("Qwen2.5-VL", QWEN2_5, "Qwen2_5_VisionTransformerPretrainedModel", "Qwen2_5_VisionPatchEmbed", "Qwen2_5_VLVisionRotaryEmbedding", {
                f"{QWEN2_5}:Qwen2_5_VisionTransformerPretrainedModel.forward": "76f11f57da441812e1b5e074735b27acd71803d22c15e4b928d41176d48c00c4",
                f"{QWEN2_5}:Qwen2_5_VisionTransformerPretrainedModel.__init__": "65192ef692e5afb940c74d0b9e368aa079720f8e7053c8f22df99e04b2281294",
                f"{QWEN2_5}:Qwen2_5_VisionTransformerPretrainedModel.permute_input_for_window_attn": "00fd04d0ac4e56119ec62aa8b4a53aa753c1b429a0581f6f99e439eb71fdd36e",
                f"{QWEN2_5}:Qwen2_5_VLVisionAttention.forward": "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2",
                f"{QWEN2_5}:Qwen2_5_VLVisionAttention.__init__": "38e2eeb4a0c41b15e6de8a20ccc982ffb2b3fe5e570b1a02ef7d4ad71b9a5c92",
                f"{QWEN2_5}:Qwen2_5_VLVisionBlock.forward": "681e62f9206787afc4b0be28c3b8e0e990ed7d987f4b2042614c521d9b90b70d",
                f"{QWEN2_5}:apply_rotary_pos_emb_vision": "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00",
                f"{QWEN2_5}:Qwen2_5_VisionPatchEmbed.forward": "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968",
                f"{QWEN2_5}:Qwen2_5_VisionPatchEmbed.__init__": "7d39d6114757c6d331719fcdd6e42056ed012d60ab6920e8f0fcd1b87fbc7092",
                f"{QWEN2_5}:Qwen2_5_VLVisionRotaryEmbedding.forward": "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059",
                f"{QWEN2_5}:Qwen2_5_VLVisionRotaryEmbedding.recomposition_frequencies": "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2",
                f"{QWEN2_5}:Qwen2_5_VLVisionRotaryEmbedding.compute_axial_rope_parameters": "0bc6e808c65bba8ed533c8a2b5770e471904c4ce91f6423b1bcfb5deea4a0206",
                f"{VISION_UTILS}:get_vision_position_ids": "8ac4d99395f31a6d890534b9138f69d933ef8526162960ccfda62bc799409db8",
                f"{VISION_UTILS}:get_vision_cu_seqlens": "efc6af7d177a041fe4886f33fbdcc0790c8e4261452db2bc9e939c72ce48ab17",
                f"{VISION_UTILS}:get_vision_window_index": "e63401aa8d17c007dde2d7e9cfe0c9186cbd2445df05436df202281ebfec380e",
            }),
    *_rules("Qwen3-VL", QWEN3, "Qwen3VLVisionModel", "Qwen3VLVisionPatchEmbed", "Qwen3VLVisionRotaryEmbedding", {
                f"{QWEN3}:Qwen3VLVisionModel.forward": "aaadd4d83fb22c27797b995787bcbb2853fba5e4efbea8372749d71d58cc92bf",
                f"{QWEN3}:Qwen3VLVisionModel.__init__": "7145d3b08399ae1232f4345b08533946ee56b8e6119ba3d3ff625dd1e577f270",
                f"{QWEN3}:Qwen3VLVisionAttention.forward": "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2",
                f"{QWEN3}:Qwen3VLVisionAttention.__init__": "f58b5d6b6e6b6b873a916066d466967aec640c91a0a89f12dc834659d45af566",
                f"{QWEN3}:Qwen3VLVisionBlock.forward": "681e62f9206787afc4b0be28c3b8e0e990ed7d987f4b2042614c521d9b90b70d",
                f"{QWEN3}:apply_rotary_pos_emb_vision": "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00",
                f"{QWEN3}:Qwen3VLVisionPatchEmbed.forward": "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968",
                f"{QWEN3}:Qwen3VLVisionPatchEmbed.__init__": "dc8972b2342cf3f3ff031dfdc20d5999beb5a1aed2caf736613e71203011d03c",
                f"{QWEN3}:Qwen3VLVisionRotaryEmbedding.forward": "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059",
                f"{QWEN3}:Qwen3VLVisionRotaryEmbedding.recomposition_frequencies": "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2",
                f"{QWEN3}:Qwen3VLVisionRotaryEmbedding.compute_axial_rope_parameters": "186098ced4ab0f0a4589ff622a147b1d2050d4060ec4a1698747a2f45ae0e789",
                f"{VISION_UTILS}:get_vision_position_ids": "8ac4d99395f31a6d890534b9138f69d933ef8526162960ccfda62bc799409db8",
                f"{VISION_UTILS}:get_vision_cu_seqlens": "efc6af7d177a041fe4886f33fbdcc0790c8e4261452db2bc9e939c72ce48ab17",
                f"{VISION_UTILS}:get_vision_interpolation_indices_and_weights": "f8bf49950ce4280d77ec8cc4ca7e42221ff70e9c5f536f92c7c904062b059a77",
            }),
    *norm_mlp_rules("Qwen2.5-VL", QWEN2_5, "Qwen2_5_VLRMSNorm", "Qwen2_5_VLMLP", {
                f"{QWEN2_5}:Qwen2_5_VLRMSNorm.forward": "790fa612e4fa57acfcbea31da45f92ba91f9016f7260ef539f61c5530ba06a5f",
                f"{QWEN2_5}:Qwen2_5_VLRMSNorm.__init__": "4c80cccea2db5edba3688db4a5ceadcf4f2c9299a53633ca5105996ea412fe14",
                f"{QWEN2_5}:Qwen2_5_VLMLP.forward": "1e1715d7e10e8420119e35fbb688bc0628aa69de1fcf64661fae20ddd50d5f9f",
                f"{QWEN2_5}:Qwen2_5_VLMLP.__init__": "3716ecb3ef85e5b8c609ca1cee43f499ca7cea691f2ec392e56c341ace640ea3",
            }),
]
