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

The "rope" and "attention" rules have a variant for transformers 5.10-5.16, whose rotary modules
return angles rather than cos/sin (``vlmops.transformers.adapters``).
"""

import functools
import types

import torch

from vlmops.models.qwen_vl import qwen2_5_vl_window_index, qwen3_vl_position_interpolation, vision_rope_positions
from vlmops.nn.attention import PackedVisionAttention, vision_cu_seqlens
from vlmops.nn.patch_embed import PatchEmbed
from vlmops.nn.rope import VisionRotaryEmbedding
from vlmops.transformers.adapters import QwenAngleRotaryEmbedding, qwen_cos_sin, takes_angles
from vlmops.transformers.norm_mlp_rules import norm_mlp_rules
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    Sample,
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
    return qwen_cos_sin(tower.rotary_pos_emb, hidden_states, positions)


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
        grid_thw,
        self.window_size,
        self.patch_size,
        self.spatial_merge_size,
        num_patches=num_tokens,
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


def _qwen3_position_embeddings(tower, grid_thw, num_patches):
    """Qwen3-VL's interpolated learned position embeddings [N, hidden] (float32 weights), from indices
    and weights built on the device (transformers' helpers read grid_thw on the host). Towers of
    transformers before 5.17 have no interpolation attributes: bilinear with align_corners."""
    indices, weights = qwen3_vl_position_interpolation(
        grid_thw,
        tower.num_grid_per_side,
        tower.spatial_merge_size,
        num_patches,
        mode=getattr(tower, "interpolation_mode", "bilinear"),
        align_corners=getattr(tower, "interpolation_align_corners", True),
    )
    return (tower.pos_embed(indices) * weights[:, :, None]).sum(1)


def _qwen3_vl_forward(self, hidden_states, grid_thw, **kwargs):
    """Qwen3VLVisionModel.forward on vlmops ops (same outputs, DeepStack features included)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    hidden_states = self.patch_embed(hidden_states)
    position_embeds = _qwen3_position_embeddings(self, grid_thw, hidden_states.shape[0])
    hidden_states = hidden_states + position_embeds.to(hidden_states.dtype)
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
_DECORATORS = (
    "transformers.utils.generic:merge_with_config_defaults",
    "transformers.utils.output_capturing:capture_outputs",
)
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
            *_attention_shapes(attn), attn.scaling
        )
        if reason:
            return f"{prefix}blocks.{index}.attn: {reason}"
    return None


def _rope_refusal(factory):
    """The replacement ``factory`` builds for the rotary module, against the attention of each block of
    the tower that holds it."""

    def check(root, rotary, path):
        tower_path = path.rpartition(".")[0]
        prefix = f"{tower_path}." if tower_path else ""
        blocks = getattr(parent_of(root, path), "blocks", ())
        consumers = {f"{prefix}blocks.{i}.attn": _attention_shapes(block.attn)[:2] for i, block in enumerate(blocks)}
        return rope_refusal(factory, rotary, consumers)

    return check


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
        replacements.append(
            Replacement(
                path,
                f"{type(tower).__name__}.forward",
                "vlmops tower forward (metadata built once on device, varlen attention)",
            )
        )
        return replacements

    return apply


def _replaced(cls, class_name):
    return lambda module: isinstance(module, cls) and module.replaces == class_name


def _tower_sample(tower_path):
    """verify=True on a tower: one image of 2m x 4m patches (m: spatial_merge_size) as pixel rows in the
    patch conv's dtype, through the tower at ``tower_path(the matched module's path)``."""

    def sample(root, module, path):
        scope = tower_path(path)
        tower = root.get_submodule(scope)
        weight = tower.patch_embed.proj.weight
        m = tower.spatial_merge_size
        grid = torch.tensor([[1, 2 * m, 4 * m]], device=weight.device)
        generator = torch.Generator().manual_seed(0)
        rows = torch.randn(8 * m * m, weight[0].numel(), generator=generator).to(weight.device, weight.dtype)
        return Sample(scope, lambda t: t(rows, grid_thw=grid), f"one image of {2 * m}x{4 * m} patches")

    return sample


def _parent(path):
    return path.rpartition(".")[0]


def _rules(family, module, tower, patch_embed, rotary, guarded, legacy):
    """The rules of one Qwen tower. ``guarded``: the specs the tower rules rely on (the patch embedding's
    and rotary module's go to their own rules). ``legacy``: (rotary class, {spec: its replacement or
    None}) of the transformers 5.10-5.16 variant of the "rope" and "attention" rules."""

    def spec(name):
        return f"{module}:{name}"

    def own(name):
        return tuple(k for k in guarded if k.startswith(spec(f"{name}.")))

    tower_guarded = tuple(k for k in guarded if not k.startswith((spec(f"{patch_embed}."), spec(f"{rotary}."))))
    legacy_rotary, legacy_specs = legacy
    legacy_tower = tuple(legacy_specs.get(k, k) for k in tower_guarded if legacy_specs.get(k, k) is not None)

    def serves_legacy():
        return takes_angles(spec(legacy_rotary))

    def rope_rule(target, rope_guarded, factory, **variant):
        return Rule(
            family=family,
            kind="rope",
            target=spec(target),
            guarded=rope_guarded,
            apply=replace_module(factory, "vlmops.nn.VisionRotaryEmbedding"),
            patched=_replaced(VisionRotaryEmbedding, target),
            replaces_matched=True,
            check=_rope_refusal(factory),
            sample=_tower_sample(_parent),
            **variant,
        )

    def attention_rule(attention_guarded, **variant):
        return Rule(
            family=family,
            kind="attention",
            target=spec(tower),
            guarded=attention_guarded,
            apply=_patch_tower(family),
            patched=_tower_patched(family),
            replaces_matched=False,
            check=_tower_refusal,
            requires=(*_DECORATORS, *_OUTPUTS[family]),
            sample=_tower_sample(lambda path: path),
            **variant,
        )

    legacy_variant = {"serves": serves_legacy, "api": "rotary modules returning angles (transformers 5.10-5.16)"}
    return [
        Rule(
            family=family,
            kind="patch_embed",
            target=spec(patch_embed),
            guarded=own(patch_embed),
            apply=replace_module(PatchEmbed.from_qwen, "vlmops.nn.PatchEmbed"),
            patched=_replaced(PatchEmbed, patch_embed),
            replaces_matched=True,
            check=_patch_embed_refusal,
            sample=_tower_sample(_parent),
        ),
        rope_rule(
            legacy_rotary,
            (spec(f"{legacy_rotary}.__init__"), spec(f"{legacy_rotary}.forward")),
            QwenAngleRotaryEmbedding.from_angle_module,
            **legacy_variant,
        ),
        rope_rule(rotary, own(rotary), lambda m: VisionRotaryEmbedding.from_module(m, "qwen")),
        attention_rule(legacy_tower, **legacy_variant),
        attention_rule(tower_guarded),
    ]


_RELIED_ON = (f"{VISION_UTILS}:get_vision_position_ids", f"{VISION_UTILS}:get_vision_cu_seqlens")


def _tower_specs(module, tower, attention, block, patch_embed, rotary, extra=()):
    """The specs a Qwen tower's rules rely on: the tower's, its attention's and block's, the rotary
    application, the patch embedding's and rotary module's own, and the vision_utils semantics."""
    return (
        f"{module}:{tower}.forward",
        f"{module}:{tower}.__init__",
        *extra,
        f"{module}:{attention}.forward",
        f"{module}:{attention}.__init__",
        f"{module}:{block}.forward",
        f"{module}:apply_rotary_pos_emb_vision",
        f"{module}:{patch_embed}.forward",
        f"{module}:{patch_embed}.__init__",
        f"{module}:{rotary}.forward",
        f"{module}:{rotary}.recomposition_frequencies",
        f"{module}:{rotary}.compute_axial_rope_parameters",
        *_RELIED_ON,
    )


# Qwen2.5-VL's window permutation, a method of the tower from transformers 5.17.
_PERMUTE = f"{QWEN2_5}:Qwen2_5_VisionTransformerPretrainedModel.permute_input_for_window_attn"

RULES = [
    *_rules(
        "Qwen2-VL",
        QWEN2,
        "Qwen2VisionTransformerPretrainedModel",
        "PatchEmbed",
        "Qwen2VLVisionRotaryEmbedding",
        _tower_specs(
            QWEN2,
            "Qwen2VisionTransformerPretrainedModel",
            "VisionAttention",
            "Qwen2VLVisionBlock",
            "PatchEmbed",
            "Qwen2VLVisionRotaryEmbedding",
        ),
        ("VisionRotaryEmbedding", {}),
    ),
    *_rules(
        "Qwen2.5-VL",
        QWEN2_5,
        "Qwen2_5_VisionTransformerPretrainedModel",
        "Qwen2_5_VisionPatchEmbed",
        "Qwen2_5_VLVisionRotaryEmbedding",
        (
            *_tower_specs(
                QWEN2_5,
                "Qwen2_5_VisionTransformerPretrainedModel",
                "Qwen2_5_VLVisionAttention",
                "Qwen2_5_VLVisionBlock",
                "Qwen2_5_VisionPatchEmbed",
                "Qwen2_5_VLVisionRotaryEmbedding",
                extra=(_PERMUTE,),
            ),
            f"{VISION_UTILS}:get_vision_window_index",
        ),
        ("Qwen2_5_VisionRotaryEmbedding", {_PERMUTE: None}),
    ),
    *_rules(
        "Qwen3-VL",
        QWEN3,
        "Qwen3VLVisionModel",
        "Qwen3VLVisionPatchEmbed",
        "Qwen3VLVisionRotaryEmbedding",
        (
            *_tower_specs(
                QWEN3,
                "Qwen3VLVisionModel",
                "Qwen3VLVisionAttention",
                "Qwen3VLVisionBlock",
                "Qwen3VLVisionPatchEmbed",
                "Qwen3VLVisionRotaryEmbedding",
            ),
            f"{VISION_UTILS}:get_vision_interpolation_indices_and_weights",
        ),
        (
            "Qwen3VLVisionRotaryEmbedding",
            {
                f"{VISION_UTILS}:get_vision_interpolation_indices_and_weights": (
                    f"{VISION_UTILS}:get_vision_bilinear_indices_and_weights"
                )
            },
        ),
    ),
    *norm_mlp_rules("Qwen2.5-VL", QWEN2_5, "Qwen2_5_VLRMSNorm", "Qwen2_5_VLMLP"),
]
