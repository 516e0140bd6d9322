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
