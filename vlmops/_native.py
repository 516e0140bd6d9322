"""Loading of the native library vlmops._C, which registers torch.ops.vlmops.*.

When it is missing (a checkout that was not built) or cannot be loaded, importing vlmops warns once
(RuntimeWarning) and every op runs its pure-PyTorch reference (vlmops.reference) instead.
"""

import importlib
import importlib.util
import os
import sys
import warnings

import torch  # noqa: F401  (libtorch must be loaded before the op library)

try:
    _C = importlib.import_module("vlmops._C")
except ImportError as error:
    _C = None
    _IMPORT_ERROR = error
else:
    _IMPORT_ERROR = None


def available() -> bool:
    """True when the native op library is loaded (torch.ops.vlmops.* exist)."""
    return _C is not None


def _caller_stacklevel() -> int:
    """warnings.warn's stacklevel, from the function calling it, that points at the code importing or
    calling vlmops: the first frame outside this package (warnings skips the import machinery's frames
    without counting them)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None:
        filename = frame.f_code.co_filename
        internal = "importlib" in filename and "_bootstrap" in filename
        if not internal and not filename.startswith(package):
            break
        frame, level = frame.f_back, level + (not internal)
    return level


def _warn_unbuilt() -> None:
    """Warn that the ops run their references because the native library is missing (at import)."""
    missing = not isinstance(_IMPORT_ERROR, ImportError) or (
        isinstance(_IMPORT_ERROR, ModuleNotFoundError) and importlib.util.find_spec("vlmops._C") is None
    )
    reason = "is not built (vlmops._C)" if missing else f"failed to load ({_IMPORT_ERROR})"
    warnings.warn(
        f"vlmops: the native library {reason}; every op runs its pure-PyTorch reference instead. "
        "Build it in the checkout with `pip install --no-build-isolation --no-deps -e .` "
        "(see the README's Install section).",
        RuntimeWarning,
        stacklevel=_caller_stacklevel(),
    )


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


if _C is None:
    _warn_unbuilt()
