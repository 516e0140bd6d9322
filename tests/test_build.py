"""The native library's build: what it reports, and that its CPU kernels can run in parallel."""

import pathlib

import pytest
import torch

import vlmops

pytestmark = pytest.mark.skipif(not vlmops.build_info()["native"], reason="the native library is not built")


def test_build_info_reports_the_build():
    info = vlmops.build_info()
    assert info["torch_version"] == torch.__version__
    assert info["built_with_cuda"] == bool(info["cuda_archs"])


@pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info(), reason="torch's parallel backend is not OpenMP")
def test_cpu_kernels_share_torchs_openmp_runtime():
    # at::parallel_for inlines an OpenMP pragma into the kernels: without -fopenmp they run on one thread.
    assert vlmops.build_info()["openmp"]
    loaded = {line.split()[-1] for line in pathlib.Path("/proc/self/maps").read_text().splitlines()
              if "libgomp" in line}
    # One runtime: a second libgomp would run its own thread pool beside torch's (oversubscription).
    assert len({pathlib.Path(p).resolve() for p in loaded}) == 1, loaded


def test_registering_the_triton_kernels_gives_every_cuda_owner():
    # `import vlmops` calls this when CUDA is available; here (no GPU) the interpreter stands in.
    from vlmops.ops import KERNEL_OWNERS, registry
    from vlmops.triton import register_kernels

    register_kernels()
    registry.register_triton_kernels()
    expected = [f"vlmops::{op}" for op, owners in KERNEL_OWNERS.items() if owners["cuda"] == "Triton"]
    expected += [f"vlmops::{owners['triton']}" for owners in KERNEL_OWNERS.values() if owners["triton"]]
    assert len(expected) >= 6
    missing = [name for name in expected if not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")]
    assert not missing, missing
