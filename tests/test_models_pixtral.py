"""vlmops.models.pixtral: Pixtral's packed (h, w) RoPE positions against the positions transformers' Pixtral
vision model feeds its rotary embedding, the grids it cannot take (ValueError naming the argument on CPU),
no host read with num_tokens given, hypothesis over grids, and the RoPE table's argument checks."""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PixtralVisionConfig
from transformers.models.pixtral import modeling_pixtral

import vlmops

PATCH = 4


@functools.cache
def _pixtral_model():
    cfg = PixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        head_dim=16,
        image_size=64,
        patch_size=PATCH,
        num_channels=3,
    )
    return modeling_pixtral.PixtralVisionModel(cfg).eval()


def _pixtral_model_positions(grid_hw):
    """Positions the Pixtral vision model itself feeds its rotary embedding (captured by a hook)."""
    model = _pixtral_model()
    captured = {}
    hook = model.patch_positional_embedding.register_forward_hook(
        lambda mod, args, out: captured.update(positions=args[1])
    )
    sizes = [(h * PATCH, w * PATCH) for h, w in grid_hw]
    pixels = torch.randn(len(sizes), 3, max(s[0] for s in sizes), max(s[1] for s in sizes))
    try:
        with torch.no_grad():
            model(pixels, image_sizes=torch.tensor(sizes))
    finally:
        hook.remove()
    return captured["positions"]


def test_pixtral_positions_match_transformers():
    grid_hw = [[3, 5], [4, 2], [1, 1]]
    expected = _pixtral_model_positions(grid_hw)
    got = vlmops.pixtral_rope_positions(torch.tensor(grid_hw), num_tokens=expected.shape[0])
    assert torch.equal(got, expected)
    assert torch.equal(vlmops.pixtral_rope_positions(torch.tensor(grid_hw)), expected)
    assert torch.equal(
        vlmops.pixtral_rope_positions(torch.tensor(grid_hw).int(), expected.shape[0], check_values=False), expected
    )


@settings(max_examples=25, deadline=None)
@given(grid=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4))
def test_hypothesis_pixtral_positions_match_transformers(grid):
    expected = _pixtral_model_positions(grid)
    assert torch.equal(vlmops.pixtral_rope_positions(torch.tensor(grid), num_tokens=expected.shape[0]), expected)


# Grids no image has: negative sizes, a num_tokens other than sum(h*w) (the packed patch embeddings are
# sum(h*w) long), and counts whose int64 arithmetic wraps to agree with num_tokens (2**64 -> 0).
BAD_GRIDS = [
    ([[3, -5]], 0, r"grid_hw entries must be >= 0, got grid_hw\[0\] = \(h=3, w=-5\)"),
    ([[-3, -5]], 15, r"grid_hw entries must be >= 0"),
    ([[3, 5], [2, 2]], 18, r"num_tokens = 18 must equal the token count of grid_hw, sum\(h\*w\) = 19"),
    ([[3, 5]], 16, r"num_tokens = 16 must equal the token count of grid_hw, sum\(h\*w\) = 15"),
    ([[2**32, 2**32]], 0, r"grid_hw\[0\] = \(h=4294967296, w=4294967296\) has h\*w = \d+ tokens, more than int64"),
    ([[2**31, 2**31]] * 4, 0, r"grid_hw has sum\(h\*w\) = 18446744073709551616 tokens, more than int64 can count"),
]


@pytest.mark.parametrize("grid, num_tokens, match", BAD_GRIDS)
def test_pixtral_positions_reject_impossible_grids(grid, num_tokens, match):
    with pytest.raises(ValueError, match="vlmops.pixtral_rope_positions: " + match):
        vlmops.pixtral_rope_positions(torch.tensor(grid), num_tokens=num_tokens)


def test_pixtral_positions_argument_checks():
    with pytest.raises(ValueError, match=r"grid_hw must be \[n, 2\]"):
        vlmops.pixtral_rope_positions(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="grid_hw must be one of int64, int32"):
        vlmops.pixtral_rope_positions(torch.ones(2, 2))
    with pytest.raises(TypeError, match="num_tokens must be an int"):
        vlmops.pixtral_rope_positions(torch.ones(2, 2, dtype=torch.long), num_tokens=2.0)


def test_position_builder_is_pure_tensor_code():
    """On meta tensors nothing can be read back: any .item()/.tolist() or data-dependent Python branch
    raises. So the builder is host-sync free (usable under CUDA graph capture) when num_tokens is given."""
    grid_hw = torch.tensor([[3, 5], [4, 2]], device="meta")
    for check_values in (True, False):
        assert vlmops.pixtral_rope_positions(grid_hw, num_tokens=23, check_values=check_values).shape == (23, 2)


def test_table_builder_checks_arguments():
    with pytest.raises(ValueError, match="even length"):
        vlmops.pixtral_rope_tables(torch.ones(5))
