"""One way to define a vlmops op.

An op's schema is defined once in C++ (``csrc/torch_bindings.cpp``), and its C++ entry points
validate every input its kernels rely on (the contract, ``csrc/include/vlmops/<op>_checks.h``), on
every device. On CUDA, an op whose kernel is written in Triton keeps that contract: its C++ CUDA
entry checks the inputs, then calls ``vlmops::_<op>_triton``, whose CUDA kernel is the Triton
launcher named here. What Python adds per op is one :class:`OpDef`:

- ``fake``: the output shapes for torch.compile, stating the shape rules with ``torch._check``;
- ``backward`` (+ ``setup_context``): autograd, or ``None``: differentiating the op then raises a
  ``RuntimeError`` naming it, never a silent ``None`` or zeros;
- ``reference``: the pure-PyTorch computation with the op's signature and outputs, run in its place
  (with one warning) when the native library was not built;
- ``triton``: ``"module:function"`` of the Triton launcher, or ``None``.

Op family modules call :func:`define` when imported; nothing touches the dispatcher until
:func:`register_all`, which ``import vlmops`` calls once.
"""

import dataclasses
import importlib
import importlib.util
import re
from collections.abc import Callable

import torch

from vlmops import _native

__all__ = ["OpDef", "define", "defined", "op", "register_all", "register_triton_kernels", "triton_kernel_name"]


@dataclasses.dataclass(frozen=True)
class OpDef:
    name: str  # the schema name in csrc/torch_bindings.cpp
    fake: Callable
    reference: Callable
    backward: Callable | None = None
    setup_context: Callable | None = None
    triton: str | None = None  # "vlmops.triton.<family>:<launcher>"
    # For an op without backward: what to tell a user who differentiates it (e.g. a double backward).
    not_differentiable: str = "it has no derivative"


_OPS: dict[str, OpDef] = {}
_registered = False
_triton_kernels: list[str] | None = None


def define(op_def: OpDef) -> OpDef:
    """Record an op's Python side. Registration happens later, once, in :func:`register_all`."""
    if op_def.name in _OPS:
        raise RuntimeError(f"vlmops: op {op_def.name!r} is defined twice")
    _OPS[op_def.name] = op_def
    return op_def


def defined() -> dict[str, OpDef]:
    return dict(_OPS)


def triton_kernel_name(name: str) -> str:
    """The private op that carries an op's Triton kernel: ``_<op>_triton`` (``_<op>_triton_`` for an
    in-place op ``<op>_``). The public op's C++ CUDA entry calls it after its checks."""
    return f"_{name[:-1]}_triton_" if name.endswith("_") else f"_{name}_triton"


_SCHEMA_MISMATCH = re.compile(r"Expected a value of type '(.+?)' for argument '(\w+)' but instead found type '(.+?)'")


def op(name: str) -> Callable:
    """The callable behind a wrapper: ``torch.ops.vlmops.<name>`` (an argument of the wrong type
    raises ``TypeError`` naming it), or the op's reference when the native library is missing
    (``import vlmops`` warned about that once)."""
    if not _native.available():
        return _OPS[name].reference
    packet = getattr(torch.ops.vlmops, name)
    arguments = packet.default._schema.arguments
    names = [argument.name for argument in arguments]
    # A bool is an int to the dispatcher: numeric arguments refuse it here, by position and keyword.
    numeric = {i: a.name for i, a in enumerate(arguments) if str(a.type).rstrip("?") in ("int", "float", "SymInt")}

    def call(*args, **kwargs):
        for i, argument in numeric.items():
            value = args[i] if i < len(args) else kwargs.get(argument)
            if type(value) is bool:
                raise TypeError(f"vlmops.{name}: {argument} must be a number, got bool")
        try:
            return packet(*args, **kwargs)
        except RuntimeError as error:
            mismatch = _SCHEMA_MISMATCH.search(str(error))
            if mismatch is None:
                raise
            expected, argument, found = mismatch.groups()
        if expected.rstrip("?") == found:  # a Python int beyond int64
            index = names.index(argument)
            value = args[index] if index < len(args) else kwargs.get(argument)
            raise ValueError(f"vlmops.{name}: {argument} = {value} does not fit a 64-bit {found}")
        raise TypeError(f"vlmops.{name}: {argument} must be {expected}, got {found}")

    return call


def _raise_not_differentiable(op_def: OpDef) -> Callable:
    def backward(ctx, *grads):
        raise RuntimeError(
            f"vlmops.{op_def.name} cannot be differentiated: {op_def.not_differentiable}. "
            "Compute the derivative you need with vlmops.reference."
        )

    return backward


def _same_device_fake(op_def: OpDef) -> Callable:
    """op_def.fake, after the device rule every op shares: all tensor arguments on one device. (A
    meta tensor among CPU ones dispatches here, not to the C++ entry that states the rule.)"""
    names = [argument.name for argument in getattr(torch.ops.vlmops, op_def.name).default._schema.arguments]

    def fake(*args, **kwargs):
        first = None
        for name, value in zip(names, args):
            if isinstance(value, torch.Tensor):
                if first is None:
                    first = (name, value.device)
                elif value.device != first[1]:
                    raise ValueError(
                        f"vlmops.{op_def.name}: {name} is on {value.device} but {first[0]} is on {first[1]}"
                    )
        return op_def.fake(*args, **kwargs)

    return fake


def _register(op_def: OpDef) -> None:
    qualname = f"vlmops::{op_def.name}"
    torch.library.register_fake(qualname, _same_device_fake(op_def))
    if getattr(torch.ops.vlmops, op_def.name).default._schema.is_mutable:
        return  # torch.library takes no autograd formula for an op that writes its inputs: rope_ has its own in C++
    if op_def.backward is not None:
        torch.library.register_autograd(qualname, op_def.backward, setup_context=op_def.setup_context)
    else:
        torch.library.register_autograd(qualname, _raise_not_differentiable(op_def))


def register_triton_kernels() -> list[str]:
    """Register each op's Triton launcher as the CUDA kernel of ``vlmops::_<op>_triton``, once; returns
    the private ops that carry one (none when triton is not installed)."""
    global _triton_kernels
    if _triton_kernels is None:
        _triton_kernels = []
        if _native.available() and importlib.util.find_spec("triton") is not None:
            for op_def in _OPS.values():
                if op_def.triton is None:
                    continue
                module_name, _, attr = op_def.triton.partition(":")
                launcher = getattr(importlib.import_module(module_name), attr)
                name = triton_kernel_name(op_def.name)
                torch.library.register_kernel(f"vlmops::{name}", "cuda", launcher)
                _triton_kernels.append(name)
    return list(_triton_kernels)


def register_all() -> None:
    """Register every defined op's fake and autograd (and, where a CUDA device is present, the Triton
    kernels). Called once by ``import vlmops``; later calls do nothing."""
    global _registered
    if _registered or not _native.available():
        return
    for op_def in _OPS.values():
        _register(op_def)
    _registered = True
    if torch.cuda.is_available():
        register_triton_kernels()
