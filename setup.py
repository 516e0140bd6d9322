"""Thin build driver: configure and build CMakeLists.txt, then place the built library vlmops._C (the op
library and its build-info module) inside the vlmops package.

Build tools: a CMake at least as new as CMakeLists.txt's cmake_minimum_required, taken from the `cmake`
pip package of the building Python, the folder of that Python (a virtual environment's bin/), PATH, or
build/tools/ (where an earlier build brought one); when none is new enough, the build installs the
`cmake` pip package into build/tools/ with the building Python's pip, or stops with the command to run.
Ninja is found the same way (`ninja` pip package, bin/, PATH); without it the build uses Makefiles.

Environment: VLMOPS_CUDA=0|1 forces the CUDA kernels off or on (default: build them when torch
is a CUDA build and nvcc is found), TORCH_CUDA_ARCH_LIST (default "8.0;9.0a"), MAX_JOBS,
VLMOPS_BUILD_TYPE (default Release), VLMOPS_FETCH_BUILD_TOOLS=0 (never install CMake; stop with the
command to run instead).
"""

import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# Tools the build brought itself (the `cmake` wheel, unpacked with `pip install --target`).
TOOLS_DIR = ROOT / "build" / "tools"
_OFF = ("0", "off", "false", "no")


def _cuda_mode() -> str:
    value = os.environ.get("VLMOPS_CUDA", "").strip().lower()
    if value in ("", "auto"):
        return "AUTO"
    if value in ("1", "on", "true", "yes"):
        return "ON"
    if value in _OFF:
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


def cmake_minimum() -> tuple[int, ...]:
    """cmake_minimum_required of CMakeLists.txt: the one statement of the CMake version the build needs."""
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(r"cmake_minimum_required\s*\(\s*VERSION\s+([0-9]+(?:\.[0-9]+)*)", text)
    return tuple(int(part) for part in match.group(1).split("."))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def cmake_version(cmake: str) -> tuple[int, ...] | None:
    """The version `cmake --version` reports, or None when it does not run."""
    try:
        result = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version\s+(\d+)\.(\d+)(?:\.(\d+))?", result.stdout)
    if result.returncode != 0 or match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _package_bin_dir(module: str, attribute: str) -> list[str]:
    """The binary folder of the `cmake` / `ninja` pip package of the building Python, if installed."""
    try:
        return [getattr(importlib.import_module(module), attribute)]
    except Exception:  # not installed, or installed without its binary
        return []


def _search_path(package_dirs: list[str], fetched: list[Path]) -> list[str]:
    """Where a build tool is looked for, in order: its pip package, the building Python's folder (a
    virtual environment's bin/, which is on PATH only when activated), PATH, and what an earlier build
    brought."""
    path = os.environ.get("PATH", "").split(os.pathsep)
    return [*package_dirs, str(Path(sys.executable).parent), *path, *map(str, fetched)]


def _executables(name: str, dirs: list[str]) -> list[str]:
    found, seen = [], set()
    for folder in dirs:
        candidate = shutil.which(name, path=folder) if folder else None
        if candidate and os.path.realpath(candidate) not in seen:
            seen.add(os.path.realpath(candidate))
            found.append(candidate)
    return found


def _fetched_cmake_bin() -> Path:
    return TOOLS_DIR / "cmake" / "data" / "bin"


def find_cmake() -> tuple[str | None, list[str]]:
    """(the first CMake at least cmake_minimum(), or None; what was found too old, as 'path (version)')."""
    minimum = cmake_minimum()
    dirs = _search_path(_package_bin_dir("cmake", "CMAKE_BIN_DIR"), [_fetched_cmake_bin()])
    too_old = []
    for cmake in _executables("cmake", dirs):
        version = cmake_version(cmake)
        if version is not None and version >= minimum:
            return cmake, too_old
        too_old.append(f"{cmake} ({_dotted(version) if version else 'does not run'})")
    return None, too_old


def _fetch_cmake(requirement: str) -> bool | None:
    """Install the `cmake` wheel into TOOLS_DIR with the building Python's pip: whether that worked, or None
    when VLMOPS_FETCH_BUILD_TOOLS=0 turns it off."""
    if os.environ.get("VLMOPS_FETCH_BUILD_TOOLS", "").strip().lower() in _OFF:
        return None
    print(f"vlmops: no CMake new enough was found; installing {requirement} into {TOOLS_DIR}", flush=True)
    options = "--quiet --disable-pip-version-check --no-input --only-binary=:all: --no-deps --upgrade".split()
    command = [sys.executable, "-m", "pip", "install", *options, "--target", str(TOOLS_DIR), requirement]
    try:
        return subprocess.run(command).returncode == 0
    except OSError:
        return False


def require_cmake() -> str:
    """A CMake at least cmake_minimum(): found, or brought into build/tools/; otherwise SystemExit saying
    exactly what to run."""
    cmake, too_old = find_cmake()
    if cmake is not None:
        return cmake
    requirement = f"cmake>={_dotted(cmake_minimum())}"
    fetch = _fetch_cmake(requirement)
    if fetch:
        cmake, _ = find_cmake()
        if cmake is not None:
            return cmake
    found = "; found only " + ", ".join(too_old) if too_old else "; none was found"
    if fetch is not None:
        found += f", and installing {requirement} into {TOOLS_DIR} failed (see above)"
    raise SystemExit(
        f"vlmops: building needs CMake >= {_dotted(cmake_minimum())}{found}.\n"
        f"Install it into the Python that builds vlmops, then build again:\n"
        f'    {sys.executable} -m pip install "{requirement}" ninja\n'
        f"(or put a CMake >= {_dotted(cmake_minimum())} first on PATH)."
    )


def generator(build_dir: Path) -> list[str]:
    """CMake's generator arguments: Ninja when a ninja is found, else Unix Makefiles. A build folder keeps
    the ninja it was configured with while it exists (another ninja version may not read its build log,
    and then rebuilds everything)."""
    ninjas = _executables("ninja", _search_path(_package_bin_dir("ninja", "BIN_DIR"), []))
    configured = _cached(build_dir, "CMAKE_MAKE_PROGRAM")
    if _cached(build_dir, "CMAKE_GENERATOR") == "Ninja" and configured and os.access(configured, os.X_OK):
        ninjas.insert(0, configured)
    if ninjas:
        return ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninjas[0]}"]
    if shutil.which("make"):
        return ["-G", "Unix Makefiles"]
    raise SystemExit(
        "vlmops: building needs Ninja or make; neither was found. Install Ninja into the Python that builds "
        f"vlmops, then build again:\n    {sys.executable} -m pip install ninja"
    )


def cmake_build_dir() -> Path:
    """The CMake build folder: one per platform and Python, kept between builds (editable installs build
    in a fresh temporary folder otherwise) so that rebuilds only compile what changed."""
    return ROOT / "build" / f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}" / "cmake"


def _cached(build_dir: Path, name: str) -> str | None:
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return None
    match = re.search(rf"^{name}:[A-Z]+=(.*)$", cache.read_text(errors="replace"), re.MULTILINE)
    return match.group(1) if match else None


def _forget_stale_configuration(build_dir: Path, generator_name: str, torch_dir: str) -> None:
    """A build folder configured against another torch (whose CMake package location CMake caches) is
    configured afresh, keeping the objects (those whose command lines change are rebuilt); one made by
    another generator is emptied (CMake cannot switch generators in place)."""
    cached_generator = _cached(build_dir, "CMAKE_GENERATOR")
    if cached_generator is None:
        return
    if cached_generator != generator_name:
        shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
    elif _cached(build_dir, "VLMOPS_TORCH_DIR") != torch_dir:
        (build_dir / "CMakeCache.txt").unlink()


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import torch

        cmake = require_cmake()
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = cmake_build_dir()
        build_dir.mkdir(parents=True, exist_ok=True)
        generator_args = generator(build_dir)
        torch_dir = str(Path(torch.__file__).parent)
        _forget_stale_configuration(build_dir, generator_args[1], torch_dir)
        cuda_version = torch.version.cuda or ""
        configure = [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            *generator_args,
            f"-DCMAKE_BUILD_TYPE={os.environ.get('VLMOPS_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DVLMOPS_CUDA={_cuda_mode()}",
            f"-DVLMOPS_TORCH_CUDA_VERSION={cuda_version}",
            f"-DVLMOPS_TORCH_DIR={torch_dir}",
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


if __name__ == "__main__":  # run by pip, `python -m build` and `python setup.py`; tests import the helpers
    setup(ext_modules=[CMakeExtension("vlmops._C")], cmdclass={"build_ext": CMakeBuild})
