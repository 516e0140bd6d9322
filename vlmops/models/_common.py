"""Helpers shared by the per-family builders: grid checks, where value checks run, and the image of each
packed token.

Value checks (what the data of an index argument must satisfy) run where they cost no sync: on a CPU
tensor outside torch.compile tracing they read the data on the host and raise ``ValueError`` naming the
argument; elsewhere (CUDA, meta, under torch.compile) they become one ``torch._assert_async`` on the
device, which does not synchronize (on CUDA a failed check is a device-side assertion). Builders skip
them with ``check_values=False``. Checks that need only shapes and Python ints run everywhere.
"""

import math

import torch

from vlmops.ops._checks import check_int, check_tensor

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
_INT_DTYPES = (torch.int64, torch.int32)


def check_grid(fn: str, name: str, grid, columns: int) -> None:
    check_tensor(fn, name, grid, dtypes=_INT_DTYPES, ndim=2)
    if grid.shape[1] != columns:
        raise ValueError(f"vlmops.{fn}: {name} must be [n, {columns}], got shape {tuple(grid.shape)}")


def checks_on_host(t: torch.Tensor) -> bool:
    """Whether value checks read ``t`` on the host (a CPU tensor, not under torch.compile tracing)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def check_grid_rows(fn: str, name: str, rows: list, axes: str, merge: int, merge_name: str) -> list:
    """Host check of grid rows (``grid.tolist()``, columns named by ``axes``, e.g. "thw"): entries >= 0,
    h and w multiples of ``merge``, each row's token count (the product, exact) below 2**63.
    Returns the exact token counts of the rows."""
    counts = []
    for i, row in enumerate(rows):
        shown = ", ".join(f"{axis}={value}" for axis, value in zip(axes, row))
        if min(row) < 0:
            raise ValueError(f"vlmops.{fn}: {name} entries must be >= 0, got {name}[{i}] = ({shown})")
        if merge > 1 and (row[-2] % merge or row[-1] % merge):
            raise ValueError(
                f"vlmops.{fn}: {name}[{i}] = ({shown}): h and w must be multiples of {merge_name} = {merge}"
            )
        count = math.prod(row)
        if count > INT64_MAX:
            raise ValueError(
                f"vlmops.{fn}: {name}[{i}] = ({shown}) has {'*'.join(axes)} = {count} tokens, more than int64 can count"
            )
        counts.append(count)
    return counts


def grid_token_count(
    fn: str,
    name: str,
    grid: torch.Tensor,
    axes: str,
    merge: int,
    merge_name: str,
    count_name: str,
    count,
    check_values: bool,
) -> int:
    """The token count sum(prod(row)) of a patch grid ``[n, len(axes)]`` (last two columns h, w), checked.

    ``count`` (num_tokens / num_patches, an int or None) is the count the caller knows; when None it is
    computed, which reads the grid (a host sync where the grid lives on a GPU). Value checks (see the
    module docstring): entries >= 0, h and w multiples of ``merge``, and the exact count below 2**63 and
    equal to ``count``. On the device the count is summed in float64, which never wraps and is exact
    below 2**53, so a grid whose int64 arithmetic would wrap fails the check.
    """
    if count is not None:
        check_int(fn, count_name, count, minimum=0)
    formula = f"sum({'*'.join(axes)})"
    if check_values and checks_on_host(grid):
        total = sum(check_grid_rows(fn, name, grid.tolist(), axes, merge, merge_name))
        if total > INT64_MAX:
            raise ValueError(f"vlmops.{fn}: {name} has {formula} = {total} tokens, more than int64 can count")
        if count is not None and count != total:
            raise ValueError(
                f"vlmops.{fn}: {count_name} = {count} must equal the token count of {name}, {formula} = {total}"
            )
        return total
    g = grid.long()
    if count is None:
        count = int(g.prod(-1).sum())
    if check_values:
        ok = (g >= 0).all() & (g.double().prod(-1).sum() == count)
        if merge > 1:
            ok = ok & (g[:, -2:] % merge == 0).all()
        torch._assert_async(
            ok,
            f"vlmops.{fn}: {name} must be >= 0 with h and w multiples of {merge_name}, "
            f"and {count_name} must equal {formula}",
        )
    return count


def check_int32_keys(fn: str, what: str, keys: int) -> None:
    """The key ranges are int32: their largest end, ``keys`` (from shapes and Python ints), must fit."""
    if keys > INT32_MAX:
        raise ValueError(
            f"vlmops.{fn}: {what} = {keys} keys do not fit the int32 kv_start/kv_end (at most {INT32_MAX})"
        )


def image_of_token(counts: torch.Tensor, num_tokens: int):
    """(image index, token index within its image) of every token of a packed sequence of
    ``num_tokens = sum(counts)`` tokens, on counts' device (no host read)."""
    ends = counts.cumsum(0)
    token = torch.arange(num_tokens, device=counts.device)
    image = torch.searchsorted(ends, token, right=True).clamp_(max=max(counts.shape[0] - 1, 0))
    local = token - (ends - counts)[image]
    return image, local
