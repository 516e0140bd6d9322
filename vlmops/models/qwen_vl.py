"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL semantics as device tensor code: the vision tower's 2D RoPE
tables and (h, w) positions, Qwen2.5-VL's window index, and the language model's M-RoPE tables and
position ids (transformers' ``get_rope_index``)."""

import torch

from vlmops.models._common import check_grid, image_of_token
from vlmops.ops._checks import check_int, check_tensor
from vlmops.ops.rope import RopeTables, check_inv_freq

__all__ = [
    "interleaved_mrope_tables",
    "mrope_position_ids",
    "mrope_tables",
    "qwen2_5_vl_window_index",
    "qwen_vision_rope_tables",
    "vision_rope_positions",
]


def qwen_vision_rope_tables(inv_freq: torch.Tensor) -> RopeTables:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision tower (`*VisionRotaryEmbedding` + `apply_rotary_pos_emb_vision`).

    inv_freq: the module's buffer, [head_dim/4]. Pairs [0, head_dim/4) read axis 0 (h) with inv_freq[i],
    pairs [head_dim/4, head_dim/2) read axis 1 (w) with inv_freq[i - head_dim/4]; float32 math.
    Positions: [N, 2] (h, w), e.g. from :func:`vision_rope_positions`.
    """
    check_inv_freq("qwen_vision_rope_tables", inv_freq)
    n = inv_freq.shape[0]
    axis = torch.arange(2, device=inv_freq.device).repeat_interleave(n)
    return RopeTables(axis, torch.cat((inv_freq, inv_freq)), True)


def _check_sections(fn: str, inv_freq, mrope_section) -> list:
    check_inv_freq(fn, inv_freq)
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


def vision_rope_positions(grid_thw: torch.Tensor, spatial_merge_size: int, num_tokens=None) -> torch.Tensor:
    """(h, w) positions [N, 2] int64 of the packed patches of Qwen2/2.5/3-VL vision towers.

    The block-major order the Qwen processors emit (transformers' `get_vision_position_ids`): per image,
    the (h, w) meshgrid reshaped (h/m, m, w/m, m), transposed to (h/m, w/m, m, m), flattened and
    repeated over t. grid_thw [n, 3] (t, h, w) int on any device, h and w divisible by m.
    num_tokens = sum(t*h*w) (hidden_states.shape[0]) avoids reading it back from the device.
    """
    fn = "vision_rope_positions"
    check_grid(fn, "grid_thw", grid_thw, 3)
    m = check_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    if num_tokens is not None:
        check_int(fn, "num_tokens", num_tokens, minimum=0)
    grid = grid_thw.long()
    h, w = grid[:, 1], grid[:, 2]
    image, local = image_of_token(grid.prod(-1), num_tokens)
    r = local % (h * w)[image]  # t repeats the same spatial positions
    block, inner = r // (m * m), r % (m * m)
    blocks_per_row = (w // m)[image]
    hpos = (block // blocks_per_row) * m + inner // m
    wpos = (block % blocks_per_row) * m + inner % m
    return torch.stack((hpos, wpos), dim=-1)


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
            check_grid(fn, name, grid, 3)
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


def qwen2_5_vl_window_index(
    grid_thw: torch.Tensor, window_size: int, patch_size: int, spatial_merge_size: int, num_patches: int | None = None
):
    """Qwen2.5-VL's window-attention layout, built on grid_thw's device with tensor code.

    The semantics of transformers' ``get_vision_window_index`` (used by
    ``Qwen2_5_VisionTransformerPretrainedModel``): the merged units (``spatial_merge_size**2``
    patches each) of every image/frame are grouped into windows of
    ``window_size // spatial_merge_size // patch_size`` units per side, windows in row-major order
    per frame, units row-major inside a window; windows cut by the grid's edge are smaller.

    Args:
        grid_thw: ``[B, 3]`` integer (t, h, w) patch grids, one row per image or video.
        window_size, patch_size, spatial_merge_size: from the vision config (Qwen2.5-VL: 112, 14, 2).
        num_patches: ``sum(t*h*w)``, the length of the packed sequence. Pass it (callers know it
            from the hidden states' shape) to avoid reading grid_thw on the host, which
            synchronizes when grid_thw lives on a GPU.

    Returns:
        ``(window_index, reverse_index, cu_window_seqlens)``: ``window_index [U]`` int64 (U =
        num_patches / spatial_merge_size**2) is transformers' permutation of merged units into window
        order; ``reverse_index [U]`` its inverse (transformers' ``argsort(window_index)``);
        ``cu_window_seqlens [U + 1]`` int32 window boundaries in patches. Its length does not depend
        on the grids (so nothing synchronizes): the non-empty windows come first, then the entry
        ``num_patches`` repeats, i.e. zero-length segments, which ``varlen_attention`` skips.
        ``torch.unique_consecutive`` of it is transformers' ``cu_window_seqlens``.
    """
    fn = "qwen2_5_vl_window_index"
    check_tensor(fn, "grid_thw", grid_thw, dtypes=(torch.int32, torch.int64), ndim=2)
    if grid_thw.shape[1] != 3:
        raise ValueError(f"vlmops.{fn}: grid_thw must be [B, 3] (t, h, w), got shape {tuple(grid_thw.shape)}")
    for name, value in (("window_size", window_size), ("patch_size", patch_size),
                        ("spatial_merge_size", spatial_merge_size)):
        check_int(fn, name, value, minimum=1)
    window = window_size // spatial_merge_size // patch_size
    if window < 1:
        raise ValueError(
            f"vlmops.{fn}: window_size {window_size} is smaller than one merged unit "
            f"(patch_size * spatial_merge_size = {patch_size * spatial_merge_size})"
        )
    unit = spatial_merge_size**2
    device = grid_thw.device
    grid = grid_thw.to(torch.int64)
    frames, rows, cols = grid[:, 0], grid[:, 1] // spatial_merge_size, grid[:, 2] // spatial_merge_size
    units_per_image = frames * rows * cols
    if num_patches is None:
        units = int(units_per_image.sum())
    else:
        check_int(fn, "num_patches", num_patches, minimum=0)
        if num_patches % unit:
            raise ValueError(f"vlmops.{fn}: num_patches {num_patches} is not a multiple of spatial_merge_size**2 = {unit}")
        units = num_patches // unit
    image = torch.repeat_interleave(torch.arange(grid.shape[0], device=device), units_per_image, output_size=units)
    image_start = (torch.cumsum(units_per_image, 0) - units_per_image)[image]
    unit_id = torch.arange(units, device=device)
    local = unit_id - image_start
    H, W = rows[image], cols[image]
    frame, in_frame = local // (H * W), local % (H * W)
    r, c = in_frame // W, in_frame % W
    band, window_col = r // window, c // window
    band_rows = torch.clamp(H - band * window, max=window)  # rows of this row of windows
    window_cols = torch.clamp(W - window_col * window, max=window)
    # Position in window order: earlier frames, earlier rows of windows, earlier windows in this row,
    # then row-major inside the window.
    position = (image_start + frame * H * W + band * window * W + window_col * window * band_rows
                + (r % window) * window_cols + c % window)
    window_index = torch.empty_like(unit_id).scatter_(0, position, unit_id)
    # Window ends, ranked in window order by a prefix count; the non-ends go to a dropped slot.
    is_end = ((r % window) == band_rows - 1) & ((c % window) == window_cols - 1)
    end_by_position = torch.zeros_like(unit_id).scatter_(0, position, is_end.to(torch.int64))
    rank = torch.cumsum(end_by_position, 0)
    slot = torch.where(end_by_position.bool(), rank, units + 1)
    cu_units = torch.full((units + 2,), units, dtype=torch.int64, device=device)
    cu_units.scatter_(0, slot, unit_id + 1)
    cu_units[:1].zero_()  # a fill kernel: a Python scalar assigned by index would be a host-to-device copy
    cu_window_seqlens = (cu_units[: units + 1] * unit).to(torch.int32)
    return window_index, position, cu_window_seqlens
