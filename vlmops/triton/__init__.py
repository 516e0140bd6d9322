"""Triton kernels of vlmops, one module per op family, and their ahead-of-time compile specs.

A family module holds kernels and their launchers; it registers nothing when imported (the op
registry, ``vlmops.ops.registry``, registers each launcher named by an ``OpDef`` as the CUDA kernel of
the private ``vlmops::_<op>_triton`` op, which the op's C++ CUDA entry calls after its checks).
Launchers take checked inputs. Each family module also appends to ``KERNEL_SPECS`` one
:class:`KernelSpec` per (kernel, representative configuration): the static kernel report
(``tools/kernel_report.py``) compiles every spec for sm_80 and sm_90a without a GPU and reads
registers, spills, shared memory and access widths. A new family adds its module name to ``FAMILIES``.
"""

import contextlib
import functools
import importlib
from dataclasses import dataclass, field

import torch

FAMILIES = (
    "vlmops.triton.pixel_shuffle",
    "vlmops.triton.patch_embed",
    "vlmops.triton.rope",
    "vlmops.triton.varlen_attention",
    "vlmops.triton.gated_cross_attention",
    "vlmops.triton.rms_norm",
    "vlmops.triton.silu_mul",
)


@dataclass(frozen=True)
class KernelSpec:
    """One ahead-of-time compilation of a Triton kernel, as the JIT would specialize a real launch.

    ``signature`` and ``constexprs`` are what ``triton.compiler.ASTSource`` takes; ``attrs`` holds the
    16-divisibility hints (keyed by ``(argument index,)``) the JIT derives from aligned pointers and
    from integers that are multiples of 16. ``num_stages`` is the software-pipelining depth (None:
    Triton's default); ``archs`` the report's arch labels the configuration is meant for (a Hopper
    configuration, e.g. one reading through TMA descriptors, compiles for sm_90a only).
    """

    kernel: object  # a triton.JITFunction
    config: str  # representative shape, named after the model it comes from
    signature: dict
    constexprs: dict
    num_warps: int
    attrs: dict = field(default_factory=dict)
    num_stages: int | None = None
    archs: tuple = ("sm_80", "sm_90a")

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__


KERNEL_SPECS: list = []


def _pointer_type(dtype) -> str:
    names = {
        "float32": "fp32",
        "float64": "fp64",
        "float16": "fp16",
        "bfloat16": "bf16",
        "uint8": "u8",
        "int64": "i64",
        "int32": "i32",
    }
    return "*" + names[str(dtype).replace("torch.", "")]


def make_spec(
    kernel, config: str, num_warps: int, constexprs: dict, *, num_stages=None, archs=("sm_80", "sm_90a"), **args
) -> KernelSpec:
    """A spec from one representative launch.

    ``args`` gives every runtime argument of ``kernel``: a torch dtype for a tensor pointer (assumed
    16-byte aligned, as torch allocations are), a Python int for an integer (specialized like the
    JIT does: 1 becomes a constexpr, multiples of 16 carry the divisibility hint, values beyond
    int32 are i64), a float for a float scalar, a ``"tensordesc<...>"`` signature string for a TMA
    tensor descriptor, None for an argument passed as None (a constexpr to the JIT). ``constexprs``
    gives the ``tl.constexpr`` parameters.
    """
    divisible = [["tt.divisibility", 16]]
    signature, consts, attrs = {}, {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name], consts[name] = "constexpr", constexprs[name]
            continue
        value = args.pop(name)
        if value is None:
            signature[name], consts[name] = "constexpr", None
            continue
        if isinstance(value, str):
            signature[name] = value
            continue
        if isinstance(value, bool) or isinstance(value, float):
            signature[name] = "i1" if isinstance(value, bool) else "fp32"
        elif isinstance(value, int):
            if value == 1:
                signature[name], consts[name] = "constexpr", 1
                continue
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(index,)] = divisible
        else:
            signature[name] = _pointer_type(value)
            attrs[(index,)] = divisible
    if args:
        raise TypeError(f"make_spec: {kernel.fn.__name__} has no arguments {sorted(args)}")
    return KernelSpec(kernel, config, signature, consts, num_warps, attrs, num_stages, tuple(archs))


def device_guard(t: torch.Tensor):
    """The CUDA device context of t's device for a launch (a no-op for CPU tensors, which the
    interpreter runs)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


@functools.cache
def _cuda_multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached per device), which grids are sized against; 1
    for the CPU tensors the interpreter runs (so that small test problems take the multi-program paths)."""
    if device.type != "cuda":
        return 1
    return _cuda_multiprocessors(torch.cuda.current_device() if device.index is None else device.index)


VECTOR_BYTES = 16  # the widest global access of one thread: ld.global.v4.b32 / st.global.v4.b32


def vector_width(element_size: int, counts=(), tensors=()) -> int:
    """Elements per 16-byte vector access a kernel may promise (``VEC``): the largest power of two up to
    16 bytes that divides every integer of ``counts`` (sizes and strides, in elements, that offsets are
    built from) and every data pointer of ``tensors`` in units of its bytes. 1 means scalar accesses.

    The largest power of two dividing several integers is the lowest set bit of their bitwise or (a
    launcher calls this once per launch: no loop over candidate widths)."""
    elements = 0
    for count in counts:
        elements |= count
    address = 0
    for t in tensors:
        address |= t.data_ptr()
    vec = VECTOR_BYTES // element_size
    if elements:
        vec = min(vec, elements & -elements)
    if address:
        vec = min(vec, (address & -address) // element_size)
    return max(vec, 1)


def rows_2d(t: torch.Tensor) -> torch.Tensor:
    """t [..., C] as [rows, C]: t itself when 2-D, a view (any row and column strides) when the leading
    dims collapse into one row stride, otherwise a contiguous copy."""
    return t if t.dim() == 2 else t.reshape(-1, t.shape[-1])


def kernel_specs() -> list:
    """Every family's specs (importing each family module fills KERNEL_SPECS)."""
    for module in FAMILIES:
        importlib.import_module(module)
    return list(KERNEL_SPECS)
