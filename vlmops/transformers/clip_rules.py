"""Patch rules of the CLIP / SigLIP vision towers, alone or inside LLaVA and LLaVA-OneVision.

Two kinds per tower:

- ``patch_embed``: ``CLIPVisionEmbeddings`` / ``SiglipVisionEmbeddings`` -> the ``vlmops.nn`` module
  of the same name (Conv2d + CLS + position add as one ``vlmops.patch_embed``), sharing the
  original's parameters; where the conv is a patch embedding and ``patch_embed`` takes its weight,
  position table and CLS token.
- ``attention``: the tower's attention implementation becomes ``"vlmops"`` (varlen attention over
  the equal-length batch, ``vlmops.transformers.attention_interface``) through transformers' own
  ``set_attn_implementation``: ``CLIPAttention`` / ``SiglipAttention`` read
  ``config._attn_implementation`` at every forward, so no module is swapped; where
  ``varlen_attention`` takes every layer's heads, head dim, dtype and scale, and no layer has dropout.

A tower inside a LLaVA / LLaVA-OneVision model is patched by that family's rules (the report names
the outer family); the tower rules then leave it alone, also where the outer family's checks left it
unpatched. Towers and embeddings carry the family that claimed them in ``vlmops_family``.
"""

import torch
from torch import nn

from vlmops.nn.vision_embeddings import CLIPVisionEmbeddings, SiglipVisionEmbeddings
from vlmops.transformers.attention_interface import NAME as ATTENTION_NAME
from vlmops.transformers.attention_interface import register_attention
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    Sample,
    UnsupportedTransformersError,
    Zeros,
    attention_options_refusal,
    patch_conv_refusal,
    resolve_or_none,
    set_submodule,
    varlen_refusal,
)

CLIP = "transformers.models.clip.modeling_clip"
SIGLIP = "transformers.models.siglip.modeling_siglip"
LLAVA = "transformers.models.llava.modeling_llava"
ONEVISION = "transformers.models.llava_onevision.modeling_llava_onevision"

# What the rules rely on (see vlmops.transformers.patch.Rule.guarded).
_EMBEDDINGS_SPECS = (
    f"{CLIP}:CLIPVisionEmbeddings.__init__",
    f"{CLIP}:CLIPVisionEmbeddings.forward",
    f"{CLIP}:CLIPVisionEmbeddings.interpolate_pos_encoding",
    f"{SIGLIP}:SiglipVisionEmbeddings.__init__",
    f"{SIGLIP}:SiglipVisionEmbeddings.forward",
    f"{SIGLIP}:SiglipVisionEmbeddings.interpolate_pos_encoding",
)
# The attention path: the tower passes no mask, the layers pass it through, the attention modules
# look the implementation up in config._attn_implementation with [B, H, L, D] views.
_ATTENTION_SPECS = (
    f"{CLIP}:CLIPAttention.forward",
    f"{CLIP}:CLIPEncoderLayer.forward",
    f"{CLIP}:CLIPEncoder.forward",
    f"{CLIP}:CLIPVisionModel.forward",
    f"{SIGLIP}:SiglipAttention.forward",
    f"{SIGLIP}:SiglipEncoderLayer.forward",
    f"{SIGLIP}:SiglipEncoder.forward",
    f"{SIGLIP}:SiglipVisionModel.forward",
)
# How the VLMs build and call their tower.
_OUTER_SPECS = {
    "LLaVA": (
        f"{LLAVA}:LlavaModel.__init__",
        f"{LLAVA}:LlavaModel.get_image_features",
    ),
    "LLaVA-OneVision": (
        f"{ONEVISION}:LlavaOnevisionModel.__init__",
        f"{ONEVISION}:LlavaOnevisionModel.get_image_features",
    ),
}

# What the "vlmops" attention implementation registers with (vlmops.transformers.attention_interface).
_ATTENTION_INTERFACE = (
    "transformers:AttentionInterface",
    "transformers.masking_utils:AttentionMaskInterface",
    "transformers.masking_utils:sdpa_mask",
)

# Per tower kind: the tower class, its embeddings class and the vlmops replacement, its attention class.
_TOWERS = {"CLIP": f"{CLIP}:CLIPVisionModel", "SigLIP": f"{SIGLIP}:SiglipVisionModel"}
_EMBEDDINGS = {
    "CLIP": (f"{CLIP}:CLIPVisionEmbeddings", CLIPVisionEmbeddings),
    "SigLIP": (f"{SIGLIP}:SiglipVisionEmbeddings", SiglipVisionEmbeddings),
}
_ATTENTION = {"CLIP": f"{CLIP}:CLIPAttention", "SigLIP": f"{SIGLIP}:SiglipAttention"}


def _owner(module: nn.Module):
    return getattr(module, "vlmops_family", None)


def _unclaimed_or(family: str):
    return lambda module: _owner(module) in (None, family)


def _isinstance(module: nn.Module, spec: str) -> bool:
    """Is module an instance of the transformers class ``spec`` (False where transformers lacks it)?"""
    cls = resolve_or_none(spec)
    return cls is not None and isinstance(module, cls)


def _tower_kind(tower: nn.Module):
    """ "CLIP" or "SigLIP" for a tower vlmops knows, else None."""
    for kind, spec in _TOWERS.items():
        if _isinstance(tower, spec):
            return kind
    return None


def _claim(tower: nn.Module, family: str) -> None:
    tower.vlmops_family = family
    tower.embeddings.vlmops_family = family


def _attention_modules(tower: nn.Module, kind: str):
    return [m for m in tower.modules() if _isinstance(m, _ATTENTION[kind])]


def _attention_is_vlmops(tower: nn.Module, kind: str) -> bool:
    modules = _attention_modules(tower, kind)
    return bool(modules) and all(m.config._attn_implementation == ATTENTION_NAME for m in modules)


def _embeddings_refusal(embeddings: nn.Module) -> str | None:
    """patch_embed on one patch with the embeddings' conv, position table and CLS token (CLIP)."""
    return patch_conv_refusal(
        embeddings.patch_embedding,
        pos_embed=embeddings.position_embedding.weight,
        cls_token=getattr(embeddings, "class_embedding", None),
    )


def _attention_refusal(tower: nn.Module, tower_path: str) -> str | None:
    """Every attention layer of the tower: options, then varlen_attention on one token of its q, k, v
    (the projections viewed as heads of ``head_dim``, as the layer does)."""
    kind = _tower_kind(tower)
    for path, attn in tower.named_modules(prefix=tower_path):
        if not _isinstance(attn, _ATTENTION[kind]):
            continue
        q, k, v = (
            Zeros((1, p.out_features // attn.head_dim, attn.head_dim), p.weight.dtype)
            for p in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        reason = attention_options_refusal(attn, "dropout") or varlen_refusal(q, k, v, attn.scale)
        if reason:
            return f"{path}: {reason}"
    return None


def _replace_embeddings(root: nn.Module, old: nn.Module, path: str, vlmops_cls, family: str) -> list:
    new = vlmops_cls.from_transformers(old)
    new.vlmops_family = family
    set_submodule(root, path, new)
    return [Replacement(path, type(old).__name__, f"vlmops.nn.{vlmops_cls.__name__}")]


def _swap_embeddings(root: nn.Module, tower: nn.Module, tower_path: str, family: str) -> list:
    vlmops_cls = _EMBEDDINGS[_tower_kind(tower)][1]
    replaced = _replace_embeddings(root, tower.embeddings, f"{tower_path}.embeddings", vlmops_cls, family)
    tower.vlmops_family = family
    return replaced


def _switch_attention(tower: nn.Module, tower_path: str, family: str) -> list:
    kind = _tower_kind(tower)
    old = tower.config._attn_implementation
    register_attention()
    tower.set_attn_implementation(ATTENTION_NAME)
    if not _attention_is_vlmops(tower, kind):
        tower.set_attn_implementation(old)
        raise UnsupportedTransformersError(
            f"vlmops.patch_model: set_attn_implementation('{ATTENTION_NAME}') on {type(tower).__name__} did not reach "
            f"its {_ATTENTION[kind].split(':')[1]} modules; refusing to patch ({family}, attention)"
        )
    _claim(tower, family)
    layers = len(_attention_modules(tower, kind))
    return [
        Replacement(
            tower_path,
            f'attn_implementation="{old}" ({layers} layers)',
            f'attn_implementation="{ATTENTION_NAME}" (vlmops.varlen_attention)',
        )
    ]


def _pixels_sample(tower_of):
    """verify=True: two images at the tower's image size in its dtype, through the module at the matched
    module's path; ``tower_of(matched module)`` is the tower the size is read from and
    ``call(scope, pixels)`` runs the scope."""

    def make(call):
        def sample(root, module, path):
            tower = tower_of(module)
            config = tower.config
            weight = next(tower.parameters())
            size = config.image_size
            generator = torch.Generator().manual_seed(0)
            pixels = torch.randn(2, config.num_channels, size, size, generator=generator).to(
                weight.device, weight.dtype
            )
            return Sample(path, lambda scope: call(scope, pixels), f"two {size}x{size} images")

        return sample

    return make


def _tower_rules(family: str) -> list:
    """Rules for a bare CLIP / SigLIP tower (not claimed by a VLM's rules)."""
    embeddings_target, vlmops_cls = _EMBEDDINGS[family]
    return [
        Rule(
            family=family,
            kind="patch_embed",
            target=embeddings_target,
            guarded=tuple(k for k in _EMBEDDINGS_SPECS if k.startswith(f"{embeddings_target}.")),
            apply=lambda root, old, path: _replace_embeddings(root, old, path, vlmops_cls, family),
            patched=lambda m: isinstance(m, vlmops_cls) and _owner(m) == family,
            replaces_matched=True,
            matches=_unclaimed_or(family),
            check=lambda root, embeddings, path: _embeddings_refusal(embeddings),
            sample=_pixels_sample(lambda embeddings: embeddings)(lambda scope, pixels: scope(pixels)),
        ),
        Rule(
            family=family,
            kind="attention",
            target=_TOWERS[family],
            guarded=tuple(k for k in _ATTENTION_SPECS if k.startswith(_TOWERS[family].split(":")[0])),
            apply=lambda root, tower, path: _switch_attention(tower, path, family),
            patched=lambda m: (
                _isinstance(m, _TOWERS[family]) and _owner(m) in (None, family) and _attention_is_vlmops(m, family)
            ),
            replaces_matched=False,
            matches=_unclaimed_or(family),
            check=lambda root, tower, path: _attention_refusal(tower, path),
            requires=_ATTENTION_INTERFACE,
            sample=_pixels_sample(lambda tower: tower)(lambda scope, pixels: scope(pixel_values=pixels)),
        ),
    ]


def _vlm_rules(family: str, target: str) -> list:
    """Rules for a VLM whose ``vision_tower`` is a CLIP or SigLIP vision model."""

    def tower_of(model):
        """The model's CLIP / SigLIP tower, or None (transformers is imported here, not at import time)."""
        if not _isinstance(model, target):
            return None
        return model.vision_tower if _tower_kind(model.vision_tower) else None

    def prefix(path):
        return f"{path}.vision_tower" if path else "vision_tower"

    def embeddings_patched(model):
        tower = tower_of(model)
        embeddings = getattr(tower, "embeddings", None)  # a tower of other transformers code may have none
        return isinstance(embeddings, (CLIPVisionEmbeddings, SiglipVisionEmbeddings))

    def attention_patched(model):
        tower = tower_of(model)
        return tower is not None and _attention_is_vlmops(tower, _tower_kind(tower))

    def claimed(refusal):
        """A check that first claims the tower for this family, patched or not: the tower rules then
        leave it to this family's rules."""

        def check(root, model, path):
            _claim(model.vision_tower, family)
            return refusal(model.vision_tower, prefix(path))

        return check

    guarded = _OUTER_SPECS[family]
    # The VLM's tower, run on its own: the rules patch only it.
    sample = _pixels_sample(lambda model: model.vision_tower)(
        lambda scope, pixels: scope.vision_tower(pixel_values=pixels)
    )
    return [
        Rule(
            family=family,
            kind="patch_embed",
            target=target,
            guarded=(*guarded, *_EMBEDDINGS_SPECS),
            apply=lambda root, model, path: _swap_embeddings(root, model.vision_tower, prefix(path), family),
            patched=embeddings_patched,
            replaces_matched=False,
            matches=lambda model: tower_of(model) is not None,
            check=claimed(lambda tower, tower_path: _embeddings_refusal(tower.embeddings)),
            sample=sample,
        ),
        Rule(
            family=family,
            kind="attention",
            target=target,
            guarded=(*guarded, *_ATTENTION_SPECS),
            apply=lambda root, model, path: _switch_attention(model.vision_tower, prefix(path), family),
            patched=attention_patched,
            replaces_matched=False,
            matches=lambda model: tower_of(model) is not None,
            check=claimed(_attention_refusal),
            requires=_ATTENTION_INTERFACE,
            sample=sample,
        ),
    ]


# The VLM rules come first: they claim their towers before the tower rules look at them.
RULES = [
    *_vlm_rules("LLaVA", f"{LLAVA}:LlavaModel"),
    *_vlm_rules("LLaVA-OneVision", f"{ONEVISION}:LlavaOnevisionModel"),
    *_tower_rules("CLIP"),
    *_tower_rules("SigLIP"),
]
