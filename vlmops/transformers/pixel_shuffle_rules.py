"""Patch rules of the pixel-shuffle projectors: InternVL, Idefics3, SmolVLM.

- InternVL: the model's pixel shuffle moves into its projector, fused with the projector's LayerNorm
  (``vlmops.nn.PixelShuffleProjector``), where ``downsample_ratio`` is 1/integer and
  ``pixel_shuffle_layer_norm`` takes the vision features' width and dtype and the LayerNorm's.
- Idefics3 / SmolVLM: the connector -> ``vlmops.nn.PixelShuffleConnector``, where ``scale_factor`` is
  an integer and ``pixel_shuffle`` takes it with the vision features' width and dtype.
"""

import types

import torch
from torch import nn

from vlmops.nn.pixel_shuffle import PixelShuffleConnector, PixelShuffleProjector
from vlmops.transformers.patch import Replacement, Rule, Sample, Zeros, op_refusal, replace_module, set_submodule

INTERNVL = "transformers.models.internvl.modeling_internvl"


def _shuffle_moved_to_projector(self, vision_features, scale_factor=0.5):
    """InternVLModel.pixel_shuffle after patching: the projector (PixelShuffleProjector) shuffles,
    fused with its LayerNorm, so here the [B, H, W, C] grid passes through unchanged."""
    if scale_factor != self.config.downsample_ratio:
        raise ValueError(
            f"vlmops: this InternVL model was patched for downsample_ratio {self.config.downsample_ratio}, "
            f"got scale_factor {scale_factor}"
        )
    return vision_features


def _internvl_refusal(root, model, path):
    """PixelShuffleProjector's checks (the ratio), then pixel_shuffle_layer_norm on one shuffled token:
    x ``[1, s, s, C]`` in the vision tower's dtype (the features it shuffles), with the LayerNorm's
    weight, bias and eps."""
    projector = model.multi_modal_projector
    try:
        scale = PixelShuffleProjector.from_internvl(projector, model.config.downsample_ratio).scale
    except ValueError as error:
        return str(error)
    norm = projector.layer_norm
    if not isinstance(norm, nn.LayerNorm) or len(norm.normalized_shape) != 1:
        return f"the projector's layer_norm must be a LayerNorm over one dim, got {norm}"
    features = norm.normalized_shape[0]
    if features % (scale * scale):
        return f"the projector's LayerNorm width {features} is not a multiple of scale**2 = {scale * scale}"
    dtype = next((p.dtype for p in model.vision_tower.parameters()), projector.linear_1.weight.dtype)
    x = Zeros((1, scale, scale, features // (scale * scale)), dtype)
    affine = [None if t is None else Zeros.like(t) for t in (norm.weight, norm.bias)]
    return op_refusal("pixel_shuffle_layer_norm", x, scale, *affine, float(norm.eps))


def _connector_refusal(root, connector, path):
    """An integer scale_factor, then pixel_shuffle on one shuffled token: x ``[1, s, s, C]`` with the
    vision width C the projection expects, in its dtype."""
    scale = connector.scale_factor
    if isinstance(scale, bool) or not isinstance(scale, int):
        return f"scale_factor must be an integer, got {scale!r}"
    projection = connector.modality_projection.proj
    if projection.in_features % (scale * scale):
        return f"the projection's width {projection.in_features} is not a multiple of scale_factor**2 = {scale * scale}"
    x = Zeros((1, scale, scale, projection.in_features // (scale * scale)), projection.weight.dtype)
    return op_refusal("pixel_shuffle", x, scale)


def _patch_internvl(root, model, path):
    prefix = f"{path}." if path else ""
    projector = model.multi_modal_projector
    set_submodule(
        root,
        f"{prefix}multi_modal_projector",
        PixelShuffleProjector.from_internvl(projector, model.config.downsample_ratio),
    )
    model.pixel_shuffle = types.MethodType(_shuffle_moved_to_projector, model)
    return [
        Replacement(f"{prefix}multi_modal_projector", type(projector).__name__, "vlmops.nn.PixelShuffleProjector"),
        Replacement(path, "InternVLModel.pixel_shuffle", "pass-through (shuffle fused into the projector's LayerNorm)"),
    ]


def _internvl_sample(root, model, path):
    """verify=True on the model: get_image_features of one image at the vision tower's size."""
    vision = model.config.vision_config
    size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    weight = next(model.vision_tower.parameters())
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, vision.num_channels, size, size, generator=generator).to(weight.device, weight.dtype)
    return Sample(path, lambda m: m.get_image_features(pixel_values=pixels), f"one {size}x{size} image")


def _connector_sample(root, connector, path):
    """verify=True on the connector: one image's vision features, a (2s)x(2s) grid (s: scale_factor) of
    the width its projection expects."""
    scale = connector.scale_factor
    projection = connector.modality_projection.proj
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 4 * scale * scale, projection.in_features // (scale * scale), generator=generator)
    features = features.to(projection.weight.device, projection.weight.dtype)
    return Sample(path, lambda m: m(features), f"a {2 * scale}x{2 * scale} grid of vision features")


def _connector_rule(family: str, module: str, class_name: str) -> Rule:
    return Rule(
        family=family,
        kind="pixel_shuffle",
        target=f"{module}:{class_name}",
        guarded=(f"{module}:{class_name}.forward", f"{module}:{class_name}.pixel_shuffle"),
        apply=replace_module(PixelShuffleConnector.from_connector, "vlmops.nn.PixelShuffleConnector"),
        patched=lambda m: isinstance(m, PixelShuffleConnector) and m.replaces == class_name,
        replaces_matched=True,
        check=_connector_refusal,
        sample=_connector_sample,
    )


RULES = [
    Rule(
        family="InternVL",
        kind="pixel_shuffle",
        target=f"{INTERNVL}:InternVLModel",
        guarded=(
            f"{INTERNVL}:InternVLModel.get_image_features",
            f"{INTERNVL}:InternVLModel.pixel_shuffle",
            f"{INTERNVL}:InternVLMultiModalProjector.forward",
        ),
        apply=_patch_internvl,
        patched=lambda module: isinstance(getattr(module, "multi_modal_projector", None), PixelShuffleProjector),
        replaces_matched=False,
        check=_internvl_refusal,
        sample=_internvl_sample,
    ),
    _connector_rule("Idefics3", "transformers.models.idefics3.modeling_idefics3", "Idefics3Connector"),
    _connector_rule("SmolVLM", "transformers.models.smolvlm.modeling_smolvlm", "SmolVLMConnector"),
]
