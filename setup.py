"""Thin build driver: configure and build CMakeLists.txt with Ninja, then place the built
library vlmops._C (the op library and its build-info module) inside the vlmops package.

Environment: VLMOPS_CUDA=0|1 forces the CUDA kernels off or on (default: build them when torch
is a CUDA build and nvcc is found), TORCH_CUDA_ARCH_LIST (default "8.0;9.0a"), MAX_JOBS.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _cuda_mode() -> str:
    value = os.environ.get("VLMOPS_CUDA", "").strip().lower()
    if value in ("", "auto"):
        return "AUTO"
    if value in ("1", "on", "true", "yes"):
        return "ON"
    if value in ("0", "off", "false", "no"):
        return "OFF"
    raise SystemExit(f"VLMOPS_CUDA must be 0, 1 or auto, got {value!r}")


def _nvidia_wheel_dir(cuda_version: str) -> str:
    """The pip `nvidia` wheels hold the CUDA math-library headers torch's headers include."""
    if not cuda_version:
        return ""
    try:
        import nvidia
    except ImportError:
        return ""
    major = cuda_version.split(".")[0]
    for base in nvidia.__path__:
        candidate = Path(base) / f"cu{major}"
        if (candidate / "include").is_dir():
            return str(candidate)
    return ""


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import torch

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda_version = torch.version.cuda or ""
        cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or "cmake"
        configure = [
            cmake, "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('VLMOPS_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DVLMOPS_CUDA={_cuda_mode()}",
            f"-DVLMOPS_TORCH_CUDA_VERSION={cuda_version}",
            f"-DVLMOPS_TORCH_DIR={Path(torch.__file__).parent}",
            f"-DVLMOPS_TORCH_VERSION={torch.__version__}",
            f"-DVLMOPS_TORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-DVLMOPS_NVIDIA_WHEEL_DIR={_nvidia_wheel_dir(cuda_version)}",
        ]
        subprocess.run(configure, check=True)
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run([cmake, "--build", str(build_dir), "-j", jobs], check=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        (built,) = build_dir.glob("_C*.so")
        shutil.copy2(built, self.get_ext_fullpath(ext.name))


setup(ext_modules=[CMakeExtension("vlmops._C")], cmdclass={"build_ext": CMakeBuild})
