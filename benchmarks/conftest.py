"""Options and fixtures of the benchmark modules (run them with `python -m benchmarks`).

- `--full`: the models' real sizes (default: reduced sizes that keep `make bench` short on a
  CPU); tests marked `@pytest.mark.full_only` (extra shapes) are deselected without it.
- `--tiny`: every shape shrunk to a few elements, for the harness self-test only.
- `--device cpu|cuda|auto`: where the entries run (auto: cuda when available).
- Fixtures: `device`, `bench_settings`, `roofline` (the machine's copy bandwidth and matmul
  FLOP/s, measured once per run), and `benchmark`, pytest-benchmark's fixture wrapped by
  `benchmarks.harness.TimedBenchmark` (warm-up, rounds, CUDA events and L2 flush, peak memory).
"""

import pytest
import torch

from benchmarks import harness


def pytest_addoption(parser):
    group = parser.getgroup("vlmops benchmarks")
    group.addoption("--full", action="store_true", help="run the models' full sizes")
    group.addoption("--tiny", action="store_true", help="shrink every shape (harness self-test)")
    group.addoption("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device of the entries")


def pytest_configure(config):
    config.addinivalue_line("markers", "full_only: an extra shape that runs only with --full")
    if config.getoption("--device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda, but torch.cuda.is_available() is False")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full"):
        return
    deselected = [item for item in items if "full_only" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "full_only" not in item.keywords]


@pytest.fixture(scope="session")
def device(pytestconfig) -> str:
    return harness.resolve_device(pytestconfig.getoption("--device"))


@pytest.fixture(scope="session")
def bench_settings(pytestconfig, device) -> harness.Settings:
    return harness.settings_for(harness.tier(pytestconfig), device)


@pytest.fixture(scope="session")
def roofline(device, bench_settings) -> harness.Roofline:
    return harness.Roofline(device, bench_settings)


@pytest.fixture
def benchmark(benchmark, device, bench_settings, roofline):
    return harness.TimedBenchmark.wrap(benchmark, device, bench_settings, roofline)
