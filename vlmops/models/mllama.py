"""Llama 3.2 Vision (transformers' Mllama): the key range of each text row from its
``cross_attention_mask``, for :func:`vlmops.gated_cross_attention` (no dense ``[B, Lq, Lk]`` mask)."""

import torch

from vlmops.models._common import check_int32_keys, checks_on_host
from vlmops.ops._checks import check_int, check_tensor

__all__ = ["mllama_kv_ranges", "mllama_kv_ranges_from_additive_mask"]


def _ranges_from_chunk_visibility(fn: str, visible: torch.Tensor, chunk: int, masked_rows: str, check_values: bool):
    """visible bool [B, Lq, C]: row sees key chunk c (keys [c * chunk, (c + 1) * chunk)) -> int32 ranges.

    The visible chunks of a row must be consecutive (one range); a row that sees none gets an empty
    range, or all C chunks with ``masked_rows="all"``; checked when check_values.
    """
    C = visible.shape[-1]
    index = torch.arange(C, device=visible.device)
    count = visible.sum(-1)
    first = torch.where(visible, index, C).amin(-1) if C else count
    last = torch.where(visible, index, -1).amax(-1) if C else count - 1
    if check_values:
        contiguous = (count == 0) | (last - first + 1 == count)
        message = (
            f"vlmops.{fn}: a text row sees a set of image tiles that is not one contiguous run of keys; "
            "gated_cross_attention takes one key range per row"
        )
        if checks_on_host(visible):
            if not bool(contiguous.all()):
                b, i = (int(x) for x in torch.nonzero(~contiguous)[0])
                seen = torch.nonzero(visible[b, i]).flatten().tolist()
                raise ValueError(f"{message} (batch {b}, row {i} sees chunks {seen} of {chunk} keys)")
        else:
            torch._assert_async(contiguous.all(), message)
    seen = count > 0
    start = torch.where(seen, first * chunk, 0)
    end = torch.where(seen, (last + 1) * chunk, C * chunk if masked_rows == "all" else 0)
    return start.to(torch.int32), end.to(torch.int32)


def _check_masked_rows(fn: str, masked_rows: str) -> None:
    if masked_rows not in ("empty", "all"):
        raise ValueError(f"vlmops.{fn}: masked_rows must be 'empty' or 'all', got {masked_rows!r}")


def mllama_kv_ranges(
    cross_attention_mask: torch.Tensor, tokens_per_tile: int, masked_rows: str = "empty", *, check_values: bool = True
):
    """Key ranges of Llama 3.2 Vision (transformers' Mllama) from its ``cross_attention_mask``.

    Args:
        cross_attention_mask: ``[B, Lq, n_images, n_tiles]`` (the processor's output, any dtype):
            non-zero where text row ``i`` may see tile ``t`` of image ``n``. The keys are the images'
            tiles in order, ``tokens_per_tile`` each (``cross_attention_states`` of shape
            ``[B, n_images * n_tiles * tokens_per_tile, hidden]``).
        tokens_per_tile: vision tokens per tile (Llama 3.2 Vision: 1601 = (560 / 14)^2 + 1).
        masked_rows: what a row that sees no tile gets. ``"empty"`` (default): an empty range, i.e.
            a zero attention output (Meta's reference placement of the full-text-row mask).
            ``"all"``: every key, which is what transformers computes (its
            ``_prepare_cross_attention_mask`` zeroes such rows of the additive mask and masks them
            only after the MLP); use it for parity with transformers.
        check_values: check the mask's values (see below); False skips it for hot paths whose masks
            are known good (a row with a gap then gets the range from its first to its last tile).

    Returns:
        ``(kv_start, kv_end)`` int32 ``[B, Lq]`` on the mask's device.

    Errors: shapes and argument types always, and the key count
    ``n_images * n_tiles * tokens_per_tile`` must fit int32 (the ranges' dtype), on every device
    (``ValueError``/``TypeError``). Values, with ``check_values``: a row whose visible tiles are not
    consecutive (e.g. two images of which the first has padding tiles) has no single key range and
    raises ``ValueError`` on CPU; on other devices and under torch.compile the same check runs as
    ``torch._assert_async`` (on CUDA a device-side assertion, which does not synchronize).
    """
    fn = "mllama_kv_ranges"
    check_tensor(fn, "cross_attention_mask", cross_attention_mask, dtypes=None, ndim=4)
    check_int(fn, "tokens_per_tile", tokens_per_tile, minimum=1)
    _check_masked_rows(fn, masked_rows)
    B, Lq, n_images, n_tiles = cross_attention_mask.shape
    check_int32_keys(fn, "n_images * n_tiles * tokens_per_tile", n_images * n_tiles * tokens_per_tile)
    visible = (cross_attention_mask != 0).reshape(B, Lq, n_images * n_tiles)
    return _ranges_from_chunk_visibility(fn, visible, tokens_per_tile, masked_rows, check_values)


def mllama_kv_ranges_from_additive_mask(
    attention_mask: torch.Tensor, tokens_per_tile: int, *, check_values: bool = True
):
    """Key ranges from the additive ``[B, 1, Lq, Lk]`` mask that transformers' Mllama passes to its
    cross-attention layers (the output of ``_prepare_cross_attention_mask``: 0 where visible).

    Reads one key per tile (a strided view, no ``[B, Lq, Lk]`` temporary). Rows whose mask row is all
    zero, which includes the rows transformers marks as seeing no image, get every key, as in
    transformers.

    Args:
        attention_mask: ``[B, 1, Lq, Lk]`` (any dtype, 0 where visible), Lk a multiple of tokens_per_tile.
        tokens_per_tile: vision tokens per tile.
        check_values: as in :func:`mllama_kv_ranges`.

    Returns:
        ``(kv_start, kv_end)`` int32 ``[B, Lq]`` on the mask's device.

    Errors: as :func:`mllama_kv_ranges`; Lk must fit int32.
    """
    fn = "mllama_kv_ranges_from_additive_mask"
    check_tensor(fn, "attention_mask", attention_mask, dtypes=None, ndim=4)
    check_int(fn, "tokens_per_tile", tokens_per_tile, minimum=1)
    if attention_mask.shape[1] != 1 or attention_mask.shape[-1] % tokens_per_tile:
        raise ValueError(
            f"vlmops.{fn}: attention_mask must be [B, 1, Lq, Lk] with Lk a multiple of tokens_per_tile "
            f"{tokens_per_tile}, got {tuple(attention_mask.shape)}"
        )
    check_int32_keys(fn, "Lk", attention_mask.shape[-1])
    visible = attention_mask[:, 0, :, ::tokens_per_tile] == 0
    return _ranges_from_chunk_visibility(fn, visible, tokens_per_tile, "empty", check_values)
