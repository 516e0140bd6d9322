"""Drop-in pixel-shuffle projectors: InternVL's multi-modal projector and the Idefics3/SmolVLM connector.

Both keep the submodules (and so the parameter names, shapes and state_dict keys) of the module
they replace; only the data path changes.
"""

import math

import torch
from torch import nn

from vlmops.ops.pixel_shuffle import pixel_shuffle, pixel_shuffle_layer_norm


class PixelShuffleProjector(nn.Module):
    """InternVL's projector with the pixel shuffle moved in and fused with its LayerNorm.

    transformers' InternVL computes ``projector(reshape(pixel_shuffle(tokens)))`` where the
    projector is ``LayerNorm(s*s*C) -> Linear -> act -> Linear``. This module takes the *unshuffled*
    tokens ``[B, H*W, C]`` (square grid, as InternVL's vision tower produces) and runs
    ``vlmops.pixel_shuffle_layer_norm`` then the MLP, so the shuffled tensor is never written.

    Parameters: ``layer_norm``, ``linear_1``, ``act``, ``linear_2`` — those of
    ``InternVLMultiModalProjector``.
    """

    def __init__(self, layer_norm: nn.LayerNorm, linear_1: nn.Linear, act: nn.Module, linear_2: nn.Linear, scale: int):
        super().__init__()
        self.layer_norm = layer_norm
        self.linear_1 = linear_1
        self.act = act
        self.linear_2 = linear_2
        self.scale = scale

    @classmethod
    def from_internvl(cls, projector: nn.Module, downsample_ratio: float) -> "PixelShuffleProjector":
        """Wraps the submodules of an ``InternVLMultiModalProjector`` (shared, not copied)."""
        ratio = downsample_ratio
        inverse = 1 / ratio if isinstance(ratio, (int, float)) and 0 < ratio <= 1 else math.nan
        scale = round(inverse) if math.isfinite(inverse) else 0
        if not 0 < scale < 2**63 or abs(scale * ratio - 1) > 1e-9:
            raise ValueError(
                f"vlmops.nn.PixelShuffleProjector: downsample_ratio must be 1/integer (0.5 for scale 2), got {ratio!r}"
            )
        return cls(projector.layer_norm, projector.linear_1, projector.act, projector.linear_2, scale)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[B, H*W, C]`` -> ``[B, H*W/s^2, text_hidden]``."""
        hidden = pixel_shuffle_layer_norm(
            tokens, self.scale, self.layer_norm.weight, self.layer_norm.bias, self.layer_norm.eps
        )
        return self.linear_2(self.act(self.linear_1(hidden)))


class PixelShuffleConnector(nn.Module):
    """Idefics3 / SmolVLM connector: ``modality_projection(pixel_shuffle(x, scale_factor))``.

    Input ``[B, H*W, C]`` (square grid) -> ``[B, H*W/s^2, text_hidden]``. Parameters:
    ``modality_projection`` of ``Idefics3Connector`` / ``SmolVLMConnector``.
    """

    def __init__(self, modality_projection: nn.Module, scale_factor: int, replaces: str = ""):
        super().__init__()
        self.modality_projection = modality_projection
        self.scale_factor = scale_factor
        self.replaces = replaces  # class name of the transformers connector this module stands for

    @classmethod
    def from_connector(cls, connector: nn.Module) -> "PixelShuffleConnector":
        """Wraps the ``modality_projection`` of an Idefics3/SmolVLM connector (shared, not copied)."""
        return cls(connector.modality_projection, connector.scale_factor, type(connector).__name__)

    def forward(self, image_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.modality_projection(pixel_shuffle(image_hidden_states, self.scale_factor))
