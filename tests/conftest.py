"""Test configuration: Triton runs under its CPU interpreter on machines without a GPU.

TRITON_INTERPRET must be set before triton is imported, so it is set here, before any test module
imports vlmops.triton.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def devices():
    """Devices the tests run on: CPU always, CUDA when present."""
    return ["cpu", "cuda"] if HAS_CUDA else ["cpu"]
