"""vlmops.models.flamingo: the key ranges of Flamingo / OpenFlamingo's MaskedCrossAttention against
OpenFlamingo's mask, key counts past int32 (a ValueError on every device, from shapes), no host read, and
argument checks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmops
from vlmops.reference.gated_cross_attention import dense_mask, openflamingo_mask


@pytest.mark.parametrize("only_immediate", [True, False])
@pytest.mark.parametrize("num_media", [None, 3])
def test_flamingo_ranges_follow_openflamingo(only_immediate, num_media):
    n = 5
    locations = torch.zeros(3, 16, dtype=torch.bool)
    locations[0, [2, 6, 7]] = True  # text before the first image, two adjacent <image> tokens
    locations[1, [0, 9]] = True
    locations[2, [1, 3, 5, 8]] = True  # more <image> tokens than num_media
    T = 3 if num_media is None else num_media
    start, end = vlmops.flamingo_kv_ranges(locations, n, only_immediate, num_media=num_media)
    if num_media is None:
        start, end = start.clamp(max=T * n), end.clamp(max=T * n)
    expected = openflamingo_mask(locations, T, n, only_immediate)
    text_time = locations.long().cumsum(-1)
    # Rows that see an image: OpenFlamingo's mask exactly. Rows before the first image (and, in the
    # immediate mode, rows past the last image) see nothing: OpenFlamingo zeroes them in the immediate
    # mode; in the other its softmax over an all-masked row is a uniform average, which the builder
    # deliberately maps to an empty row.
    seen = (text_time > 0) & ((text_time <= T) if only_immediate else True)
    got = dense_mask(start, end, T * n)
    assert torch.equal(got[seen], expected[seen])
    assert not got[~seen].any()


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    Lq=st.integers(0, 12),
    T=st.integers(1, 4),
    n=st.integers(1, 4),
    only_immediate=st.booleans(),
    data=st.data(),
)
def test_hypothesis_flamingo_ranges_follow_openflamingo(B, Lq, T, n, only_immediate, data):
    locations = torch.tensor(
        data.draw(st.lists(st.lists(st.booleans(), min_size=Lq, max_size=Lq), min_size=B, max_size=B)), dtype=torch.bool
    ).view(B, Lq)
    start, end = vlmops.flamingo_kv_ranges(locations, n, only_immediate, num_media=T)
    text_time = locations.long().cumsum(-1)
    seen = (text_time > 0) & ((text_time <= T) if only_immediate else True)
    got = dense_mask(start, end, T * n)
    assert torch.equal(got[seen], openflamingo_mask(locations, T, n, only_immediate)[seen])
    assert not got[~seen].any()


def test_flamingo_ranges_refuse_key_counts_past_int32():
    """kv_start/kv_end are int32: the largest end, min(Lq, num_media) * tokens_per_image, must fit."""
    locations = torch.tensor([[True, False, True]])
    with pytest.raises(
        ValueError,
        match=r"vlmops.flamingo_kv_ranges: min\(Lq, num_media\) \* tokens_per_image = "
        r"1 \* 2147483648 = 2147483648 keys do not fit the int32 kv_start/kv_end",
    ):
        vlmops.flamingo_kv_ranges(locations, 2**31, num_media=1)
    with pytest.raises(ValueError, match=r"= 3 \* 1073741824 = 3221225472 keys do not fit"):
        vlmops.flamingo_kv_ranges(locations, 2**30)  # without num_media a row may reach media time Lq
    start, end = vlmops.flamingo_kv_ranges(locations, 2**31 - 1, num_media=1)  # the largest that fits
    assert start.tolist() == [[0, 0, 0]] and end.tolist() == [[2**31 - 1, 2**31 - 1, 0]]
    n = (2**31 - 1) // 2  # two images: the last end is 2**31 - 2
    start, end = vlmops.flamingo_kv_ranges(locations, n, only_attend_immediate_media=False, num_media=2)
    assert start.tolist() == [[0, 0, 0]] and end.tolist() == [[n, n, 2 * n]]


def test_flamingo_ranges_are_pure_tensor_code():
    locations = torch.zeros(2, 7, dtype=torch.bool, device="meta")
    for use_cached_media in (False, True):
        start, end = vlmops.flamingo_kv_ranges(locations, 4, num_media=3, use_cached_media=use_cached_media)
        assert start.shape == end.shape == (2, 7) and start.dtype == end.dtype == torch.int32


def test_builders_validate_arguments():
    with pytest.raises(ValueError, match="media_locations must be one of bool"):
        vlmops.flamingo_kv_ranges(torch.zeros(1, 3), 4)
    with pytest.raises(ValueError, match="tokens_per_image must be >= 1"):
        vlmops.flamingo_kv_ranges(torch.zeros(1, 3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="num_media must be >= 0"):
        vlmops.flamingo_kv_ranges(torch.zeros(1, 3, dtype=torch.bool), 4, num_media=-1)
