"""Helpers shared by the per-family builders: grid checks and the image of each packed token."""

import torch

from vlmops.ops._checks import check_tensor

_INT_DTYPES = (torch.int64, torch.int32)


def check_grid(fn: str, name: str, grid, columns: int) -> None:
    check_tensor(fn, name, grid, dtypes=_INT_DTYPES, ndim=2)
    if grid.shape[1] != columns:
        raise ValueError(f"vlmops.{fn}: {name} must be [n, {columns}], got shape {tuple(grid.shape)}")


def image_of_token(counts: torch.Tensor, num_tokens):
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
