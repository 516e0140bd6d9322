"""vlmops.models.mllama: the key ranges of Llama 3.2 Vision's cross-attention against transformers' masks,
rows with no single key range (ValueError on CPU, a device assertion elsewhere), key counts past int32
(a ValueError on every device, from shapes), no host read, and hypothesis over masks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

import vlmops
from vlmops.reference.gated_cross_attention import dense_mask, mllama_mask


def test_mllama_ranges_follow_transformers_mask():
    tokens = 3
    mask = torch.zeros(2, 7, 2, 4, dtype=torch.int64)
    mask[0, 2:5, 0, :4] = 1  # image 0 (4 tiles) from row 2
    mask[0, 5:, 1, :2] = 1  # image 1 (2 real tiles) from row 5
    mask[1, 1:, 0, :3] = 1
    for masked_rows in ("empty", "all"):
        start, end = vlmops.mllama_kv_ranges(mask, tokens, masked_rows=masked_rows)
        got = dense_mask(start, end, 2 * 4 * tokens)
        expected = mllama_mask(mask, tokens)
        seen = expected.any(-1)
        assert torch.equal(got[seen], expected[seen])
        assert torch.all(got[~seen] == (masked_rows == "all"))
    additive, _ = _prepare_cross_attention_mask(mask, num_vision_tokens=tokens, dtype=torch.float32)
    start, end = vlmops.mllama_kv_ranges_from_additive_mask(additive, tokens)
    assert torch.equal(dense_mask(start, end, 24), additive[:, 0] == 0)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2),
    Lq=st.integers(1, 6),
    images=st.integers(1, 3),
    tiles=st.integers(1, 4),
    tokens=st.integers(1, 3),
    data=st.data(),
)
def test_hypothesis_mllama_ranges_follow_transformers_mask(B, Lq, images, tiles, tokens, data):
    """Each row sees one contiguous run of (image, tile) chunks, or none: the ranges are transformers' mask."""
    C = images * tiles
    mask = torch.zeros(B, Lq, C, dtype=torch.int64)
    for b in range(B):
        for i in range(Lq):
            first = data.draw(st.integers(0, C))
            mask[b, i, first : data.draw(st.integers(first, C))] = 1
    mask = mask.view(B, Lq, images, tiles)
    start, end = vlmops.mllama_kv_ranges(mask, tokens, masked_rows="all")
    additive, _ = _prepare_cross_attention_mask(mask, num_vision_tokens=tokens, dtype=torch.float32)
    assert torch.equal(dense_mask(start, end, C * tokens), additive[:, 0] == 0)
    assert all(
        torch.equal(a, b) for a, b in zip(vlmops.mllama_kv_ranges_from_additive_mask(additive, tokens), (start, end))
    )


def test_mllama_ranges_refuse_non_contiguous_tiles():
    mask = torch.zeros(1, 3, 2, 4, dtype=torch.int64)
    mask[0, 1:, 0, :2] = 1
    mask[0, 2:, 1, :4] = 1  # row 2 sees tiles 0-1 of image 0 and all of image 1: a gap
    with pytest.raises(ValueError, match=r"row 2 sees chunks \[0, 1, 4, 5, 6, 7\]"):
        vlmops.mllama_kv_ranges(mask, 5)
    additive, _ = _prepare_cross_attention_mask(mask, num_vision_tokens=5, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"row 2 sees chunks \[0, 1, 4, 5, 6, 7\]"):
        vlmops.mllama_kv_ranges_from_additive_mask(additive, 5)
    # check_values=False skips the check: the row then spans its first to its last tile.
    start, end = vlmops.mllama_kv_ranges(mask, 5, check_values=False)
    assert (start[0, 2].item(), end[0, 2].item()) == (0, 40)


def test_mllama_ranges_refuse_key_counts_past_int32():
    """kv_start/kv_end are int32: n_images * n_tiles * tokens_per_tile (Lk) must fit, or the ends wrap."""
    mask = torch.ones(1, 2, 2, 2, dtype=torch.int64)
    with pytest.raises(
        ValueError,
        match=r"vlmops.mllama_kv_ranges: n_images \* n_tiles \* tokens_per_tile = "
        r"4294967296 keys do not fit the int32 kv_start/kv_end",
    ):
        vlmops.mllama_kv_ranges(mask, 2**30)
    mask = torch.ones(1, 2, 1, 1, dtype=torch.int64)  # one tile of 2**31 - 1 keys: the largest that fits
    start, end = vlmops.mllama_kv_ranges(mask, 2**31 - 1)
    assert start.tolist() == [[0, 0]] and end.tolist() == [[2**31 - 1] * 2]
    with pytest.raises(ValueError, match=r"n_images \* n_tiles \* tokens_per_tile = 2147483648 keys"):
        vlmops.mllama_kv_ranges(mask, 2**31)
    # Lk = 2**31 keys of an additive mask: a stride-0 view, no memory.
    additive = torch.zeros(1, 1, 2, 1).expand(1, 1, 2, 2**31)
    with pytest.raises(
        ValueError,
        match=r"vlmops.mllama_kv_ranges_from_additive_mask: Lk = 2147483648 keys do not "
        "fit the int32",
    ):
        vlmops.mllama_kv_ranges_from_additive_mask(additive, 2**30)


def test_mllama_ranges_are_pure_tensor_code():
    """On meta tensors nothing can be read back: the builders need no host read, checks included."""
    mask = torch.ones(2, 5, 2, 3, device="meta")
    additive = torch.zeros(2, 1, 5, 24, device="meta")
    for check_values in (True, False):
        start, end = vlmops.mllama_kv_ranges(mask, 4, check_values=check_values)
        assert start.shape == end.shape == (2, 5) and start.dtype == end.dtype == torch.int32
        start, end = vlmops.mllama_kv_ranges_from_additive_mask(additive, 4, check_values=check_values)
        assert start.shape == end.shape == (2, 5)


def test_mllama_ranges_of_no_text_rows():
    start, end = vlmops.mllama_kv_ranges(torch.zeros(2, 0, 2, 3), 4)
    assert start.shape == end.shape == (2, 0)


def test_mllama_builders_validate_arguments():
    with pytest.raises(ValueError, match="masked_rows must be"):
        vlmops.mllama_kv_ranges(torch.zeros(1, 3, 1, 1), 4, masked_rows="meta")
    with pytest.raises(ValueError, match="cross_attention_mask must have 4 dims"):
        vlmops.mllama_kv_ranges(torch.zeros(1, 3, 1), 4)
    with pytest.raises(ValueError, match=r"attention_mask must be \[B, 1, Lq, Lk\] with Lk a multiple of tokens_"):
        vlmops.mllama_kv_ranges_from_additive_mask(torch.zeros(1, 1, 3, 10), 4)
