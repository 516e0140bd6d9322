"""Reference gated cross-attention and the visibility rules of the models that use it.

``gated_cross_attention`` materializes the dense ``[B, Lq, Lk]`` visibility mask from the key ranges
and runs plain softmax attention on it (the oracle favours clarity over speed). The other functions
restate the models' published masking rules as dense boolean masks, so tests can check the range
builders and the op against them.
"""

import torch


def dense_mask(kv_start, kv_end, Lk):
    """kv_start/kv_end [B, Lq] -> bool [B, Lq, Lk]: row i sees key j iff kv_start[i] <= j < kv_end[i]."""
    keys = torch.arange(Lk, device=kv_start.device)
    return (keys >= kv_start[..., None].long()) & (keys < kv_end[..., None].long())


def masked_attention(q, k, v, mask, gate=None, softmax_scale=None):
    """q [B, Lq, H, D], k/v [B, Lk, Hk, D], mask bool [B, Lq, Lk] -> (out [B, Lq, H, D], lse [B, H, Lq]).

    Rows that see no key get a zero output and a log-sum-exp of -inf; the output is multiplied by
    ``tanh(gate)`` when a gate is given. Computed in float64 for float64 inputs, else float32.
    """
    B, Lq, H, D = q.shape
    group = H // k.shape[2]
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qs = q.to(acc).transpose(1, 2)  # [B, H, Lq, D]
    ks = k.to(acc).transpose(1, 2).repeat_interleave(group, dim=1)
    vs = v.to(acc).transpose(1, 2).repeat_interleave(group, dim=1)
    scores = (qs @ ks.transpose(-1, -2) * scale).masked_fill(~mask[:, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # -inf on rows that see nothing
    probs = torch.exp(scores - lse[..., None].masked_fill(lse[..., None] == float("-inf"), 0.0))
    out = (probs @ vs).transpose(1, 2)
    if gate is not None:
        out = out * torch.tanh(gate.to(acc)).reshape(())
    return out.to(q.dtype), lse


def gated_cross_attention(q, k, v, kv_start, kv_end, gate=None, softmax_scale=None):
    """The op's semantics: row i of batch b sees keys [kv_start[b, i], kv_end[b, i])."""
    return masked_attention(q, k, v, dense_mask(kv_start, kv_end, k.shape[1]), gate, softmax_scale)


def openflamingo_mask(media_locations, num_media, tokens_per_image, only_attend_immediate_media):
    """OpenFlamingo's MaskedCrossAttention visibility, bool [B, Lq, num_media * tokens_per_image].

    Its definition: ``text_time = cumsum(media_locations)`` (the ``<image>`` token itself follows its
    image), ``media_time = 1..T`` repeated per media token, and a text token sees a media token iff
    ``text_time == media_time`` (only_attend_immediate_media) or ``text_time >= media_time``.
    """
    text_time = media_locations.long().cumsum(-1)
    media_time = torch.arange(1, num_media + 1, device=media_locations.device).repeat_interleave(tokens_per_image)
    if only_attend_immediate_media:
        return text_time[..., None] == media_time
    return text_time[..., None] >= media_time


def mllama_mask(cross_attention_mask, tokens_per_tile):
    """transformers' Mllama visibility, bool [B, Lq, n_images * n_tiles * tokens_per_tile]: a row sees
    the tokens of every (image, tile) whose ``cross_attention_mask`` entry is non-zero (before the
    full-text-row correction of ``_prepare_cross_attention_mask``)."""
    B, Lq = cross_attention_mask.shape[:2]
    return (cross_attention_mask != 0).reshape(B, Lq, -1).repeat_interleave(tokens_per_tile, dim=-1)
