"""Grid sizes of vlmops' memory-bound GPU kernels at the benchmark shapes, without a GPU.

For every entry of the memory-bound benchmarks (benchmarks/bench_rope.py, bench_rms_norm.py,
bench_silu_mul.py, bench_pixel_shuffle.py and bench_patch_embed.py's fused uint8 normalize), at the
default and --full sizes, with the benchmark's dtype and memory layout:

- Triton kernels: the op's Triton launcher (named by its registry ``OpDef.triton``) runs on fake CUDA
  tensors (``FakeTensorMode``) with ``JITFunction.run`` replaced by a recorder, so each launch reports
  the grid it would get; the device's multiprocessor count is stubbed (``SMS``, an H100/H200). The
  launches are recorded a second time with half as many multiprocessors: a grid that changes is sized
  by the SM count (a persistent or capped grid, "sm-sized").
- CUDA C++ kernels: ``vlmops._C.launch_geometry``, the functions of csrc/include/vlmops/launch_geometry.h
  that their launchers call (needs the built native library; CUDA is not needed).

Each row gives the grid, its programs (blocks) and waves = programs / SMS, and the bytes each thread
moves per access where the launch fixes it (the Triton kernels' VEC, the CUDA copy's vector).

    python tools/launch_grids.py    (tools/kernel_report.py prints the same table after its own)
"""

import contextlib
import importlib
import sys
import types
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMS = 132  # multiprocessors of an H100 SXM / H200
TIERS = ("default", "full")
COLUMNS = (
    "kernel",
    "backend",
    "entry",
    "tier",
    "dtype",
    "grid",
    "programs",
    "sms",
    "waves",
    "sm_sized",
    "vector_bytes",
)


def _shape(shapes: dict, tier: str):
    """benchmarks.harness.pick without a pytest request: the tier's entry, else the default one."""
    return shapes.get(tier, shapes["default"])


def _bench(name: str):
    """benchmarks.<name> (its pytest marks, registered by benchmarks/conftest.py, are unknown here)."""
    import pytest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return importlib.import_module(f"benchmarks.{name}")


def _triton_launcher(op: str):
    """The Triton launcher of `op`, named by its registry OpDef.triton ("module:function")."""
    import vlmops  # noqa: F401  (defines every op)
    from vlmops.ops import registry

    module, function = registry.defined()[op].triton.split(":")
    return getattr(importlib.import_module(module), function)


def _native():
    """vlmops._C.launch_geometry, or None when the native library is not built."""
    from vlmops import _native as native

    return native._C.launch_geometry if native.available() else None


class _Case:
    """One benchmark entry: how it calls the op's Triton launcher (on tensors made by `triton`, called
    inside FakeTensorMode) and which CUDA C++ launches it makes (`native(launch_geometry)`)."""

    def __init__(self, entry, tier, dtype, op=None, triton=None, native=None):
        self.entry, self.tier, self.dtype, self.op, self.triton, self.native = entry, tier, dtype, op, triton, native


def _cuda(*shape, dtype):
    import torch

    return torch.empty(*shape, dtype=dtype, device="cuda")


def _rope_cases(tier):
    import torch

    bench_rope = _bench("bench_rope")

    dtype = bench_rope.DTYPE
    side, heads, D = _shape(bench_rope.VISION_SHAPES, tier)
    N, P = side * side, D // 2

    def vision():
        q, k = _cuda(1, N, heads, D, dtype=dtype), _cuda(1, N, heads, D, dtype=dtype)
        positions = _cuda(1, N, 2, dtype=torch.int64)
        return q, k, positions, _cuda(P, dtype=torch.int64), _cuda(P, dtype=torch.float32), True

    acc_bytes = 8 if dtype == torch.float64 else 4  # the CUDA kernel's cos/sin rows, in the math type
    yield _Case(
        "rope:qwen2-vl-vision (fwd, bwd)", tier, dtype, "rope", vision, lambda g, P=P: [g.rope(N, P, acc_bytes)]
    )
    B, S, HQ, HK, D = _shape(bench_rope.TEXT_SHAPES, tier)
    P = D // 2

    def text():  # layout "bhsd": [B, H, S, D] memory seen as [B, S, H, D]; positions [3, B, S] permuted
        q = _cuda(B, HQ, S, D, dtype=dtype).transpose(1, 2)
        k = _cuda(B, HK, S, D, dtype=dtype).transpose(1, 2)
        positions = _cuda(3, B, S, dtype=torch.int64).permute(1, 2, 0)
        return q, k, positions, _cuda(P, dtype=torch.int64), _cuda(P, dtype=torch.float32), False

    yield _Case(
        "rope:qwen2.5-vl-7b-text (fwd, bwd)", tier, dtype, "rope", text, lambda g, P=P: [g.rope(B * S, P, acc_bytes)]
    )


def _rms_norm_cases(tier):
    import torch

    bench_rms_norm = _bench("bench_rms_norm")

    tokens, C = _shape(bench_rms_norm.SHAPES, tier)
    for dtype in (torch.float32, torch.bfloat16):

        def forward(dtype=dtype):
            return _cuda(tokens, C, dtype=dtype), _cuda(C, dtype=dtype), bench_rms_norm.EPS

        def backward(dtype=dtype):
            x = _cuda(tokens, C, dtype=dtype)
            return _cuda(tokens, C, dtype=dtype), x, _cuda(C, dtype=dtype), _cuda(tokens, dtype=torch.float32)

        yield _Case("rms_norm:qwen2.5-vl-vision:fwd", tier, dtype, "rms_norm", forward)
        if dtype == torch.float32:  # the benchmark's fwd+bwd entry is float32
            yield _Case("rms_norm:qwen2.5-vl-vision:bwd", tier, dtype, "rms_norm_backward", backward)


def _silu_mul_cases(tier):
    import torch

    bench_silu_mul = _bench("bench_silu_mul")

    M, I = _shape(bench_silu_mul.SHAPES, tier)

    for dtype in (torch.float32, torch.bfloat16):
        if dtype == torch.bfloat16 and tier != "full":
            continue  # a --full entry

        def forward(dtype=dtype):  # bench_silu_mul._gemm_rows on CUDA: contiguous rows, as F.linear writes them
            return _cuda(M, I, dtype=dtype), _cuda(M, I, dtype=dtype)

        def backward(dtype=dtype):
            return _cuda(M, I, dtype=dtype), *forward(dtype)

        yield _Case("silu_mul:qwen2.5-vl-vision:fwd", tier, dtype, "silu_mul", forward)
        if dtype == torch.float32:
            yield _Case("silu_mul:qwen2.5-vl-vision:bwd", tier, dtype, "silu_mul_backward", backward)


def _pixel_shuffle_cases(tier):
    import torch

    bench_pixel_shuffle = _bench("bench_pixel_shuffle")

    dtype = bench_pixel_shuffle.DTYPE
    size = torch.empty((), dtype=dtype).element_size()
    for name in ("internvl-300m", "smolvlm-256m"):
        if name != "internvl-300m" and tier != "full":
            continue
        batch, side, C, s = _shape(bench_pixel_shuffle.SHAPES[name], tier)
        x_strides = [side * side * C, side * C, C, 1]
        n, rows = s * s * C, batch * (side // s) ** 2
        y_strides = [rows // batch * n, side // s * n, n, 1]

        def copy(batch=batch, side=side, C=C, s=s):
            return _cuda(batch, side * side, C, dtype=dtype).unflatten(1, (side, side)), s

        def native(g, C=C, x_strides=x_strides, y_strides=y_strides, total=rows * n):
            return [g.pixel_shuffle_copy(size, C, x_strides, y_strides, 0, 0, total)]

        yield _Case(f"pixel_shuffle:{name}:fwd", tier, dtype, "pixel_shuffle", copy, native)
    for name in ("internvl-300m", "internvit-6b"):
        if name != "internvl-300m" and tier != "full":
            continue
        batch, side, C, s = _shape(bench_pixel_shuffle.SHAPES[name], tier)
        n, rows = s * s * C, batch * (side // s) ** 2

        def forward(batch=batch, side=side, C=C, s=s, n=n):
            return _cuda(batch, side, side, C, dtype=dtype), s, _cuda(n, dtype=dtype), _cuda(n, dtype=dtype), 1e-5

        def backward(batch=batch, side=side, C=C, s=s, n=n):
            grad_out = _cuda(batch, side // s, side // s, n, dtype=dtype)
            stats = [_cuda(batch, side // s, side // s, dtype=torch.float32) for _ in range(2)]
            return grad_out, _cuda(batch, side, side, C, dtype=dtype), *stats, _cuda(n, dtype=dtype), s

        entry = f"pixel_shuffle_layer_norm:{name}"
        yield _Case(
            f"{entry}:fwd",
            tier,
            dtype,
            "pixel_shuffle_layer_norm",
            forward,
            lambda g, r=rows: [g.pixel_shuffle_layer_norm(r)],
        )
        yield _Case(
            f"{entry}:bwd",
            tier,
            dtype,
            "pixel_shuffle_layer_norm_backward",
            backward,
            lambda g, r=rows, n=n: [g.pixel_shuffle_layer_norm(r), g.pixel_shuffle_layer_norm_affine(r, n)],
        )


def _patch_embed_cases(tier):
    import torch

    bench = _bench("bench_patch_embed")

    B, side = _shape(bench.SHAPES["siglip-so400m"], tier)
    D, P = bench.MODEL_DIMS["siglip-so400m"], bench.PATCH
    whole = side // P * P
    dtype = torch.bfloat16  # the benchmark's CUDA dtype

    def fused():
        pixels = _cuda(B, 3, side, side, dtype=torch.uint8)[..., :whole, :whole]
        weight, bias = _cuda(D, 3, P, P, dtype=dtype), _cuda(D, dtype=dtype)
        mean, std = _cuda(3, dtype=torch.float32), _cuda(3, dtype=torch.float32)
        return pixels, weight, bias, mean, std, 1 / 255, _cuda((side // P) ** 2, D, dtype=dtype), None

    yield _Case("patch_embed:siglip-so400m-uint8:fwd", tier, dtype, "patch_embed", fused)


CASES = (_rope_cases, _rms_norm_cases, _silu_mul_cases, _pixel_shuffle_cases, _patch_embed_cases)


@contextlib.contextmanager
def _recorder(multiprocessors: int):
    """Triton launches record (kernel, grid, VEC, element size) instead of running; CUDA device queries
    answer `multiprocessors`; the launchers' device guards do nothing (there is no device)."""
    import torch
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    import vlmops.triton

    launches = []

    def run(self, *args, grid, warmup, **kwargs):
        grid = grid(kwargs) if callable(grid) else grid
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        size = tensors[0].element_size() if tensors else None
        vec = kwargs.get("VEC")
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        launches.append((self.fn.__name__, grid, vec * size if vec and size else None))

    families = [importlib.import_module(name) for name in vlmops.triton.FAMILIES]
    saved = [(module, module.device_guard) for module in families if hasattr(module, "device_guard")]
    saved_runs, saved_properties = (JITFunction.run, InterpretedFunction.run), torch.cuda.get_device_properties
    JITFunction.run = InterpretedFunction.run = run  # (kernels are InterpretedFunctions under TRITON_INTERPRET)
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=multiprocessors)
    vlmops.triton._cuda_multiprocessors.cache_clear()  # (the launchers' cached count of the stub)
    for module, _ in saved:
        module.device_guard = lambda t: contextlib.nullcontext()
    try:
        yield launches
    finally:
        (JITFunction.run, InterpretedFunction.run), torch.cuda.get_device_properties = saved_runs, saved_properties
        vlmops.triton._cuda_multiprocessors.cache_clear()
        for module, guard in saved:
            module.device_guard = guard


def triton_launches(case: _Case, multiprocessors: int = SMS) -> list:
    """(kernel, grid, vector bytes) of every Triton launch of `case`'s op, recorded on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with _recorder(multiprocessors) as launches, FakeTensorMode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fake tensors' data_ptr (the launchers' alignment checks) warns
        _triton_launcher(case.op)(*case.triton())
    return launches


def _row(kernel, backend, case, grid, sm_sized, vector_bytes):
    programs = grid[0] * grid[1] * grid[2]
    return {
        "kernel": kernel,
        "backend": backend,
        "entry": case.entry,
        "tier": case.tier,
        "dtype": str(case.dtype).replace("torch.", ""),
        "grid": list(grid),
        "programs": programs,
        "sms": SMS,
        "waves": round(programs / SMS, 2),
        "sm_sized": sm_sized,
        "vector_bytes": vector_bytes,
    }


def collect() -> list:
    """One row per kernel launch per benchmark entry and tier (keys: COLUMNS)."""
    import torch

    native = _native()
    rows = []
    for tier in TIERS:
        for cases in CASES:
            for case in cases(tier):
                launches = triton_launches(case)
                halved = triton_launches(case, SMS // 2)
                for (kernel, grid, vector), (_, grid_half, _) in zip(launches, halved):
                    rows.append(_row(kernel, "triton", case, grid, grid != grid_half, vector))
                if case.native is None or native is None:
                    continue
                size = torch.empty((), dtype=case.dtype).element_size()
                for kernel, geometry in zip(_NATIVE_KERNELS[case.op], case.native(native)):
                    grid = (*geometry["grid"], 1)
                    vector = geometry["vector_elements"] * size if geometry["vector_elements"] > 1 else None
                    rows.append(_row(kernel, "cuda", case, grid, False, vector))
    return rows


# The CUDA C++ kernels each op's CUDA entry launches, in the order of its case's `native` geometries.
_NATIVE_KERNELS = {
    "rope": ("rope_kernel",),
    "pixel_shuffle": ("shuffle_copy_kernel",),
    "pixel_shuffle_layer_norm": ("layer_norm_forward_kernel",),
    "pixel_shuffle_layer_norm_backward": ("layer_norm_backward_input_kernel", "layer_norm_backward_affine_kernel"),
}


if __name__ == "__main__":
    from benchmarks.report import grid_table_text

    print(grid_table_text({"grids": collect()}))
