"""Loading of the native library vlmops._C, which registers torch.ops.vlmops.*.

When it was not built, every op falls back to its pure-PyTorch reference (vlmops.reference) and a
warning says so once.
"""

import warnings

import torch  # noqa: F401  (libtorch must be loaded before the op library)

try:
    from vlmops import _C
except ImportError as error:  # pragma: no cover - exercised only on an unbuilt checkout
    _C = None
    _IMPORT_ERROR = error
else:
    _IMPORT_ERROR = None

_warned = False


def available() -> bool:
    """True when the native op library is loaded (torch.ops.vlmops.* exist)."""
    return _C is not None


def warn_fallback(op: str) -> None:
    global _warned
    if not _warned:
        warnings.warn(
            f"vlmops: the native library is not built ({_IMPORT_ERROR}); vlmops.{op} and every other op "
            "run their pure-PyTorch reference instead. Build with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned = True


def build_info() -> dict:
    """What the native library was built with: CUDA kernels or not, CUDA archs, OpenMP (the CPU
    kernels' at::parallel_for runs on one thread without it), torch version."""
    if _C is None:
        return {"native": False, "built_with_cuda": False, "cuda_archs": "", "openmp": False, "torch_version": None}
    return {
        "native": True,
        "built_with_cuda": bool(_C.built_with_cuda),
        "cuda_archs": _C.cuda_archs,
        "openmp": bool(_C.openmp),
        "torch_version": _C.torch_version,
    }
