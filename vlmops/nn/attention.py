"""Drop-in packed vision attention (Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision blocks, Pixtral) and the
per-tower metadata it needs, built once per forward on the inputs' device.

transformers runs these layers as one SDPA call per image (Qwen: ``lengths.tolist()`` then a Python
loop, every layer) or as SDPA with a dense ``[N, N]`` block-diagonal mask (Pixtral). Here every
layer is qkv projection -> ``vlmops.apply_rope`` (in place on the projection's output) ->
``vlmops.varlen_attention`` over ``cu_seqlens`` -> output projection, with no host sync.
"""

import torch
import torch.nn.functional as F
from torch import nn

from vlmops.nn.rope import VisionRope
from vlmops.ops.rope import apply_rope
from vlmops.ops.varlen_attention import varlen_attention


def vision_cu_seqlens(grid_thw: torch.Tensor, num_tokens: int, min_frame_tokens: int = 1) -> torch.Tensor:
    """Per-frame segment boundaries of a packed Qwen2/2.5/3-VL vision sequence, without a host sync.

    Every frame (``t`` per row of grid_thw) of ``h*w`` tokens is one attention segment, as in
    transformers' ``get_vision_cu_seqlens``. The number of frames is data-dependent, so the result
    has a fixed length ``num_tokens // min_frame_tokens + 1`` (an upper bound on the frame count,
    given each frame has at least ``min_frame_tokens`` tokens, e.g. ``spatial_merge_size**2``): the
    real boundaries come first, then ``num_tokens`` repeats (zero-length segments, which
    ``varlen_attention`` skips). ``torch.unique_consecutive`` of it is transformers' ``cu_seqlens``.

    Args:
        grid_thw: ``[n, 3]`` int (t, h, w) on any device.
        num_tokens: ``sum(t*h*w)``, the packed length (``hidden_states.shape[0]``).
        min_frame_tokens: a lower bound on ``h*w`` of every row.

    Returns:
        int32 ``[num_tokens // min_frame_tokens + 1]`` on grid_thw's device.
    """
    grid = grid_thw.long()
    frames, frame_tokens = grid[:, 0], grid[:, 1] * grid[:, 2]
    frames_end = frames.cumsum(0)
    image_tokens = frames * frame_tokens
    slot = torch.arange(num_tokens // min_frame_tokens, device=grid.device)
    image = torch.searchsorted(frames_end, slot, right=True).clamp_(max=grid.shape[0] - 1)
    frame = slot - (frames_end - frames)[image]
    end = (image_tokens.cumsum(0) - image_tokens)[image] + (frame + 1) * frame_tokens[image]
    end = torch.where(slot < frames_end[-1], end, num_tokens)
    return F.pad(end, (1, 0)).to(torch.int32)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_cos_sin(q, k, cos, sin, fp32_math: bool):
    """RoPE from transformers' (cos, sin) ``[N, D]``, for a tower whose rotary module was not patched
    (``patch_model(..., ops=["attention"])``): Qwen rotates in float32, Pixtral in the activation dtype."""
    dtype = q.dtype
    if fp32_math:
        q, k, cos, sin = q.float(), k.float(), cos.float(), sin.float()
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


class PackedVisionAttention(nn.Module):
    """Self-attention of a packed vision sequence: every segment of ``cu_seqlens`` (an image, a video
    frame or a Qwen2.5-VL window) attends only to itself.

    Two drop-in forms that keep the replaced module's parameter names:

    - :meth:`from_qwen` (``VisionAttention`` / ``Qwen2_5_VLVisionAttention`` / ``Qwen3VLVisionAttention``):
      ``qkv``, ``proj``; ``forward(hidden_states [N, dim], cu_seqlens, position_embeddings, max_seqlen)
      -> [N, dim]``.
    - :meth:`from_pixtral` (``PixtralAttention``): ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``;
      ``forward(hidden_states [1, N, dim], attention_mask=None, position_embeddings, cu_seqlens=...)
      -> ([1, N, dim], None)``.

    ``position_embeddings`` is a :class:`vlmops.nn.VisionRope` (``vlmops.apply_rope``, in place on the
    projection's output when no gradient is needed) or transformers' ``(cos, sin)``. ``cu_seqlens``:
    int32 segment boundaries; ``max_seqlen`` is accepted for signature compatibility and not needed
    (nothing reads lengths on the host).
    """

    def __init__(self, num_heads: int, fused_qkv: bool, scaling: float, **projections: nn.Module):
        super().__init__()
        names = ("qkv", "proj") if fused_qkv else ("q_proj", "k_proj", "v_proj", "o_proj")
        if sorted(projections) != sorted(names):
            raise ValueError(
                f"vlmops.nn.PackedVisionAttention: expected projections {names}, got {sorted(projections)}"
            )
        for name, module in projections.items():  # in the replaced module's order: same state_dict order
            setattr(self, name, module)
        self.num_heads = num_heads
        self.fused_qkv = fused_qkv
        self.scaling = scaling
        self.replaces = ""

    @classmethod
    def from_qwen(cls, attn: nn.Module) -> "PackedVisionAttention":
        """Wraps the ``qkv``/``proj`` Linears of a Qwen2/2.5/3-VL vision attention (shared, not copied)."""
        module = cls(attn.num_heads, True, attn.scaling, qkv=attn.qkv, proj=attn.proj)
        module.replaces = type(attn).__name__
        return module

    @classmethod
    def from_pixtral(cls, attn: nn.Module) -> "PackedVisionAttention":
        """Wraps the four projections of a ``PixtralAttention`` (shared, not copied)."""
        projections = {
            name: child for name, child in attn.named_children() if name in ("q_proj", "k_proj", "v_proj", "o_proj")
        }
        module = cls(attn.num_heads, False, attn.scaling, **projections)
        module.replaces = type(attn).__name__
        return module

    def _attend(self, q, k, v, cu_seqlens, position_embeddings):
        if isinstance(position_embeddings, VisionRope):
            positions, tables = position_embeddings
            inplace = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))
            q, k = apply_rope(q, k, positions, *tables, layout="nhd", inplace=inplace)
        elif position_embeddings is not None:
            q, k = _rotate_cos_sin(q, k, *position_embeddings, fp32_math=self.fused_qkv)
        return varlen_attention(q, k, v, cu_seqlens, softmax_scale=self.scaling)

    def forward(
        self, hidden_states, cu_seqlens=None, position_embeddings=None, max_seqlen=None, attention_mask=None, **kwargs
    ):
        if cu_seqlens is None:
            raise ValueError("vlmops.nn.PackedVisionAttention: cu_seqlens is required (the packed segment boundaries)")
        if attention_mask is not None:
            raise ValueError(
                "vlmops.nn.PackedVisionAttention: segments come from cu_seqlens; attention_mask must be None"
            )
        if self.fused_qkv:
            N = hidden_states.shape[0]
            q, k, v = self.qkv(hidden_states).view(N, 3, self.num_heads, -1).unbind(1)
            out = self._attend(q, k, v, cu_seqlens, position_embeddings)
            return self.proj(out.view(N, -1))
        batch, N, _ = hidden_states.shape
        if batch != 1:
            raise ValueError(
                "vlmops.nn.PackedVisionAttention: Pixtral packs all images into one sequence [1, N, dim], got "
                f"batch {batch}"
            )
        q, k, v = (p(hidden_states[0]).view(N, self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = self._attend(q, k, v, cu_seqlens, position_embeddings)
        return self.o_proj(out.view(1, N, -1)), None
