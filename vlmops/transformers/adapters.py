"""Small adapters that let the patch rules serve older generations of the transformers code.

transformers 5.17 gave the Qwen2-VL / Qwen2.5-VL / Qwen3-VL and Pixtral vision towers rotary modules
with one interface, ``forward(x, position_ids [N, 2]) -> (cos, sin)``. Before it (5.10 to 5.16):

- the Qwen towers' rotary module (``VisionRotaryEmbedding``, ``Qwen2_5_VisionRotaryEmbedding``,
  ``Qwen3VLVisionRotaryEmbedding``) returned the angles, ``forward(position_ids [N, 2]) -> [N, head_dim/2]``,
  and the tower took ``cat(angles, angles).cos()`` / ``.sin()`` itself; its ``inv_freq`` buffer is
  the same ``[head_dim/4]`` as later;
- Pixtral's ``PixtralRotaryEmbedding`` held a table of angles per flattened patch position,
  ``inv_freq [side * side, head_dim]`` (``side = image_size // patch_size``, row ``h * side + w``),
  and took ``forward(x, position_ids [N] = h * side + w) -> (cos, sin)`` in x's dtype;
- Qwen3-VL's position embeddings were interpolated with ``get_vision_bilinear_indices_and_weights``
  (taps on dim 0) instead of ``get_vision_interpolation_indices_and_weights`` (taps on dim 1); the
  patched tower builds them itself on the device (``vlmops.models.qwen_vl``), for either release.

The adapters here are ``vlmops.nn.VisionRotaryEmbedding`` with the older interface (the same
tables, so the packed attention's ``rope`` path is unchanged) and the few calls a patched tower
forward makes through whichever interface its modules have.
"""

import inspect

import torch

from vlmops.nn.rope import VisionRotaryEmbedding
from vlmops.transformers.patch import resolve_or_none


def forward_parameters(cls) -> tuple[str, ...]:
    """The parameter names of ``cls.forward``, self excluded."""
    return tuple(inspect.signature(cls.forward).parameters)[1:]


def takes_angles(spec: str) -> bool:
    """Is the transformers class ``spec`` a Qwen rotary module of the angles interface
    (``forward(position_ids)``)? False where transformers lacks it."""
    cls = resolve_or_none(spec)
    return cls is not None and forward_parameters(cls) == ("position_ids",)


class QwenAngleRotaryEmbedding(VisionRotaryEmbedding):
    """``vlmops.nn.VisionRotaryEmbedding`` (Qwen convention) standing for a Qwen vision rotary module of
    transformers 5.10-5.16: ``forward(position_ids [N, 2]) -> angles [N, head_dim/2]`` (float32, the
    same products as transformers')."""

    @classmethod
    def from_angle_module(cls, module) -> "QwenAngleRotaryEmbedding":
        """Takes over the module's ``inv_freq`` buffer (shared, not copied)."""
        rope = cls(module.inv_freq, "qwen")
        rope.replaces = type(module).__name__
        return rope

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        tables = self.tables()
        return position_ids[..., tables.axis].float() * tables.inv_freq


def qwen_cos_sin(rotary, hidden_states: torch.Tensor, positions: torch.Tensor):
    """transformers' (cos, sin) for positions [N, 2] from a Qwen tower's rotary module of either interface."""
    if forward_parameters(type(rotary)) == ("position_ids",):
        angles = rotary(positions)
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos(), emb.sin()
    return rotary(hidden_states, positions)


class PixtralTableRotaryEmbedding(VisionRotaryEmbedding):
    """``vlmops.nn.VisionRotaryEmbedding`` (Pixtral convention) standing for transformers 5.10-5.16's
    ``PixtralRotaryEmbedding``: ``forward(x, position_ids)`` with flattened positions ``[N] = h * side + w``
    (or ``[N, 2]`` (h, w)) -> ``(cos, sin)`` ``[N, head_dim]`` in x's dtype."""

    side: int

    @classmethod
    def from_table_module(cls, module) -> "PixtralTableRotaryEmbedding":
        """The per-pair frequencies read from the module's table: row ``side`` is (h=1, w=0), whose first
        quarter is inv[0::2]; row 1 is (h=0, w=1), whose second quarter is inv[1::2]. A one-patch grid
        only has position 0, which every frequency turns by 0."""
        config = module.config
        side = config.image_size // config.patch_size
        table = module.inv_freq
        quarter = table.shape[-1] // 4
        if side > 1:
            inv_freq = torch.cat((table[side, :quarter], table[1, quarter : 2 * quarter])).float()
        else:
            inv_freq = table.new_zeros(2 * quarter, dtype=torch.float32)
        rope = cls(inv_freq, "pixtral")
        rope.side = side
        rope.replaces = type(module).__name__
        return rope

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        if position_ids.dim() == 1:
            position_ids = torch.stack((position_ids // self.side, position_ids % self.side), dim=-1)
        return super().forward(x, position_ids)


def pixtral_cos_sin(rotary, patch_embeds: torch.Tensor, positions: torch.Tensor, side: int):
    """transformers' (cos, sin) for positions [N, 2] from a Pixtral rotary module of either interface:
    the table module of 5.10-5.16 takes flattened positions ``h * side + w``."""
    if not isinstance(rotary, VisionRotaryEmbedding) and rotary.inv_freq.dim() == 2:
        positions = positions[:, 0] * side + positions[:, 1]
    return rotary(patch_embeds, positions)
