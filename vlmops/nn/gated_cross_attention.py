"""Gated cross-attention modules: Flamingo's GATED XATTN-DENSE block (OpenFlamingo's parameter names)
and a drop-in for transformers' Mllama (Llama 3.2 Vision) text cross-attention.

Both run ``vlmops.gated_cross_attention`` on key ranges instead of a dense ``[B, Lq, Lk]`` mask.
"""

import torch
from torch import nn

from vlmops.models.flamingo import flamingo_kv_ranges
from vlmops.models.mllama import mllama_kv_ranges_from_additive_mask
from vlmops.ops.gated_cross_attention import gated_cross_attention


def _full_ranges(B: int, Lq: int, Lk: int, device):
    return (
        torch.zeros(B, Lq, dtype=torch.int32, device=device),
        torch.full((B, Lq), Lk, dtype=torch.int32, device=device),
    )


class MaskedCrossAttention(nn.Module):
    """OpenFlamingo's ``MaskedCrossAttention`` parameters: ``norm`` (LayerNorm(dim)), ``to_q``,
    ``to_kv`` (dim_visual -> 2 * heads * dim_head, keys then values), ``to_out``; no biases."""

    def __init__(
        self, *, dim: int, dim_visual: int, dim_head: int = 64, heads: int = 8, only_attend_immediate_media: bool = True
    ):
        super().__init__()
        inner = dim_head * heads
        self.heads, self.dim_head = heads, dim_head
        self.only_attend_immediate_media = only_attend_immediate_media
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def attend(self, x, media, media_locations=None, use_cached_media=False, gate=None):
        """The gated attention output before ``to_out``: ``[B, T_txt, heads * dim_head]``."""
        B, T_txt = x.shape[:2]
        T_img, n = media.shape[1:3]
        q = self.to_q(self.norm(x)).view(B, T_txt, self.heads, self.dim_head)
        kv = self.to_kv(media.reshape(B, T_img * n, -1)).view(B, T_img * n, 2, self.heads, self.dim_head)
        if media_locations is None:
            start, end = _full_ranges(B, T_txt, T_img * n, x.device)
        else:
            start, end = flamingo_kv_ranges(
                media_locations, n, self.only_attend_immediate_media, num_media=T_img, use_cached_media=use_cached_media
            )
        out = gated_cross_attention(q, kv[:, :, 0], kv[:, :, 1], start, end, gate)
        return out.reshape(B, T_txt, -1)

    def forward(self, x, media, media_locations=None, use_cached_media=False):
        return self.to_out(self.attend(x, media, media_locations, use_cached_media))


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's GATED XATTN-DENSE block, loadable from an OpenFlamingo ``GatedCrossAttentionBlock``
    state dict unchanged (``attn.{norm,to_q,to_kv,to_out}``, ``attn_gate``, ``ff.{0,1,3}``, ``ff_gate``):

        x = x + tanh(attn_gate) * to_out(MaskedCrossAttention(LayerNorm(x), media))
        x = x + tanh(ff_gate) * FFW(x),   FFW = LayerNorm -> Linear -> GELU -> Linear

    ``tanh(attn_gate)`` is applied in the attention kernel's epilogue (it commutes with the bias-free
    ``to_out``) and the residual is added by the output projection's GEMM (``torch.addmm``).

    forward(x ``[B, T_txt, dim]``, media ``[B, T_img, n, dim_visual]``, media_locations bool
    ``[B, T_txt]`` (True at ``<image>`` tokens; None: every token sees every image),
    use_cached_media) -> ``[B, T_txt, dim]``. Text before the first image gets no attention output.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_visual: int,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: int = 4,
        only_attend_immediate_media: bool = True,
    ):
        super().__init__()
        self.attn = MaskedCrossAttention(
            dim=dim,
            dim_visual=dim_visual,
            dim_head=dim_head,
            heads=heads,
            only_attend_immediate_media=only_attend_immediate_media,
        )
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        inner = int(dim * ff_mult)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
        )
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x, media, media_locations=None, use_cached_media=False):
        dim = x.shape[-1]
        gated = self.attn.attend(x, media, media_locations, use_cached_media, gate=self.attn_gate)
        x = torch.addmm(x.reshape(-1, dim), gated.reshape(-1, gated.shape[-1]), self.attn.to_out.weight.t())
        x = x.view(gated.shape[:2] + (dim,))
        return torch.addcmul(x, self.ff(x), torch.tanh(self.ff_gate))


class MllamaCrossAttention(nn.Module):
    """Drop-in for transformers' ``MllamaTextCrossAttention``: same submodules (``q_proj``, ``k_proj``,
    ``v_proj``, ``o_proj``, ``q_norm``, ``k_norm``), same call and outputs, including the caching of
    the projected, normed K/V (``cache.update`` on a new image, read back on decode steps).

    Visibility comes from the additive ``attention_mask`` ``[B, 1, Lq, Lk]`` transformers passes (read
    one key per tile: ``tokens_per_tile`` is the vision tower's tokens per tile, 1601 for Llama 3.2
    Vision; 1 reads every key), or from key ranges ``(kv_start, kv_end)`` (int32 ``[B, Lq]``,
    ``vlmops.mllama_kv_ranges``) passed as ``kv_ranges`` or in place of ``attention_mask``: the
    ``MllamaModel`` forward that ``patch_model`` installs passes them there, through transformers'
    decoder layers, instead of the dense mask.

    Full-text-row mask (rows that see no image: text before the first ``<|image|>``):

    - ``placement="transformers"`` (default, parity): such rows attend to every key, as transformers
      computes (its ``_prepare_cross_attention_mask`` zeroes their additive mask), and the decoder
      layer masks them only after the MLP.
    - ``placement="meta"``: Meta's reference placement, the attention output of such rows is zero
      before ``o_proj``. It needs the rows: pass ``full_text_row_masked_out_mask`` ``[B, 1, Lq, 1]``
      (transformers' second output of ``_prepare_cross_attention_mask``) or ``kv_ranges`` built with
      ``masked_rows="empty"``; transformers' decoder layer passes neither, so patched models keep the
      default.
    """

    def __init__(
        self,
        q_proj,
        k_proj,
        v_proj,
        o_proj,
        q_norm,
        k_norm,
        *,
        num_heads: int,
        num_key_value_heads: int,
        head_dim: int,
        layer_idx: int,
        tokens_per_tile: int = 1,
        placement: str = "transformers",
        config=None,
    ):
        super().__init__()
        if placement not in ("transformers", "meta"):
            raise ValueError(f"MllamaCrossAttention: placement must be 'transformers' or 'meta', got {placement!r}")
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q_proj, k_proj, v_proj, o_proj
        self.q_norm, self.k_norm = q_norm, k_norm
        self.num_heads, self.num_key_value_heads, self.head_dim = num_heads, num_key_value_heads, head_dim
        self.layer_idx = layer_idx
        self.tokens_per_tile = tokens_per_tile
        self.placement = placement
        self.config = config

    @classmethod
    def from_mllama(cls, attn: nn.Module, tokens_per_tile: int = 1, placement: str = "transformers"):
        """Wraps the submodules of a ``MllamaTextCrossAttention`` (shared, not copied)."""
        return cls(
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
            attn.q_norm,
            attn.k_norm,
            num_heads=attn.num_heads,
            num_key_value_heads=attn.num_key_value_heads,
            head_dim=attn.head_dim,
            layer_idx=attn.layer_idx,
            tokens_per_tile=tokens_per_tile,
            placement=placement,
            config=attn.config,
        )

    def forward(
        self,
        hidden_states,
        cross_attention_states=None,
        cache=None,
        attention_mask=None,
        use_cache=None,
        kv_ranges=None,
        full_text_row_masked_out_mask=None,
        past_key_values=None,
        **kwargs,
    ):
        cache = past_key_values if cache is None else cache
        B, Lq, _ = hidden_states.shape
        q = self.q_norm(self.q_proj(hidden_states).view(B, Lq, self.num_heads, self.head_dim))
        if cross_attention_states is not None:
            k = self.k_norm(self.k_proj(cross_attention_states).view(B, -1, self.num_key_value_heads, self.head_dim))
            v = self.v_proj(cross_attention_states).view(B, -1, self.num_key_value_heads, self.head_dim)
            if cache is not None:  # the cache holds transformers' [B, Hk, Lk, D]
                k, v = cache.update(k.transpose(1, 2), v.transpose(1, 2), self.layer_idx, kwargs=kwargs)
                k, v = k.transpose(1, 2), v.transpose(1, 2)
        else:
            layer = cache.layers[self.layer_idx]
            k, v = layer.keys.transpose(1, 2), layer.values.transpose(1, 2)
        Lk = k.shape[1]
        if kv_ranges is None and isinstance(attention_mask, tuple):
            kv_ranges = attention_mask
        if kv_ranges is not None:
            start, end = kv_ranges
        elif attention_mask is not None:
            start, end = mllama_kv_ranges_from_additive_mask(attention_mask, self.tokens_per_tile)
        else:
            start, end = _full_ranges(B, Lq, Lk, q.device)
        if self.placement == "meta":
            if full_text_row_masked_out_mask is not None:
                seen = full_text_row_masked_out_mask.reshape(B, Lq) != 0
                start, end = torch.where(seen, start, 0), torch.where(seen, end, 0)
            elif kv_ranges is None:
                raise ValueError(
                    "MllamaCrossAttention(placement='meta') needs full_text_row_masked_out_mask or kv_ranges: "
                    "transformers' additive mask does not tell which rows see no image"
                )
        out = gated_cross_attention(q, k, v, start, end, softmax_scale=self.head_dim**-0.5)
        return self.o_proj(out.reshape(B, Lq, -1)), None
