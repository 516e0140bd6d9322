"""The README's install paths, each in a fresh virtual environment, CPU-only (VLMOPS_CUDA=0).

A fresh environment here is what `python -m venv env && env/bin/pip install torch numpy` makes: the
interpreter's own pip, torch with every distribution it requires (setuptools among them) and numpy, and
nothing else: no `cmake` or `ninja` pip package, and a PATH whose CMake (if any) is older than the build
needs. Installing torch again for each would take minutes, so the environment gets this interpreter's
torch, numpy and their requirements through a site folder of links to them (a .pth file adds it), where
pip and Python see them as installed distributions.

The builds run in a copy of the checkout without its build outputs: the first builds the library from
scratch (a few minutes on two cores); the wheel builds after it reuse its CMake build folder, as
repeated builds in one checkout do. VLMOPS_SKIP_INSTALL_TESTS=1 skips the tests that build.

The `make` path is what CI runs (`make test` in a fresh clone); under that checkout's .venv, the last
tests check that vlmops is installed there in editable mode and that a second `make build` compiles
nothing.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
IN_CHECKOUT_VENV = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
builds = pytest.mark.skipif(os.environ.get("VLMOPS_SKIP_INSTALL_TESTS") == "1", reason="VLMOPS_SKIP_INSTALL_TESTS=1")
make_test_only = pytest.mark.skipif(not IN_CHECKOUT_VENV, reason="runs under the checkout's .venv (`make test`)")

# Build outputs and environments of a checkout: what a fresh clone does not have.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks"
)
# Run outside the checkout: vlmops as installed loads its native library and runs an op; prints its location.
RUN_AN_OP = """
import torch, vlmops
assert vlmops.build_info()["native"], vlmops.build_info()
x = torch.randn(4, 16)
torch.testing.assert_close(vlmops.rms_norm(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
print(vlmops.__file__)
"""


def _load_setup_py():
    spec = importlib.util.spec_from_file_location("vlmops_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the build helpers; setup() runs only as __main__
    return module


setup_py = _load_setup_py()
CMAKE_REQUIREMENT = f"cmake>={'.'.join(map(str, setup_py.cmake_minimum()))}"


def _requirement_closure(roots: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` are, and those they require (extras followed), recursively."""
    found: dict[str, tuple[importlib.metadata.Distribution, frozenset]] = {}
    todo = [(name, frozenset()) for name in roots]
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found and extras <= found[key][1]:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:  # required on other platforms only
            continue
        extras |= found[key][1] if key in found else frozenset()
        found[key] = (dist, extras)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return [dist for dist, _ in found.values()]


def _link_site(distributions, folder: Path) -> None:
    """Fill ``folder`` with links to the top-level files and folders of ``distributions``."""
    folder.mkdir()
    for dist in distributions:
        for top in {Path(str(file)).parts[0] for file in dist.files or []} - {"..", "__pycache__"}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)


def _user_path() -> str:
    """PATH without this interpreter's bin/ and without any folder holding a CMake new enough for the
    build: the build must find or bring its own."""
    kept = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or Path(folder).resolve() == Path(sys.prefix, "bin").resolve():
            continue
        cmake = shutil.which("cmake", path=folder)
        version = setup_py.cmake_version(cmake) if cmake else None
        if version is None or version < setup_py.cmake_minimum():
            kept.append(folder)
    return os.pathsep.join(kept)


def _user_env(**extra) -> dict:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TRITON_INTERPRET")
    env = {key: value for key, value in os.environ.items() if key not in drop and not key.startswith("VLMOPS_")}
    # PYTHONDONTWRITEBYTECODE: no bytecode written into the linked distributions (not this test's files).
    env.update(PATH=_user_path(), VLMOPS_CUDA="0", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def _run(command, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env or _user_env(), capture_output=True, text=True, timeout=2400
    )
    if check:
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-8000:]}\n{result.stderr[-8000:]}"
    return result


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(_run([python, "-c", code], python.parent).stdout.strip())


def _fresh_venv(folder: Path) -> Path:
    """A virtual environment with pip, torch (with what it requires) and numpy; returns its python."""
    _run([sys.executable, "-m", "venv", folder / "env"], folder)
    python = folder / "env" / "bin" / "python"
    # torch requires a newer setuptools than the one venv installs: installing torch would replace it.
    _run([python, "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"], folder)
    _link_site(_requirement_closure(["torch", "numpy"]), folder / "linked-site")
    pth = _site_packages(python) / "torch-and-its-requirements.pth"
    pth.write_text(f"import site; site.addsitedir({str(folder / 'linked-site')!r})\n")
    probe = "import json, importlib.util as u, torch; print(json.dumps([torch.__version__, *map(u.find_spec, %r)]))"
    seen = json.loads(_run([python, "-c", probe % ["cmake", "ninja", "vlmops"]], folder).stdout)
    assert seen == [torch.__version__, None, None, None], seen
    return python


@pytest.fixture(scope="module")
def env_a(tmp_path_factory):
    folder = tmp_path_factory.mktemp("env_a")
    yield _fresh_venv(folder)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT, folder / "vlmops", ignore=NOT_SOURCES)
    yield folder / "vlmops"
    shutil.rmtree(folder)  # its build folder holds every object file


@pytest.fixture(scope="module")
def pip_installed(env_a, checkout) -> Path:
    """`pip install --no-build-isolation --no-deps .` into env_a; returns the checkout."""
    _run([env_a, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "."], checkout)
    return checkout


def _run_an_op(python: Path, cwd: Path) -> Path:
    return Path(_run([python, "-c", RUN_AN_OP], cwd).stdout.strip().splitlines()[-1])


def test_the_build_requirements_ask_for_the_cmake_cmakelists_needs():
    text = (ROOT / "pyproject.toml").read_text()
    requires = re.search(r"^requires = \[(.*)\]", text, re.MULTILINE).group(1)
    assert f'"{CMAKE_REQUIREMENT}"' in requires, requires


def test_a_build_folder_is_reconfigured_for_another_torch_and_emptied_for_another_generator(tmp_path):
    (tmp_path / "CMakeFiles").mkdir()
    (tmp_path / "CMakeFiles" / "object.o").touch()
    cache = "CMAKE_GENERATOR:INTERNAL=Ninja\nVLMOPS_TORCH_DIR:PATH=/torch\n"
    (tmp_path / "CMakeCache.txt").write_text(cache)
    setup_py._forget_stale_configuration(tmp_path, "Ninja", "/torch")
    assert (tmp_path / "CMakeCache.txt").exists()
    setup_py._forget_stale_configuration(tmp_path, "Ninja", "/another/torch")
    assert not (tmp_path / "CMakeCache.txt").exists() and (tmp_path / "CMakeFiles" / "object.o").exists()
    (tmp_path / "CMakeCache.txt").write_text(cache)
    setup_py._forget_stale_configuration(tmp_path, "Unix Makefiles", "/torch")
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())


@builds
def test_without_a_new_enough_cmake_the_build_says_what_to_run(env_a, tmp_path):
    for name in ("setup.py", "pyproject.toml", "CMakeLists.txt", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "vlmops", tmp_path / "vlmops", ignore=NOT_SOURCES)
    command = [env_a, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "."]
    result = _run(command, tmp_path, _user_env(VLMOPS_FETCH_BUILD_TOOLS="0"), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f'{env_a} -m pip install "{CMAKE_REQUIREMENT}" ninja' in output, output[-4000:]


@builds
def test_pip_install_into_an_environment_that_has_torch(env_a, pip_installed, tmp_path):
    # No CMake new enough anywhere: the build brought one (the `cmake` wheel) into build/tools.
    assert (pip_installed / "build" / "tools" / "cmake" / "data" / "bin" / "cmake").is_file()
    assert _run_an_op(env_a, tmp_path).is_relative_to(_site_packages(env_a))


@builds
def test_a_wheel_installs_into_a_fresh_environment(env_a, pip_installed, tmp_path_factory, tmp_path):
    dist = tmp_path_factory.mktemp("dist")
    _run([env_a, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--wheel-dir", dist, "."], pip_installed)
    (wheel,) = dist.glob("vlmops-*.whl")
    folder = tmp_path_factory.mktemp("env_b")
    env_b = _fresh_venv(folder)
    # --no-index: the wheel's requirements must be met by the environment (torch), nothing downloaded.
    _run([env_b, "-m", "pip", "install", "--no-index", wheel], tmp_path)
    assert _run_an_op(env_b, tmp_path).is_relative_to(_site_packages(env_b))
    shutil.rmtree(folder)


@builds
def test_python_m_build_makes_the_wheel(env_a, pip_installed, tmp_path):
    pin = re.search(r"^build==\S+", (ROOT / "requirements-dev.txt").read_text(), re.MULTILINE).group(0)
    _run([env_a, "-m", "pip", "install", "--quiet", pin], tmp_path)
    # --skip-dependency-check: the build requirements listed for isolated builds (cmake, ninja) are not
    # installed here; the build finds or brings them itself.
    command = [env_a, "-m", "build", "--no-isolation", "--skip-dependency-check", "--wheel", "--outdir", tmp_path, "."]
    _run(command, pip_installed)
    (wheel,) = tmp_path.glob("vlmops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.fullmatch(r"vlmops/_C\..*\.so", name) for name in names), names
    assert "vlmops/ops/registry.py" in names


@make_test_only
def test_make_installed_vlmops_into_the_checkouts_venv_in_editable_mode(tmp_path):
    assert _run_an_op(Path(sys.executable), tmp_path) == ROOT / "vlmops" / "__init__.py"
    direct_url = json.loads(importlib.metadata.distribution("vlmops").read_text("direct_url.json"))
    assert direct_url["dir_info"].get("editable"), direct_url


@make_test_only
def test_a_second_make_build_compiles_nothing():
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    output = _run(["make", "--no-print-directory", "build"], ROOT, env).stdout
    assert "no work to do" in output and "Building CXX" not in output, output
