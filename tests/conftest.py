"""Test configuration.

- Triton runs under its CPU interpreter on machines without a GPU: TRITON_INTERPRET must be set
  before triton is imported, so it is set here, before any test module imports vlmops.triton.
- `@pytest.mark.requires_cuda` tests are skipped where no CUDA device exists.
- `RecordVlmopsCalls`: the vlmops ops a block of code dispatched, in order (patch tests use it to
  prove a patched model really runs vlmops kernels).
- `capture_cuda_graph(fn)`: fn() captured in a CUDA graph (tests that an op needs no host sync).
- `RecordHostSyncs`: every read of a tensor's values on the host in a block of code, on any device
  (tests that a patched forward would not synchronize on a GPU, proved on CPU).
"""

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.requires_cuda)]


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if not HAS_CUDA and "requires_cuda" in item.keywords:
            item.add_marker(skip)


class RecordVlmopsCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "vlmops":
            self.calls.append(func.name())
        return func(*args, **(kwargs or {}))


def capture_cuda_graph(fn):
    """(graph, fn()'s result captured in it), after a warm-up on a side stream as CUDA graphs require
    (Triton compiles there)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = fn()
    return graph, result


class RecordHostSyncs(TorchDispatchMode):
    """The host reads of a block of code, on any device (on CPU they cost nothing, on a GPU each is a sync):

    - ``reads``: Python-level reads of a tensor's values (``.tolist()``, ``.item()``, ``bool()``,
      ``int()``, ``float()``, use as an index), which do not all pass the dispatcher;
    - ``syncs``: dispatched ops that read values on the host, or whose output size depends on values
      (``_local_scalar_dense``, ``nonzero``, ``masked_select``, ``unique``, indexing with a boolean
      mask, ``repeat_interleave`` without ``output_size``);
    - ``calls``: every dispatched op, ``namespace::name``.
    """

    READS = ("tolist", "item", "__bool__", "__int__", "__index__", "__float__")
    SYNC_OPS = (
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique2",
        "aten::unique_consecutive",
        "aten::unique_dim",
    )

    def __init__(self):
        super().__init__()
        self.reads, self.syncs, self.calls = [], [], []
        self._originals = {}

    def __enter__(self):
        for name in self.READS:
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def read(tensor, *args, _name=name, _original=original, **kwargs):
                self.reads.append(_name)
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, read)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = f"{func.namespace}::{func.name().split('::')[-1].split('.')[0]}"
        self.calls.append(name)
        boolean_index = name in ("aten::index", "aten::index_put", "aten::index_put_") and any(
            t is not None and t.dtype in (torch.bool, torch.uint8) for t in (args[1] if len(args) > 1 else ())
        )
        unsized = func._overloadname in ("Tensor", "self_Tensor") and name == "aten::repeat_interleave"
        unsized = unsized and kwargs.get("output_size") is None
        if name in self.SYNC_OPS or boolean_index or unsized:
            self.syncs.append(name)
        return func(*args, **kwargs)
