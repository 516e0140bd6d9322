"""Multi-axis rotary position embedding: 2D vision RoPE (Qwen2/2.5/3-VL, Pixtral), 3D M-RoPE
(Qwen2/2.5-VL sections, Qwen3-VL interleaved) and 1D RoPE, as one op.

Every variant is a pair of per-pair tables of length P = rotary_dim / 2: `axis[i]` (which column of
the integer positions pair i reads) and `inv_freq[i]`. Pair i of each head, the half-split pair
(x[i], x[i + P]) of transformers' `rotate_half`, turns by `positions[token, axis[i]] * inv_freq[i]`.
The kernels compute cos/sin in registers from that product and rotate q and k in the same pass; no
cos/sin table is ever written. The table builders below give (axis, inv_freq, fp32_math) for each
model family; the position builders give the positions, as device tensor code.
"""

from typing import NamedTuple

import torch

from vlmops import _native, reference
from vlmops.ops import KERNEL_OWNERS, cuda_backend
from vlmops.ops._checks import check_int, check_same_device, check_tensor

__all__ = [
    "RopeTables",
    "apply_rope",
    "rope_inv_freq",
    "rope_1d_tables",
    "qwen_vision_rope_tables",
    "pixtral_rope_tables",
    "mrope_tables",
    "interleaved_mrope_tables",
    "vision_rope_positions",
    "pixtral_rope_positions",
    "mrope_position_ids",
]

_LAYOUTS = ("nhd", "bshd", "bhsd")
_INT_DTYPES = (torch.int64, torch.int32)


class RopeTables(NamedTuple):
    """The per-pair tables of one RoPE convention: `apply_rope(q, k, positions, *tables)`."""

    axis: torch.Tensor  # [P] int64, which positions column each pair reads
    inv_freq: torch.Tensor  # [P] float32
    fp32_math: bool  # float32 math (Qwen vision) or activation-dtype cos/sin (Pixtral, text M-RoPE)


def rope_inv_freq(dim: int, theta: float, device=None) -> torch.Tensor:
    """``1 / theta**(arange(0, dim, 2) / dim)`` in float32, the expression transformers' default and
    axial rope initializers evaluate (so the values are bit-identical). [dim // 2]."""
    check_int("rope_inv_freq", "dim", dim, minimum=2)
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))


def _check_inv_freq(fn: str, inv_freq) -> None:
    check_tensor(fn, "inv_freq", inv_freq, dtypes=(torch.float32,), ndim=1)
    if inv_freq.shape[0] < 1:
        raise ValueError(f"vlmops.{fn}: inv_freq must not be empty")


def rope_1d_tables(inv_freq: torch.Tensor, fp32_math: bool = False) -> RopeTables:
    """Plain 1D RoPE (Llama's `apply_rotary_pos_emb`): every pair reads axis 0. inv_freq [rotary_dim/2]."""
    _check_inv_freq("rope_1d_tables", inv_freq)
    axis = torch.zeros(inv_freq.shape[0], dtype=torch.long, device=inv_freq.device)
    return RopeTables(axis, inv_freq, fp32_math)


def qwen_vision_rope_tables(inv_freq: torch.Tensor) -> RopeTables:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision tower (`*VisionRotaryEmbedding` + `apply_rotary_pos_emb_vision`).

    inv_freq: the module's buffer, [head_dim/4]. Pairs [0, head_dim/4) read axis 0 (h) with inv_freq[i],
    pairs [head_dim/4, head_dim/2) read axis 1 (w) with inv_freq[i - head_dim/4]; float32 math.
    Positions: [N, 2] (h, w), e.g. from :func:`vision_rope_positions`.
    """
    _check_inv_freq("qwen_vision_rope_tables", inv_freq)
    n = inv_freq.shape[0]
    axis = torch.arange(2, device=inv_freq.device).repeat_interleave(n)
    return RopeTables(axis, torch.cat((inv_freq, inv_freq)), True)


def pixtral_rope_tables(inv_freq: torch.Tensor) -> RopeTables:
    """Pixtral vision tower (`PixtralVisionRotaryEmbedding`): inv_freq is the module's buffer
    [head_dim/2] = cat(inv[0::2], inv[1::2]); its first half turns with h, its second with w.
    cos/sin are rounded to the activation dtype (fp32_math=False). Positions: [N, 2] (h, w), e.g.
    from :func:`pixtral_rope_positions`."""
    _check_inv_freq("pixtral_rope_tables", inv_freq)
    n = inv_freq.shape[0]
    if n % 2:
        raise ValueError(f"vlmops.pixtral_rope_tables: inv_freq must have an even length (h and w halves), got {n}")
    axis = torch.arange(2, device=inv_freq.device).repeat_interleave(n // 2)
    return RopeTables(axis, inv_freq, False)


def _check_sections(fn: str, inv_freq, mrope_section) -> list:
    _check_inv_freq(fn, inv_freq)
    sections = list(mrope_section)
    if len(sections) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sections):
        raise ValueError(f"vlmops.{fn}: mrope_section must be 3 non-negative ints (t, h, w), got {mrope_section!r}")
    return sections


def mrope_tables(inv_freq: torch.Tensor, mrope_section) -> RopeTables:
    """Qwen2-VL / Qwen2.5-VL text M-RoPE (`Qwen2VLRotaryEmbedding`, mrope_section e.g. [16, 24, 24]):
    pair i keeps inv_freq[i] and reads the axis (t, h, w) of the section it falls in.
    inv_freq [head_dim/2] with sum(mrope_section) == head_dim/2; cos/sin in the activation dtype.
    Positions: [B, S, 3], e.g. transformers' position_ids [3, B, S] as ``position_ids.permute(1, 2, 0)``."""
    fn = "mrope_tables"
    sections = _check_sections(fn, inv_freq, mrope_section)
    if sum(sections) != inv_freq.shape[0]:
        raise ValueError(f"vlmops.{fn}: sum(mrope_section) = {sum(sections)} must equal len(inv_freq) = {inv_freq.shape[0]}")
    axis = torch.repeat_interleave(torch.arange(3, device=inv_freq.device), torch.tensor(sections, device=inv_freq.device))
    return RopeTables(axis, inv_freq, False)


def interleaved_mrope_tables(inv_freq: torch.Tensor, mrope_section) -> RopeTables:
    """Qwen3-VL text M-RoPE (`Qwen3VLTextRotaryEmbedding`, mrope_section e.g. [24, 20, 20]): pairs
    start on axis t; pairs 1, 4, 7, ... below 3*mrope_section[1] read h and pairs 2, 5, 8, ... below
    3*mrope_section[2] read w. inv_freq [head_dim/2]; cos/sin in the activation dtype."""
    fn = "interleaved_mrope_tables"
    sections = _check_sections(fn, inv_freq, mrope_section)
    P = inv_freq.shape[0]
    i = torch.arange(P, device=inv_freq.device)
    axis = torch.zeros(P, dtype=torch.long, device=inv_freq.device)
    for dim in (1, 2):
        axis = torch.where((i % 3 == dim) & (i < 3 * sections[dim]), dim, axis)
    return RopeTables(axis, inv_freq, False)


def _check_grid(fn: str, name: str, grid, columns: int) -> None:
    check_tensor(fn, name, grid, dtypes=_INT_DTYPES, ndim=2)
    if grid.shape[1] != columns:
        raise ValueError(f"vlmops.{fn}: {name} must be [n, {columns}], got shape {tuple(grid.shape)}")


def _image_of_token(counts: torch.Tensor, num_tokens):
    """(image index, token index within its image) of every token of the packed sequence, on device.

    Without num_tokens, the total sum(counts) is read back once (a host sync); pass it (e.g.
    hidden_states.shape[0]) to keep the builder free of syncs and usable under CUDA graph capture."""
    ends = counts.cumsum(0)
    if num_tokens is None:
        num_tokens = int(ends[-1]) if ends.numel() else 0
    token = torch.arange(num_tokens, device=counts.device)
    image = torch.searchsorted(ends, token, right=True).clamp_(max=max(counts.shape[0] - 1, 0))
    local = token - (ends - counts)[image]
    return image, local


def vision_rope_positions(grid_thw: torch.Tensor, spatial_merge_size: int, num_tokens=None) -> torch.Tensor:
    """(h, w) positions [N, 2] int64 of the packed patches of Qwen2/2.5/3-VL vision towers.

    The block-major order the Qwen processors emit (transformers' `get_vision_position_ids`): per image,
    the (h, w) meshgrid reshaped (h/m, m, w/m, m), transposed to (h/m, w/m, m, m), flattened and
    repeated over t. grid_thw [n, 3] (t, h, w) int on any device, h and w divisible by m.
    num_tokens = sum(t*h*w) (hidden_states.shape[0]) avoids reading it back from the device.
    """
    fn = "vision_rope_positions"
    _check_grid(fn, "grid_thw", grid_thw, 3)
    m = check_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    if num_tokens is not None:
        check_int(fn, "num_tokens", num_tokens, minimum=0)
    grid = grid_thw.long()
    h, w = grid[:, 1], grid[:, 2]
    image, local = _image_of_token(grid.prod(-1), num_tokens)
    r = local % (h * w)[image]  # t repeats the same spatial positions
    block, inner = r // (m * m), r % (m * m)
    blocks_per_row = (w // m)[image]
    hpos = (block // blocks_per_row) * m + inner // m
    wpos = (block % blocks_per_row) * m + inner % m
    return torch.stack((hpos, wpos), dim=-1)


def pixtral_rope_positions(grid_hw: torch.Tensor, num_tokens=None) -> torch.Tensor:
    """(h, w) positions [N, 2] int64 of Pixtral's packed patches: per image, row-major over its patch
    grid (`PixtralTransformer` input order). grid_hw [n, 2] patch rows and columns per image
    (image_sizes // patch_size). num_tokens = sum(h*w) avoids reading it back from the device."""
    fn = "pixtral_rope_positions"
    _check_grid(fn, "grid_hw", grid_hw, 2)
    if num_tokens is not None:
        check_int(fn, "num_tokens", num_tokens, minimum=0)
    grid = grid_hw.long()
    image, local = _image_of_token(grid.prod(-1), num_tokens)
    w = grid[:, 1][image]
    return torch.stack((local // w, local % w), dim=-1)


def _run_broadcast(run_start: torch.Tensor) -> torch.Tensor:
    """Index (along the last dim) of the first token of the run each token belongs to."""
    index = torch.arange(run_start.shape[-1], device=run_start.device).expand_as(run_start)
    return torch.where(run_start, index, 0).cummax(-1).values


def mrope_position_ids(
    mm_token_type_ids: torch.Tensor,
    image_grid_thw=None,
    video_grid_thw=None,
    *,
    spatial_merge_size: int,
    attention_mask=None,
    video_time_interval=None,
    split_video_frames: bool = False,
):
    """Text M-RoPE position ids (t, h, w) of Qwen2-VL / Qwen2.5-VL / Qwen3-VL language models, with the
    semantics of transformers 5.x ``get_rope_index``, as device tensor code (no host sync, no loop
    over images, frames or batch rows).

    Each maximal run of equal ``mm_token_type_ids`` (0 text, 1 image, 2 video) among the attended tokens
    is a segment: text runs count up by 1 per token; the k-th image (video) run overall takes the k-th
    row of image_grid_thw (video_grid_thw), gets t/h/w grid positions over (t, h/m, w/m) offset by the
    running position, and advances it by max(h, w) / m.

    Args:
        mm_token_type_ids: ``[B, S]`` int.
        image_grid_thw, video_grid_thw: ``[n, 3]`` int (t, h, w) in patches, or None.
        spatial_merge_size: m (vision_config.spatial_merge_size).
        attention_mask: ``[B, S]``; padding gets position 0 and is skipped.
        video_time_interval: ``[n_videos]`` float, temporal spacing per video: Qwen2.5-VL's
            ``tokens_per_second * second_per_grid_ts`` (temporal ids are ``long(t_index * interval)``).
            None: 1 (Qwen2-VL, Qwen3-VL).
        split_video_frames: Qwen3-VL: every frame of a video is its own run (timestamps separate them).

    Returns:
        ``(position_ids [3, B, S] int64, mrope_position_deltas [B, 1] int64)``.
    """
    fn = "mrope_position_ids"
    check_tensor(fn, "mm_token_type_ids", mm_token_type_ids, dtypes=None, ndim=2)
    m = check_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    device = mm_token_type_ids.device
    B, S = mm_token_type_ids.shape
    grids = {}
    for name, grid, modality in (("image_grid_thw", image_grid_thw, 1), ("video_grid_thw", video_grid_thw, 2)):
        if grid is None:
            grid = torch.zeros(1, 3, dtype=torch.long, device=device)
        else:
            _check_grid(fn, name, grid, 3)
        grids[modality] = grid.long()
    num_videos = grids[2].shape[0]
    if video_time_interval is None:
        interval = torch.ones(num_videos, device=device)
    else:
        check_tensor(fn, "video_time_interval", video_time_interval, dtypes=None, ndim=1)
        if video_grid_thw is not None and video_time_interval.shape[0] != num_videos:
            raise ValueError(f"vlmops.{fn}: video_time_interval must be [{num_videos}], got {tuple(video_time_interval.shape)}")
        interval = video_time_interval.to(device=device, dtype=torch.float32)
    if attention_mask is None:
        valid = torch.ones(B, S, dtype=torch.bool, device=device)
    else:
        check_tensor(fn, "attention_mask", attention_mask, dtypes=None, ndim=2)
        if attention_mask.shape != (B, S):
            raise ValueError(f"vlmops.{fn}: attention_mask must be [{B}, {S}], got {tuple(attention_mask.shape)}")
        valid = attention_mask.bool()

    # Left-pack the attended tokens of each row (padding removed, as transformers does) ...
    packed_index = valid.long().cumsum(-1) - 1
    types = torch.full((B, S + 1), -1, dtype=torch.long, device=device)
    types.scatter_(1, torch.where(valid, packed_index, S), mm_token_type_ids.long())
    types = types[:, :S]
    live = types >= 0
    previous = torch.cat((torch.full((B, 1), -2, device=device, dtype=torch.long), types[:, :-1]), 1)
    following = torch.cat((types[:, 1:], torch.full((B, 1), -2, device=device, dtype=torch.long)), 1)
    run_start = live & (types != previous)
    run_end = live & (types != following)
    offset = torch.arange(S, device=device) - _run_broadcast(run_start)

    # ... the k-th image/video run of the whole batch (row-major) takes the k-th grid.
    t, h, w = (torch.zeros(B, S, dtype=torch.long, device=device) for _ in range(3))
    t_interval = torch.ones(B, S, device=device)
    for modality in (1, 2):
        is_mod = types == modality
        ordinal = (run_start & is_mod).flatten().cumsum(0).view(B, S) - 1
        grid = grids[modality]
        if modality == 2 and split_video_frames:
            frame_ends = grid[:, 0].cumsum(0)
            video = torch.searchsorted(frame_ends, ordinal.clamp(min=0), right=True).clamp(max=num_videos - 1)
            frames = torch.ones_like(video)
        else:
            video = ordinal.clamp(0, grid.shape[0] - 1)
            frames = grid[video, 0]
        t = torch.where(is_mod, frames, t)
        h = torch.where(is_mod, grid[video, 1] // m, h)
        w = torch.where(is_mod, grid[video, 2] // m, w)
        if modality == 2:
            t_interval = torch.where(is_mod, interval[video], t_interval)
    is_text = types == 0
    is_vision = live & ~is_text
    # Running position: text advances 1 per token; a vision run advances max(h, w)/m after its last token.
    advance = torch.where(is_text, 1, torch.where(is_vision & run_end, torch.maximum(h, w), 0))
    start = advance.cumsum(-1) - advance  # exclusive: constant over a vision run, +1 per text token
    hw = (h * w).clamp(min=1)
    t_index = offset // hw
    temporal = (t_index.float() * t_interval).long()
    packed = torch.stack(
        (
            torch.where(is_vision, temporal + start, start),
            torch.where(is_vision, (offset // w.clamp(min=1)) % h.clamp(min=1) + start, start),
            torch.where(is_vision, offset % w.clamp(min=1) + start, start),
        )
    )
    packed = torch.where(live, packed, 0)
    position_ids = torch.where(valid, packed.gather(2, packed_index.clamp(min=0).expand(3, B, S)), 0)
    deltas = packed.amax(dim=(0, 2)) + 1 - valid.sum(-1)
    return position_ids, deltas.unsqueeze(1)


def _as_bshd(fn: str, name: str, x, layout: str):
    if layout == "nhd":
        check_tensor(fn, name, x, ndim=3)
        return x.unsqueeze(0)
    check_tensor(fn, name, x, ndim=4)
    return x if layout == "bshd" else x.transpose(1, 2)


def _op(name: str, x: torch.Tensor):
    """The op that runs on x's device: the public op, or its Triton variant on CUDA when chosen."""
    if x.device.type == "cuda" and cuda_backend() == "triton":
        return getattr(torch.ops.vlmops, KERNEL_OWNERS[name]["triton"])
    return getattr(torch.ops.vlmops, name)


def apply_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    axis: torch.Tensor,
    inv_freq: torch.Tensor,
    fp32_math: bool,
    *,
    layout: str = "nhd",
    inplace: bool = False,
):
    """Rotate q and k by multi-axis RoPE in one pass; cos/sin are computed from positions * inv_freq
    inside the kernel, never stored.

    Args:
        q: ``[N, H, D]`` (layout "nhd", packed vision tokens), ``[B, S, H, D]`` ("bshd") or
            ``[B, H, S, D]`` ("bhsd"); float32, float64, float16 or bfloat16; any strides (read in place).
        k: like q with H_kv heads (GQA: H_kv may differ from H), same dtype, device and head_dim D.
        positions: integer positions, int64 or int32: ``[N, A]`` for "nhd", ``[B, S, A]`` otherwise
            (any strides: transformers' ``position_ids [3, B, S]`` is ``position_ids.permute(1, 2, 0)``).
        axis: ``[P]`` int64, the positions column of each rotary pair, values in ``[0, A)``.
        inv_freq: ``[P]`` float32. ``rotary_dim = 2*P <= D``; dims ``[2P, D)`` pass through unchanged.
        fp32_math: True rotates in float32 and rounds once (Qwen vision); False rounds cos/sin and the
            products to the activation dtype as eager bf16/fp16 PyTorch does (Pixtral, text M-RoPE).
            Identical for float32; float64 always computes in float64.
        layout: "nhd", "bshd" or "bhsd" (how q and k are laid out).
        inplace: write the result into q and k (inference only: q and k must not require grad).

    Returns:
        ``(q_out, k_out)`` shaped like q and k (q and k themselves when inplace).
    """
    fn = "apply_rope"
    if layout not in _LAYOUTS:
        raise ValueError(f"vlmops.{fn}: layout must be one of {_LAYOUTS}, got {layout!r}")
    q4, k4 = _as_bshd(fn, "q", q, layout), _as_bshd(fn, "k", k, layout)
    check_tensor(fn, "positions", positions, dtypes=_INT_DTYPES, ndim=2 if layout == "nhd" else 3)
    pos3 = positions.unsqueeze(0) if layout == "nhd" else positions
    check_tensor(fn, "axis", axis, dtypes=(torch.int64,), ndim=1)
    check_tensor(fn, "inv_freq", inv_freq, dtypes=(torch.float32,), ndim=1)
    if not isinstance(fp32_math, bool):
        raise TypeError(f"vlmops.{fn}: fp32_math must be a bool, got {type(fp32_math).__name__}")
    if k.dtype != q.dtype:
        raise ValueError(f"vlmops.{fn}: k dtype {k.dtype} must match q dtype {q.dtype}")
    check_same_device(fn, "q", q, k=k, positions=positions, axis=axis, inv_freq=inv_freq)
    B, S, _, D = q4.shape
    if k4.shape[0] != B or k4.shape[1] != S or k4.shape[3] != D:
        raise ValueError(f"vlmops.{fn}: k of shape {tuple(k.shape)} must match q {tuple(q.shape)} in tokens and head_dim")
    if pos3.shape[0] != B or pos3.shape[1] != S or pos3.shape[2] < 1:
        expected = f"[{S}, A]" if layout == "nhd" else f"[{B}, {S}, A]"
        raise ValueError(f"vlmops.{fn}: positions must be {expected}, got shape {tuple(positions.shape)}")
    P = axis.shape[0]
    if P < 1 or inv_freq.shape[0] != P:
        raise ValueError(f"vlmops.{fn}: axis and inv_freq must both be [rotary_dim/2] >= 1, got {P} and {inv_freq.shape[0]}")
    if 2 * P > D:
        raise ValueError(f"vlmops.{fn}: rotary_dim = 2*len(axis) = {2 * P} exceeds head_dim {D}")
    if inplace and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise ValueError(f"vlmops.{fn}: inplace=True is for inference, but q or k requires grad; use inplace=False")
    if not _native.available():
        _native.warn_fallback(fn)
        q_out, k_out = reference.rope(q4, k4, pos3, axis, inv_freq, fp32_math)
        if inplace:
            q4.copy_(q_out)
            k4.copy_(k_out)
            return q, k
    elif inplace:
        _op("rope_", q)(q4, k4, pos3, axis, inv_freq, fp32_math)
        return q, k
    else:
        q_out, k_out = _op("rope", q)(q4, k4, pos3, axis, inv_freq, fp32_math)
    if layout == "nhd":
        return q_out.squeeze(0), k_out.squeeze(0)
    if layout == "bhsd":
        return q_out.transpose(1, 2), k_out.transpose(1, 2)
    return q_out, k_out


def _register(rope: str, rope_inplace: str) -> None:
    """Fake implementations and autograd of one kernel family (the public ops or their Triton twins)."""
    op = getattr(torch.ops.vlmops, rope)

    @torch.library.register_fake(f"vlmops::{rope}")
    def _(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
        return torch.empty_like(q), torch.empty_like(k)

    @torch.library.register_fake(f"vlmops::{rope_inplace}")
    def _(q, k, positions, axis, inv_freq, fp32_math, inverse=False):
        return None

    def setup_context(ctx, inputs, output):
        _q, _k, positions, axis, inv_freq, fp32_math, inverse = inputs
        ctx.save_for_backward(positions, axis, inv_freq)
        ctx.fp32_math = fp32_math
        ctx.inverse = inverse

    # A rotation's adjoint is the rotation by the negated angle: the backward is the same op.
    def backward(ctx, grad_q, grad_k):
        positions, axis, inv_freq = ctx.saved_tensors
        grad_q, grad_k = op(grad_q, grad_k, positions, axis, inv_freq, ctx.fp32_math, not ctx.inverse)
        return grad_q, grad_k, None, None, None, None, None

    torch.library.register_autograd(f"vlmops::{rope}", backward, setup_context=setup_context)


if _native.available():
    _register("rope", "rope_")
    _register(KERNEL_OWNERS["rope"]["triton"], KERNEL_OWNERS["rope_"]["triton"])
