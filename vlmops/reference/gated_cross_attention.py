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


def gated_cross_attention_backward(grad_out, q, k, v, out, lse, kv_start, kv_end, gate=None, softmax_scale=None):
    """The op's backward, (grad_q, grad_k, grad_v, grad_gate): autograd of :func:`gated_cross_attention`
    in its accumulation dtype (out and lse, saved by the forward, are recomputed). grad_gate has gate's
    shape and dtype, or is an empty tensor of the accumulation dtype without a gate."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    tensors = (q, k, v) if gate is None else (q, k, v, gate)
    with torch.enable_grad():
        leaves = [t.detach().to(acc).requires_grad_() for t in tensors]
        gate_leaf = leaves[3] if gate is not None else None
        recomputed, _ = gated_cross_attention(*leaves[:3], kv_start, kv_end, gate_leaf, softmax_scale)
        grads = (
            torch.autograd.grad(recomputed, leaves, grad_out.to(acc), allow_unused=True)
            if recomputed.requires_grad
            else [None] * len(leaves)
        )  # no segment or row sees a key
    grads = [torch.zeros_like(t) if g is None else g.to(t.dtype) for g, t in zip(grads, tensors)]
    grad_gate = grads[3] if gate is not None else q.new_empty(0, dtype=acc)
    return grads[0], grads[1], grads[2], grad_gate


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


def openflamingo_block(state, x, media, media_locations, heads, only_attend_immediate_media, use_cached_media=False):
    """OpenFlamingo's ``GatedCrossAttentionBlock`` forward from its published definition, on a state
    dict with its parameter names; float64 dense masks.

    ``MaskedCrossAttention``: LayerNorm -> q = to_q(x) * dim_head^-0.5, (k, v) = to_kv(media) chunked,
    scores masked by the media-time rule with ``-finfo.max``, softmax, rows before any image zeroed
    in the immediate mode, then to_out. The block adds ``tanh(attn_gate)`` times that to x, then
    ``tanh(ff_gate) * FFW(x)`` with FFW = LayerNorm -> Linear -> GELU -> Linear.
    """
    import torch.nn.functional as F

    B, T_txt, dim = x.shape
    T_img, n = media.shape[1:3]
    inner = state["attn.to_q.weight"].shape[0]
    dim_head = inner // heads
    h = F.layer_norm(x, (dim,), state["attn.norm.weight"], state["attn.norm.bias"])
    q = (h @ state["attn.to_q.weight"].t()).view(B, T_txt, heads, dim_head).transpose(1, 2) * dim_head**-0.5
    k, v = (media.reshape(B, T_img * n, -1) @ state["attn.to_kv.weight"].t()).chunk(2, dim=-1)
    k, v = (t.reshape(B, T_img * n, heads, dim_head).transpose(1, 2) for t in (k, v))
    sim = q @ k.transpose(-1, -2)
    if media_locations is not None:
        if use_cached_media:
            text_time = media_locations.long().sum(-1, keepdim=True).expand(B, T_txt)
        else:
            text_time = media_locations.long().cumsum(-1)
        media_time = torch.arange(1, T_img + 1, device=x.device).repeat_interleave(n)
        if only_attend_immediate_media:
            mask = text_time[..., None] == media_time
        else:
            mask = text_time[..., None] >= media_time
        sim = sim.masked_fill(~mask[:, None], -torch.finfo(sim.dtype).max)
    sim = sim - sim.amax(dim=-1, keepdim=True)
    attn = sim.softmax(dim=-1)
    if media_locations is not None and only_attend_immediate_media:
        attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
    out = (attn @ v).transpose(1, 2).reshape(B, T_txt, inner) @ state["attn.to_out.weight"].t()
    x = out * torch.tanh(state["attn_gate"]) + x
    f = F.layer_norm(x, (dim,), state["ff.0.weight"], state["ff.0.bias"])
    f = F.gelu(f @ state["ff.1.weight"].t()) @ state["ff.3.weight"].t()
    return f * torch.tanh(state["ff_gate"]) + x
