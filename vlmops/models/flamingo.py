"""Flamingo / OpenFlamingo (``MaskedCrossAttention``): the key range of each text token from
``media_locations``, for :func:`vlmops.gated_cross_attention`."""

import torch

from vlmops.models._common import check_int32_keys
from vlmops.ops._checks import check_int, check_tensor

__all__ = ["flamingo_kv_ranges"]


def flamingo_kv_ranges(
    media_locations: torch.Tensor,
    tokens_per_image: int,
    only_attend_immediate_media: bool = True,
    num_media: int | None = None,
    use_cached_media: bool = False,
):
    """Key ranges of Flamingo / OpenFlamingo's ``MaskedCrossAttention`` from ``media_locations``.

    A text token's media time is the number of ``<image>`` tokens up to and including it (so the
    ``<image>`` token itself follows its image). With ``only_attend_immediate_media`` it sees only the
    image of its media time, keys ``[(t - 1) * n, t * n)``; otherwise every image up to it, keys
    ``[0, t * n)``. Tokens before the first image (``t == 0``) get an empty range (zero output):
    OpenFlamingo zeroes them in the first mode; in the second its softmax over an all-masked row
    averages every media token instead, which no trained model relies on.

    Args:
        media_locations: bool ``[B, Lq]``, True at ``<image>`` tokens.
        tokens_per_image: media tokens per image ``n`` (keys are ``[B, T * n, ...]``, image-major,
            OpenFlamingo's ``"b t n d -> b (t n) d"``).
        only_attend_immediate_media: OpenFlamingo's flag of the same name.
        num_media: ``T``, the images per sample. When given, a token whose media time exceeds it sees
            only the existing images (immediate mode: none), as OpenFlamingo's mask does.
        use_cached_media: OpenFlamingo's decode convention: every token's media time is the number of
            ``<image>`` tokens in its whole row (the text attends to the last cached image).

    Returns:
        ``(kv_start, kv_end)`` int32 ``[B, Lq]`` on media_locations' device.

    Errors (``ValueError``/``TypeError``, on every device, from shapes and Python ints only): shapes,
    dtypes, argument types, and the largest key end must fit int32: a row's media time is at most
    ``min(Lq, num_media)``, so ``min(Lq, num_media) * tokens_per_image`` (``Lq * tokens_per_image``
    without num_media) must be below 2**31. There is no value to check: any bool mask is valid.
    """
    fn = "flamingo_kv_ranges"
    check_tensor(fn, "media_locations", media_locations, dtypes=(torch.bool,), ndim=2)
    check_int(fn, "tokens_per_image", tokens_per_image, minimum=1)
    if num_media is not None:
        check_int(fn, "num_media", num_media, minimum=0)
    Lq = media_locations.shape[1]
    max_time = Lq if num_media is None else min(Lq, num_media)
    check_int32_keys(
        fn, f"min(Lq, num_media) * tokens_per_image = {max_time} * {tokens_per_image}", max_time * tokens_per_image
    )
    if use_cached_media:
        text_time = media_locations.sum(-1, keepdim=True).expand(media_locations.shape)
    else:
        text_time = media_locations.to(torch.int64).cumsum(-1)
    if num_media is None:
        last = text_time
        seen = text_time > 0
    else:
        last = text_time.clamp(max=num_media)
        seen = (text_time > 0) & (text_time <= num_media) if only_attend_immediate_media else text_time > 0
    end = torch.where(seen, last * tokens_per_image, 0)
    start = torch.where(seen, end - tokens_per_image, 0) if only_attend_immediate_media else torch.zeros_like(end)
    return start.to(torch.int32), end.to(torch.int32)
