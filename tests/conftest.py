"""Test configuration.

- Triton runs under its CPU interpreter on machines without a GPU: TRITON_INTERPRET must be set
  before triton is imported, so it is set here, before any test module imports vlmops.triton.
- `@pytest.mark.requires_cuda` tests are skipped where no CUDA device exists.
- `RecordVlmopsCalls`: the vlmops ops a block of code dispatched, in order (patch tests use it to
  prove a patched model really runs vlmops kernels).
- `capture_cuda_graph(fn)`: fn() captured in a CUDA graph (tests that an op needs no host sync).
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
