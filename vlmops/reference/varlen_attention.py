"""Reference block-diagonal packed (varlen) attention: softmax attention within each segment.

Segment b holds queries cu_seqlens_q[b]:cu_seqlens_q[b+1] and keys cu_seqlens_k[b]:cu_seqlens_k[b+1];
query head h attends with key/value head h // (H // Hk) (grouped-query attention). A query whose
segment has no keys gets a zero output and a log-sum-exp of -inf. Computed in float64 for float64
inputs, else float32, one segment at a time (the oracle favours clarity over speed). The functions
have the signatures and outputs of the ops vlmops::varlen_attention and varlen_attention_backward.
"""

import torch


def varlen_attention(
    q, k, v, cu_seqlens_q, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, softmax_scale=None
):
    """q [Nq, H, D], k/v [Nk, Hk, D], cu_seqlens_* int [B + 1] (cu_seqlens_k None: q's) -> (out [Nq, H, D] in
    q's dtype, lse [H, Nq]). max_seqlen_q / max_seqlen_k are accepted for the op's signature and unused."""
    cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    Nq, H, D = q.shape
    group = H // k.shape[1]
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(Nq, H, D, dtype=acc, device=q.device)
    lse = torch.full((H, Nq), float("-inf"), dtype=acc, device=q.device)
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[b], bounds_q[b + 1], bounds_k[b], bounds_k[b + 1]
        if q1 == q0 or k1 == k0:
            continue
        qs = q[q0:q1].to(acc).transpose(0, 1)  # [H, Lq, D]
        ks = k[k0:k1].to(acc).transpose(0, 1).repeat_interleave(group, dim=0)
        vs = v[k0:k1].to(acc).transpose(0, 1).repeat_interleave(group, dim=0)
        scores = qs @ ks.transpose(1, 2) * scale
        lse[:, q0:q1] = torch.logsumexp(scores, dim=-1)
        out[q0:q1] = (torch.softmax(scores, dim=-1) @ vs).transpose(0, 1)
    return out.to(q.dtype), lse


def varlen_attention_backward(
    grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, softmax_scale=None
):
    """(grad_q, grad_k, grad_v) in q's dtype: autograd of :func:`varlen_attention` in its accumulation
    dtype (out and lse, saved by the forward, are recomputed)."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        leaves = [t.detach().to(acc).requires_grad_() for t in (q, k, v)]
        recomputed, _ = varlen_attention(*leaves, cu_seqlens_q, cu_seqlens_k, softmax_scale=softmax_scale)
        grads = (
            torch.autograd.grad(recomputed, leaves, grad_out.to(acc), allow_unused=True)
            if recomputed.requires_grad
            else [None] * len(leaves)
        )  # no segment or row sees a key
    return tuple(torch.zeros_like(t) if g is None else g.to(t.dtype) for g, t in zip(grads, (q, k, v)))
