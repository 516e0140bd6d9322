"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL semantics as device tensor code: the vision tower's 2D RoPE
tables and (h, w) positions, Qwen2.5-VL's window index, and the language model's M-RoPE tables and
position ids (transformers' ``get_rope_index``)."""

import torch

from vlmops.models._common import check_grid, check_grid_rows, checks_on_host, grid_token_count, image_of_token
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
        raise ValueError(
            f"vlmops.{fn}: sum(mrope_section) = {sum(sections)} must equal len(inv_freq) = {inv_freq.shape[0]}"
        )
    device = inv_freq.device
    axis = torch.repeat_interleave(torch.arange(3, device=device), torch.tensor(sections, device=device))
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


def vision_rope_positions(
    grid_thw: torch.Tensor, spatial_merge_size: int, num_tokens: int | None = None, *, check_values: bool = True
) -> torch.Tensor:
    """(h, w) positions of the packed patches of Qwen2/2.5/3-VL vision towers.

    The block-major order the Qwen processors emit (transformers' ``get_vision_position_ids``): per
    image, the (h, w) meshgrid reshaped (h/m, m, w/m, m), transposed to (h/m, w/m, m, m), flattened and
    repeated over t.

    Args:
        grid_thw: ``[n, 3]`` int32/int64 (t, h, w) patch grids, one row per image or video, on any device.
        spatial_merge_size: m (vision_config.spatial_merge_size); h and w are multiples of it.
        num_tokens: ``sum(t*h*w)``, the packed sequence length (``hidden_states.shape[0]``). Without it
            the sum is read back from grid_thw's device (a host sync on a GPU).
        check_values: check grid_thw's values (see below); False skips them for hot paths whose grids
            are known good.

    Returns:
        ``[num_tokens, 2]`` int64 on grid_thw's device.

    Checks: shapes, dtypes and argument types always (``ValueError``/``TypeError``). Values, with
    ``check_values``: entries >= 0, h and w multiples of m, ``sum(t*h*w)`` below 2**63 and equal to
    num_tokens, as transformers requires; on CPU a ``ValueError``, on other devices and under
    torch.compile a ``torch._assert_async`` (no sync).
    """
    fn = "vision_rope_positions"
    check_grid(fn, "grid_thw", grid_thw, 3)
    m = check_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    num_tokens = grid_token_count(
        fn, "grid_thw", grid_thw, "thw", m, "spatial_merge_size", "num_tokens", num_tokens, check_values
    )
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


_MODALITIES = ((1, "image", "image_grid_thw"), (2, "video", "video_grid_thw"))


def _check_runs_on_host(fn, mm_token_type_ids, valid, types, run_end, offset, grid_rows, m, split_video_frames):
    """The checks of transformers' ``get_rope_index`` on the host, with the run structure of the packed
    types: token types in {0, 1, 2}; as many image (video) runs as grid rows (frames, when
    split_video_frames); the k-th run has the k-th grid's t*h*w / m**2 tokens (h*w / m**2 per frame)."""
    bad = valid & ~((mm_token_type_ids == 0) | (mm_token_type_ids == 1) | (mm_token_type_ids == 2))
    if bool(bad.any()):
        b, i = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(
            f"vlmops.{fn}: mm_token_type_ids must be 0 (text), 1 (image) or 2 (video) where attended, "
            f"got {mm_token_type_ids[b, i].item()} at [{b}, {i}]"
        )
    for modality, kind, name in _MODALITIES:
        ends = run_end & (types == modality)
        batch, last = torch.nonzero(ends, as_tuple=True)  # row-major: transformers' order of the runs
        lengths = (offset + 1)[ends].tolist()
        rows = grid_rows[modality]
        per_frame = modality == 2 and split_video_frames
        if rows is None:
            if lengths:
                raise ValueError(f"vlmops.{fn}: mm_token_type_ids has {len(lengths)} {kind} runs but {name} is None")
            continue
        expected = sum(row[0] for row in rows) if per_frame else len(rows)
        if len(lengths) != expected:
            what = f"{expected} frames (sum of t, one run per frame)" if per_frame else f"{expected} rows"
            raise ValueError(
                f"vlmops.{fn}: mm_token_type_ids has {len(lengths)} {kind} runs (maximal runs of "
                f"{modality} among the attended tokens) but {name} has {what}"
            )
        grids = [(k, (1, h, w)) for k, (t, h, w) in enumerate(rows) for _ in range(t)] if per_frame else enumerate(rows)
        for j, (length, (k, (t, h, w))) in enumerate(zip(lengths, grids)):
            tokens = t * h * w // (m * m)
            if length != tokens:
                end = int(last[j]) + 1
                formula = "h*w/spatial_merge_size**2 per frame" if per_frame else "t*h*w/spatial_merge_size**2"
                raise ValueError(
                    f"vlmops.{fn}: {kind} run {j} (batch {int(batch[j])}, attended tokens [{end - length}, {end})) "
                    f"has {length} tokens but {name}[{k}] = {rows[k]} gives {formula} = {tokens}"
                )


def mrope_position_ids(
    mm_token_type_ids: torch.Tensor,
    image_grid_thw=None,
    video_grid_thw=None,
    *,
    spatial_merge_size: int,
    attention_mask=None,
    video_time_interval=None,
    split_video_frames: bool = False,
    check_values: bool = True,
):
    """Text M-RoPE position ids (t, h, w) of Qwen2-VL / Qwen2.5-VL / Qwen3-VL language models, with the
    semantics of transformers 5.x ``get_rope_index``, as device tensor code (no host sync, no loop
    over images, frames or batch rows).

    Each maximal run of equal ``mm_token_type_ids`` (0 text, 1 image, 2 video) among the attended tokens
    is a segment: text runs count up by 1 per token; the k-th image (video) run of the batch (row-major)
    takes the k-th row of image_grid_thw (video_grid_thw), gets t/h/w grid positions over
    (t, h/m, w/m) offset by the running position, and advances it by max(h, w) / m.

    Args:
        mm_token_type_ids: ``[B, S]`` (any dtype) with values 0, 1, 2.
        image_grid_thw, video_grid_thw: ``[n, 3]`` int32/int64 (t, h, w) in patches, or None.
        spatial_merge_size: m (vision_config.spatial_merge_size).
        attention_mask: ``[B, S]`` (any dtype, non-zero where attended); padding gets position 0 and is
            skipped.
        video_time_interval: ``[n_videos]`` float, temporal spacing per video: Qwen2.5-VL's
            ``tokens_per_second * second_per_grid_ts`` (temporal ids are ``long(t_index * interval)``).
            None: 1 (Qwen2-VL, Qwen3-VL). Unused without video_grid_thw.
        split_video_frames: Qwen3-VL: every frame of a video is its own run (timestamps separate them),
            as transformers' split of each video_grid_thw row into t rows (1, h, w).
        check_values: check the values (see below); False skips them for hot paths whose inputs are
            known good (inconsistent runs and grids then give wrong positions, never out-of-bounds reads).

    Returns:
        ``(position_ids [3, B, S] int64, mrope_position_deltas [B, 1] int64)`` on mm_token_type_ids'
        device.

    Checks: shapes, dtypes and argument types always (``ValueError``/``TypeError``). Values, with
    ``check_values``, what transformers' ``get_rope_index`` and its model reject: attended token types
    other than 0, 1, 2; grid entries < 0 or h, w not multiples of m; image (video) runs without a grid,
    more or fewer runs than grid rows (frames with split_video_frames); a run whose length is not its
    grid's t*h*w / m**2 (h*w / m**2 per frame). On CPU a ``ValueError`` naming the run and the grid row;
    on other devices and under torch.compile one ``torch._assert_async`` (no sync).
    """
    fn = "mrope_position_ids"
    check_tensor(fn, "mm_token_type_ids", mm_token_type_ids, dtypes=None, ndim=2)
    m = check_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    device = mm_token_type_ids.device
    B, S = mm_token_type_ids.shape
    given = {1: image_grid_thw, 2: video_grid_thw}
    placeholder = torch.zeros(1, 3, dtype=torch.long, device=device)
    grids = {}  # what the lookups index: a grid with at least one row
    for modality, _, name in _MODALITIES:
        if given[modality] is not None:
            check_grid(fn, name, given[modality], 3)
        grid = given[modality]
        grids[modality] = grid.long() if grid is not None and grid.shape[0] else placeholder
    num_videos = grids[2].shape[0]
    interval = torch.ones(num_videos, device=device)
    if video_time_interval is not None:
        check_tensor(fn, "video_time_interval", video_time_interval, dtypes=None, ndim=1)
        if video_grid_thw is not None:
            if video_time_interval.shape[0] != video_grid_thw.shape[0]:
                raise ValueError(
                    f"vlmops.{fn}: video_time_interval must be [{video_grid_thw.shape[0]}], "
                    f"got {tuple(video_time_interval.shape)}"
                )
            if video_grid_thw.shape[0]:
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
    tensors = (mm_token_type_ids, attention_mask, image_grid_thw, video_grid_thw)
    on_host = check_values and all(checks_on_host(t) for t in tensors if t is not None)
    if on_host:
        grid_rows = {modality: None if given[modality] is None else given[modality].tolist() for modality in given}
        for modality, _, name in _MODALITIES:
            if grid_rows[modality] is not None:
                check_grid_rows(fn, name, grid_rows[modality], "thw", m, "spatial_merge_size")
        _check_runs_on_host(fn, mm_token_type_ids, valid, types, run_end, offset, grid_rows, m, split_video_frames)

    # ... the k-th image/video run of the whole batch (row-major) takes the k-th grid (clamped: in bounds
    # whatever the runs, which the checks above match to the grids).
    t, h, w = (torch.zeros(B, S, dtype=torch.long, device=device) for _ in range(3))
    t_interval = torch.ones(B, S, device=device)
    runs = {}
    for modality in (1, 2):
        is_mod = types == modality
        runs[modality] = (run_start & is_mod).flatten().cumsum(0).view(B, S)
        ordinal = runs[modality] - 1
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
    if check_values and not on_host:
        ok = (~valid | (mm_token_type_ids == 0) | (mm_token_type_ids == 1) | (mm_token_type_ids == 2)).all()
        for modality, _, _ in _MODALITIES:
            count = runs[modality][-1, -1] if B * S else torch.zeros((), dtype=torch.long, device=device)
            grid = given[modality]
            if grid is None:
                ok = ok & (count == 0)
                continue
            g = grid.long()
            ok = ok & (g >= 0).all() & (g[:, 1:] % m == 0).all()
            expected = g[:, 0].double().sum() if modality == 2 and split_video_frames else g.shape[0]
            ok = ok & (count == expected)
        # Run lengths in float64: a grid whose int64 product wraps cannot match.
        length_ok = (offset + 1).double() == t.double() * h.double() * w.double()
        ok = ok & (~(is_vision & run_end) | length_ok).all()
        torch._assert_async(
            ok,
            f"vlmops.{fn}: the image/video runs of mm_token_type_ids must match "
            "image_grid_thw/video_grid_thw (one run of t*h*w/m**2 tokens per grid row)",
        )
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
    grid_thw: torch.Tensor,
    window_size: int,
    patch_size: int,
    spatial_merge_size: int,
    num_patches: int | None = None,
    *,
    check_values: bool = True,
):
    """Qwen2.5-VL's window-attention layout, built on grid_thw's device with tensor code.

    The semantics of transformers' ``get_vision_window_index`` (used by
    ``Qwen2_5_VisionTransformerPretrainedModel``): the merged units (``spatial_merge_size**2``
    patches each) of every image/frame are grouped into windows of
    ``window_size // spatial_merge_size // patch_size`` units per side, windows in row-major order
    per frame, units row-major inside a window; windows cut by the grid's edge are smaller.

    Args:
        grid_thw: ``[n, 3]`` int32/int64 (t, h, w) patch grids, one row per image or video, on any
            device; h and w are multiples of spatial_merge_size.
        window_size, patch_size, spatial_merge_size: from the vision config (Qwen2.5-VL: 112, 14, 2).
        num_patches: ``sum(t*h*w)``, the length of the packed sequence. Pass it (callers know it
            from the hidden states' shape) to avoid reading grid_thw on the host, which
            synchronizes when grid_thw lives on a GPU.
        check_values: check grid_thw's values (see below); False skips them for hot paths whose grids
            are known good.

    Returns:
        ``(window_index, reverse_index, cu_window_seqlens)``: ``window_index [U]`` int64 (U =
        num_patches / spatial_merge_size**2) is transformers' permutation of merged units into window
        order; ``reverse_index [U]`` its inverse (transformers' ``argsort(window_index)``);
        ``cu_window_seqlens [U + 1]`` int32 window boundaries in patches. Its length does not depend
        on the grids (so nothing synchronizes): the non-empty windows come first, then the entry
        ``num_patches`` repeats, i.e. zero-length segments, which ``varlen_attention`` skips.
        ``torch.unique_consecutive`` of it is transformers' ``cu_window_seqlens``. All on grid_thw's
        device.

    Checks: shapes, dtypes, argument types and sizes always (``ValueError``/``TypeError``). Values,
    with ``check_values``: entries >= 0, h and w multiples of spatial_merge_size (transformers' vision
    tower rejects other grids), ``sum(t*h*w)`` below 2**63 and equal to num_patches; on CPU a
    ``ValueError``, on other devices and under torch.compile a ``torch._assert_async`` (no sync).
    """
    fn = "qwen2_5_vl_window_index"
    check_grid(fn, "grid_thw", grid_thw, 3)
    for name, value in (
        ("window_size", window_size),
        ("patch_size", patch_size),
        ("spatial_merge_size", spatial_merge_size),
    ):
        check_int(fn, name, value, minimum=1)
    window = window_size // spatial_merge_size // patch_size
    if window < 1:
        raise ValueError(
            f"vlmops.{fn}: window_size {window_size} is smaller than one merged unit "
            f"(patch_size * spatial_merge_size = {patch_size * spatial_merge_size})"
        )
    unit = spatial_merge_size**2
    num_patches = grid_token_count(
        fn,
        "grid_thw",
        grid_thw,
        "thw",
        spatial_merge_size,
        "spatial_merge_size",
        "num_patches",
        num_patches,
        check_values,
    )
    if num_patches % unit:
        raise ValueError(f"vlmops.{fn}: num_patches {num_patches} is not a multiple of spatial_merge_size**2 = {unit}")
    units = num_patches // unit
    device = grid_thw.device
    grid = grid_thw.to(torch.int64)
    frames, rows, cols = grid[:, 0], grid[:, 1] // spatial_merge_size, grid[:, 2] // spatial_merge_size
    units_per_image = frames * rows * cols
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
    position = (
        image_start
        + frame * H * W
        + band * window * W
        + window_col * window * band_rows
        + (r % window) * window_cols
        + c % window
    )
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


def _interpolation_taps(index: torch.Tensor, size: torch.Tensor, side: int, mode: str, align_corners: bool):
    """Taps into a ``side``-long table and their weights for target positions ``index`` on axes of
    ``size`` positions (per token), as ``F.interpolate`` resamples with border padding: ``[N, 2]``
    (bilinear) or ``[N, 4]`` (bicubic, Keys kernel with a = -0.75)."""
    index = index.float()
    if align_corners:
        source = index * (side - 1) / size.clamp(min=2).sub(1)
    else:
        source = (index + 0.5) * side / size.clamp(min=1) - 0.5
    floor = source.floor()
    first, last = (0, 2) if mode == "bilinear" else (-1, 3)
    offsets = torch.arange(first, last, device=index.device)
    taps = (floor.long()[:, None] + offsets).clamp(0, side - 1)
    distance = (source - floor)[:, None].sub(offsets).abs()
    if mode == "bilinear":
        return taps, (1 - distance).clamp(min=0)
    a = -0.75
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    return taps, torch.where(distance <= 1, near, far)


def qwen3_vl_position_interpolation(
    grid_thw: torch.Tensor,
    num_grid_per_side: int,
    spatial_merge_size: int,
    num_patches: int,
    *,
    mode: str = "bilinear",
    align_corners: bool = True,
):
    """Qwen3-VL's learned position embeddings resampled to each image's grid, as gather indices and
    weights built on grid_thw's device with tensor code (no host read, no loop over images).

    The semantics of transformers' ``get_vision_interpolation_indices_and_weights`` (and of
    ``get_vision_bilinear_indices_and_weights``, its bilinear ``align_corners=True`` predecessor, with
    the taps on dim 1): the ``num_grid_per_side**2`` table is resampled as ``F.interpolate(mode=mode,
    align_corners=align_corners)`` to every frame's (h, w) grid, the patches of each frame in
    spatial-merge-block order (``spatial_merge_size**2`` patches per merged unit, units row-major).
    ``(pos_embed(indices) * weights[..., None]).sum(1)`` is ``Qwen3VLVisionModel``'s position embedding.

    Args:
        grid_thw: ``[n, 3]`` int32/int64 (t, h, w) patch grids on any device; h and w multiples of
            spatial_merge_size.
        num_grid_per_side: side of the learned table (``int(num_position_embeddings ** 0.5)``).
        spatial_merge_size: m (vision_config.spatial_merge_size).
        num_patches: ``sum(t*h*w)``, the packed length (the patch embeddings' first dimension): the
            output size, taken from the caller so that nothing reads grid_thw on the host.
        mode: "bilinear" (2 x 2 taps) or "bicubic" (4 x 4 taps).
        align_corners: as in ``F.interpolate``.

    Returns:
        ``(indices [num_patches, taps] int64, weights [num_patches, taps] float32)`` on grid_thw's device.
        The grid values are not checked: a grid whose token count is not num_patches gives wrong
        positions, never out-of-bounds indices.
    """
    fn = "qwen3_vl_position_interpolation"
    check_grid(fn, "grid_thw", grid_thw, 3)
    side = check_int(fn, "num_grid_per_side", num_grid_per_side, minimum=1)
    m = check_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    check_int(fn, "num_patches", num_patches, minimum=0)
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"vlmops.{fn}: mode must be 'bilinear' or 'bicubic', got {mode!r}")
    grid = grid_thw.long()
    image, local = image_of_token(grid.prod(-1), num_patches)
    heights, widths = grid[image, 1], grid[image, 2]
    within = local % (heights * widths).clamp(min=1)
    unit, in_unit = within // (m * m), within % (m * m)
    units_per_row = (widths // m).clamp(min=1)
    row = unit // units_per_row * m + in_unit // m
    col = unit % units_per_row * m + in_unit % m
    row_taps, row_weights = _interpolation_taps(row, heights, side, mode, align_corners)
    col_taps, col_weights = _interpolation_taps(col, widths, side, mode, align_corners)
    n = row_taps.shape[1]
    indices = (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, n * n)
    weights = (row_weights[:, :, None] * col_weights[:, None, :]).reshape(-1, n * n)
    return indices, weights
