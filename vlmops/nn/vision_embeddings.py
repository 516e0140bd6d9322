"""Drop-in CLIP / SigLIP vision embeddings: patch Conv2d, CLS token and position add as one vlmops op.

transformers runs ``Conv2d -> flatten/transpose -> cat(CLS) -> + position_embedding`` (four passes
over the [B, ncls + L, D] activations); these modules run ``vlmops.patch_embed`` once, with the CLS
row and the position table added in the GEMM's epilogue. Parameter names, shapes, buffers and
``state_dict()`` keys are those of transformers' ``CLIPVisionEmbeddings`` / ``SiglipVisionEmbeddings``
(``class_embedding`` (CLIP only), ``patch_embedding``, ``position_embedding``, the non-persistent
``position_ids``), so the original's ``state_dict`` loads as is.
"""

import importlib

import torch
from torch import nn

from vlmops.ops.patch_embed import patch_embed

__all__ = ["CLIPVisionEmbeddings", "SiglipVisionEmbeddings"]


def _crop_to_patches(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """nn.Conv2d (kernel == stride) drops the rows/columns past the last whole patch; a view does the same."""
    height, width = pixel_values.shape[-2:]
    return pixel_values[..., : height - height % patch_size, : width - width % patch_size]


class _VisionEmbeddings(nn.Module):
    _TRANSFORMERS = ""  # "module:ClassName" of the transformers class this module stands for
    _HAS_CLS = False

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        if not (isinstance(self.patch_size, int) and self.patch_size >= 1):
            raise ValueError(
                f"vlmops.nn.{type(self).__name__}: config.patch_size must be an int >= 1, got {self.patch_size!r}"
            )
        if self._HAS_CLS:
            self.class_embedding = nn.Parameter(torch.randn(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            self.embed_dim,
            kernel_size=self.patch_size,
            stride=self.patch_size,
            bias=not self._HAS_CLS,  # CLIP's conv has no bias, SigLIP's has one
        )
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + int(self._HAS_CLS)
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.register_buffer("position_ids", torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    @classmethod
    def from_transformers(cls, module: nn.Module):
        """Wraps the parameters and buffers of a transformers embeddings module (shared, not copied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name in ("config", "embed_dim", "image_size", "patch_size", "num_patches", "num_positions"):
            setattr(new, name, getattr(module, name))
        if cls._HAS_CLS:
            new.class_embedding = module.class_embedding
        new.patch_embedding = module.patch_embedding
        new.position_embedding = module.position_embedding
        new.register_buffer("position_ids", module.position_ids, persistent=False)
        return new

    def _transformers_class(self):
        module_name, class_name = self._TRANSFORMERS.split(":")
        return getattr(importlib.import_module(module_name), class_name)

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """transformers' own ``interpolate_pos_encoding`` (bicubic resize of the position table), run on
        this module's parameters; only ``embeddings.shape`` is read."""
        return self._transformers_class().interpolate_pos_encoding(self, embeddings, height, width)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding=False) -> torch.Tensor:
        """pixel_values ``[B, C, H, W]`` -> embeddings ``[B, ncls + (H/P)*(W/P), D]`` in the conv weight's dtype."""
        height, width = pixel_values.shape[-2:]
        if self._HAS_CLS and not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match model ({self.image_size}*{self.image_size})."
            )
        pixels = _crop_to_patches(pixel_values, self.patch_size)
        weight = self.patch_embedding.weight
        if interpolate_pos_encoding:
            # transformers reads only the shape of the embeddings here: a meta tensor stands in for them.
            patches = (height // self.patch_size) * (width // self.patch_size)
            shape = torch.empty((1, int(self._HAS_CLS) + patches, self.embed_dim), device="meta")
            positions = self.interpolate_pos_encoding(shape, height, width)[0]
        else:
            patches = (height // self.patch_size) * (width // self.patch_size)
            if patches != self.num_patches:
                raise ValueError(
                    f"vlmops.nn.{type(self).__name__}: pixel_values of {height}x{width} make {patches} patches but "
                    f"the position embeddings hold {self.num_patches}; pass interpolate_pos_encoding=True"
                )
            # position_ids is arange(num_positions): the lookup is the table itself, read in place.
            positions = self.position_embedding.weight
        return patch_embed(
            pixels,
            weight,
            self.patch_embedding.bias,
            pos_embed=positions,
            cls_token=self.class_embedding if self._HAS_CLS else None,
        )


class CLIPVisionEmbeddings(_VisionEmbeddings):
    """transformers' ``CLIPVisionEmbeddings`` on ``vlmops.patch_embed``: same constructor (a
    ``CLIPVisionConfig``), parameters, forward signature and output ``[B, 1 + L, D]``."""

    _TRANSFORMERS = "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings"
    _HAS_CLS = True


class SiglipVisionEmbeddings(_VisionEmbeddings):
    """transformers' ``SiglipVisionEmbeddings`` on ``vlmops.patch_embed``: same constructor (a
    ``SiglipVisionConfig``), parameters, forward signature and output ``[B, L, D]``."""

    _TRANSFORMERS = "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings"
    _HAS_CLS = False
