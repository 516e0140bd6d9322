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
    loaded = {
        line.split()[-1] for line in pathlib.Path("/proc/self/maps").read_text().splitlines() if "libgomp" in line
    }
    # One runtime: a second libgomp would run its own thread pool beside torch's (oversubscription).
    assert len({pathlib.Path(p).resolve() for p in loaded}) == 1, loaded


def test_every_op_has_its_cuda_entry_and_triton_kernel_entry():
    # `import vlmops` registers the Triton kernels when CUDA is available; here (no GPU) the test does.
    from vlmops.ops import CUDA_OWNERS, registry

    defined = registry.defined()
    assert set(CUDA_OWNERS) == set(defined)
    registered = registry.register_triton_kernels()
    for name, owner in CUDA_OWNERS.items():
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(f"vlmops::{name}", "CUDA")
        # Triton-owned ops have a C++ CUDA entry in every build; CUDA C++ ones only with nvcc.
        assert has_cuda or (owner == "CUDA C++" and not vlmops.build_info()["built_with_cuda"]), name
        if owner == "Triton":
            assert defined[name].triton is not None, name
        if defined[name].triton is not None:
            entry = registry.triton_kernel_name(name)
            assert entry in registered, name
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vlmops::{entry}", "CUDA"), entry
            public = getattr(torch.ops.vlmops, name).default._schema
            private = getattr(torch.ops.vlmops, entry).default._schema
            assert [(a.name, str(a.type)) for a in private.arguments] == [
                (a.name, str(a.type)) for a in public.arguments
            ], name
            assert [str(r.type) for r in private.returns] == [str(r.type) for r in public.returns], name
