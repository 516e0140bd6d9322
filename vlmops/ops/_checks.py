"""Argument checks shared by the op wrappers: each error names the argument, what was expected and what came."""

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(fn: str, name: str, t, *, dtypes=FLOAT_DTYPES, ndim=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"vlmops.{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"vlmops.{fn}: {name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"vlmops.{fn}: {name} must be one of {names}, got {str(t.dtype).replace('torch.', '')}")


def check_same_device(fn: str, ref_name: str, ref: torch.Tensor, **others) -> None:
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"vlmops.{fn}: {name} is on {t.device} but {ref_name} is on {ref.device}")


def check_int(fn: str, name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"vlmops.{fn}: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"vlmops.{fn}: {name} must be >= {minimum}, got {value}")
    return value
