"""Reference multi-axis RoPE, written from the semantics of transformers' rotary embeddings.

Pair i in [0, P) (P = rotary_dim / 2) of every head is the half-split pair (x[i], x[i + P]) of
`rotate_half`; it turns by the angle `positions[b, s, axis[i]] * inv_freq[i]`. This oracle builds the
cos/sin tables the fused kernels never write, exactly as transformers does:

- fp32_math=True (Qwen2/2.5/3-VL vision, `apply_rotary_pos_emb_vision`): q and k are upcast to float32,
  rotated with float32 cos/sin, and cast back.
- fp32_math=False (Pixtral, Qwen-VL text M-RoPE, `apply_rotary_pos_emb`): cos/sin are cast to the
  activation dtype and the rotation runs in it.

float64 tensors are rotated in float64 (angles too), whichever convention. `rope_` is the in-place op.
"""

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(positions, axis, inv_freq, dtype=torch.float32):
    """cos, sin [..., P] of the angles positions[..., axis[i]] * inv_freq[i], in `dtype` math
    (positions [B, S, A] or packed [N, A])."""
    pos = positions.gather(-1, axis.expand(*positions.shape[:-1], -1))
    angle = pos.to(dtype) * inv_freq.to(dtype)
    return angle.cos(), angle.sin()


def rope(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
    """q [B, S, H, D], k [B, S, H_kv, D], positions [B, S, A] (or packed: q [N, H, D], k [N, H_kv, D],
    positions [N, A]), axis [P], inv_freq [P] -> (q_out, k_out).

    inverse=True rotates by the negated angle (the backward of the forward rotation).
    """
    math_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions, axis, inv_freq, math_dtype)
    if inverse:
        sin = -sin
    rotary_dim = 2 * axis.shape[0]

    def rotate(x):
        compute_dtype = math_dtype if (fp32_math or x.dtype == torch.float64) else x.dtype
        c = torch.cat((cos, cos), dim=-1).unsqueeze(-2).to(compute_dtype)
        s = torch.cat((sin, sin), dim=-1).unsqueeze(-2).to(compute_dtype)
        xr = x[..., :rotary_dim].to(compute_dtype)
        y = (xr * c + rotate_half(xr) * s).to(x.dtype)
        return torch.cat((y, x[..., rotary_dim:]), dim=-1)

    return rotate(q), rotate(k)


def rope_(q, k, positions, axis, inv_freq, fp32_math, inverse=False) -> None:
    """The in-place op: rope's results written into q and k."""
    q_out, k_out = rope(q, k, positions, axis, inv_freq, fp32_math, inverse)
    q.copy_(q_out)
    k.copy_(k_out)
