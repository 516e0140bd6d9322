"""Drop-in rotary embeddings: 2D vision RoPE (Qwen2/2.5/3-VL, Pixtral) and 3D text M-RoPE (Qwen2/2.5-VL
sections, Qwen3-VL interleaved).

Each module keeps the ``inv_freq`` / ``original_inv_freq`` buffers of the transformers module it
replaces and its ``forward(x, position_ids) -> (cos, sin)``, so it can stand in anywhere. The fast
path does not use cos/sin at all: :meth:`VisionRotaryEmbedding.rope` returns a :class:`VisionRope`
(positions + per-pair tables) that :class:`vlmops.nn.PackedVisionAttention` hands to
``vlmops.apply_rope``, which computes the angles in registers.
"""

from typing import NamedTuple

import torch
from torch import nn

from vlmops.models.pixtral import pixtral_rope_tables
from vlmops.models.qwen_vl import interleaved_mrope_tables, mrope_tables, qwen_vision_rope_tables
from vlmops.ops.rope import RopeTables

_CONVENTIONS = ("qwen", "pixtral")


class VisionRope(NamedTuple):
    """What a packed vision attention layer needs to rotate q and k: ``apply_rope(q, k, positions, *tables)``."""

    positions: torch.Tensor  # [N, 2] int64 (h, w) of every packed token
    tables: RopeTables


def _cos_sin(positions: torch.Tensor, tables: RopeTables, scaling: float):
    """transformers' cos/sin ``[..., 2P]`` from the per-pair tables (same fp32 products, so bit-identical)."""
    angle = positions[..., tables.axis].float() * tables.inv_freq
    angle = torch.cat((angle, angle), dim=-1)
    return angle.cos() * scaling, angle.sin() * scaling


class VisionRotaryEmbedding(nn.Module):
    """2D axial RoPE of the Qwen2-VL / Qwen2.5-VL / Qwen3-VL (``convention="qwen"``) and Pixtral
    (``convention="pixtral"``) vision towers.

    Buffers: ``inv_freq`` (Qwen: ``[head_dim/4]``; Pixtral: ``[head_dim/2]`` = cat(inv[0::2], inv[1::2]))
    and ``original_inv_freq``, non-persistent as in transformers.
    """

    def __init__(self, inv_freq: torch.Tensor, convention: str, attention_scaling: float = 1.0):
        super().__init__()
        if convention not in _CONVENTIONS:
            raise ValueError(
                f"vlmops.nn.VisionRotaryEmbedding: convention must be one of {_CONVENTIONS}, got {convention!r}"
            )
        self.convention = convention
        self.attention_scaling = attention_scaling
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)
        self.replaces = ""

    @classmethod
    def from_module(cls, module: nn.Module, convention: str) -> "VisionRotaryEmbedding":
        """Takes over the buffers of a transformers ``*VisionRotaryEmbedding`` (shared, not copied)."""
        rope = cls(module.inv_freq, convention, module.attention_scaling)
        rope.original_inv_freq = module.original_inv_freq
        rope.replaces = type(module).__name__
        return rope

    def tables(self) -> RopeTables:
        if self.attention_scaling != 1.0:
            raise ValueError(
                f"vlmops.nn.VisionRotaryEmbedding: attention_scaling {self.attention_scaling} is not supported"
            )
        builder = qwen_vision_rope_tables if self.convention == "qwen" else pixtral_rope_tables
        return builder(self.inv_freq.float())

    def rope(self, positions: torch.Tensor) -> VisionRope:
        """positions ``[N, 2]`` (h, w) int -> the :class:`VisionRope` of a packed sequence."""
        return VisionRope(positions, self.tables())

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        """transformers' interface: position_ids ``[N, 2]`` -> ``(cos, sin)`` ``[N, head_dim]``
        (float32 for Qwen, x's dtype for Pixtral)."""
        builder = qwen_vision_rope_tables if self.convention == "qwen" else pixtral_rope_tables
        cos, sin = _cos_sin(position_ids.to(x.device), builder(self.inv_freq.float()), self.attention_scaling)
        if self.convention == "pixtral":
            return cos.to(x.dtype), sin.to(x.dtype)
        return cos, sin


class MRope(NamedTuple):
    """What a text attention layer needs to rotate q and k by M-RoPE: ``apply_rope(q, k, positions, *tables)``."""

    positions: torch.Tensor  # [B, S, 3] int (t, h, w) of every token: transformers' position_ids [3, B, S] permuted
    tables: RopeTables


_OUTPUTS = ("cos_sin", "rope")


class MRotaryEmbedding(nn.Module):
    """3D text M-RoPE of Qwen2-VL / Qwen2.5-VL (``interleaved=False``, contiguous mrope sections) and
    Qwen3-VL (``interleaved=True``), for the default rope type.

    Buffers: ``inv_freq [head_dim/2]`` and ``original_inv_freq`` (non-persistent, as in transformers) and
    ``axis [head_dim/2]``, the positions column (t, h, w) each rotary pair reads, built once from
    ``mrope_section``. ``tables()`` gives the ``vlmops.apply_rope`` tables; ``rope(position_ids)`` the
    :class:`MRope` of a batch (positions: transformers' ``position_ids [3, B, S]`` as
    ``position_ids.permute(1, 2, 0)``, a view). ``forward`` is transformers' ``(cos, sin)`` interface
    (``output="cos_sin"``), or returns that :class:`MRope` (``output="rope"``) for attention layers that
    rotate with ``vlmops.apply_rope``, so no cos/sin table is ever built.
    """

    def __init__(
        self,
        inv_freq: torch.Tensor,
        mrope_section,
        interleaved: bool,
        attention_scaling: float = 1.0,
        output: str = "cos_sin",
    ):
        super().__init__()
        if output not in _OUTPUTS:
            raise ValueError(f"vlmops.nn.MRotaryEmbedding: output must be one of {_OUTPUTS}, got {output!r}")
        if output == "rope" and attention_scaling != 1.0:
            raise ValueError(f"vlmops.nn.MRotaryEmbedding: attention_scaling {attention_scaling} is not supported")
        self.mrope_section = list(mrope_section)
        self.interleaved = interleaved
        self.attention_scaling = attention_scaling
        self.output = output
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)
        builder = interleaved_mrope_tables if interleaved else mrope_tables
        # Built once (validating mrope_section against inv_freq): the builders read the sections on the host.
        self.axis = nn.Buffer(builder(inv_freq.float(), self.mrope_section).axis, persistent=False)
        self.replaces = ""

    @classmethod
    def from_module(
        cls, module: nn.Module, interleaved: bool, mrope_section=None, output: str = "cos_sin"
    ) -> "MRotaryEmbedding":
        """Takes over the buffers of ``Qwen2VLRotaryEmbedding`` / ``Qwen2_5_VLRotaryEmbedding`` /
        ``Qwen3VLTextRotaryEmbedding`` (default rope type only). ``mrope_section``: the module's own when
        not given."""
        if module.rope_type != "default":
            raise ValueError(
                f"vlmops.nn.MRotaryEmbedding: rope_type {module.rope_type!r} is not supported (default only)"
            )
        sections = module.mrope_section if mrope_section is None else mrope_section
        rope = cls(module.inv_freq, sections, interleaved, module.attention_scaling, output)
        rope.original_inv_freq = module.original_inv_freq
        rope.replaces = type(module).__name__
        return rope

    def tables(self) -> RopeTables:
        """The per-pair tables; inv_freq read as float32 on every call, as transformers reads its buffer."""
        return RopeTables(self.axis, self.inv_freq.float(), False)

    def rope(self, position_ids: torch.Tensor) -> MRope:
        """position_ids ``[3, B, S]`` (or ``[B, S]``, the same for t, h and w) -> the :class:`MRope` of the batch."""
        return MRope(position_ids.expand(3, -1, -1).permute(1, 2, 0), self.tables())

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        """position_ids ``[3, B, S]`` (or ``[B, S]``) -> ``(cos, sin)`` ``[B, S, head_dim]`` in x's dtype, or
        (``output="rope"``) the :class:`MRope` of the batch."""
        if self.output == "rope":
            return self.rope(position_ids)
        positions = position_ids.expand(3, -1, -1).permute(1, 2, 0)
        cos, sin = _cos_sin(positions, self.tables(), self.attention_scaling)
        return cos.to(x.dtype), sin.to(x.dtype)
