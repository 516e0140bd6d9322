"""What every benchmark entry shares: the size tier, the timed call, its peak memory, the roofline.

- `TimedBenchmark` wraps pytest-benchmark's `benchmark` fixture (conftest.py hands it to every test
  under the same name). Statistics stay pytest-benchmark's: each call becomes `benchmark.pedantic`
  with warm-up rounds and a number of rounds chosen so one entry takes about `max_time`. On CUDA
  the clock is a CUDA event timeline (launch overhead included, as a user sees it) and the L2
  cache is flushed before every round by the untimed `setup`.
- After the timed rounds, one more untimed call measures the entry's peak memory and the dtype of
  its output, which picks the matmul roofline the entry is compared with.
- `Roofline` measures, in the same process, the copy bandwidth (one large tensor copy) and the
  matmul throughput (one large GEMM per dtype) that the report divides achieved numbers by.
"""

import dataclasses
import importlib
import importlib.metadata
import math

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

# Datasheet peaks (dense), used on CUDA next to the measured roofline. Keys are matched against
# torch.cuda.get_device_name(); the first key contained in the name wins, so H100 variants precede "H100".
DATASHEET_PEAKS = {
    "H100 PCIe": {"bytes_per_s": 2.0e12, "flops_per_s": {"bfloat16": 756e12, "float16": 756e12, "float32": 51e12}},
    "H100": {"bytes_per_s": 3.35e12, "flops_per_s": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}},
    "H200": {"bytes_per_s": 4.8e12, "flops_per_s": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}},
    "A100": {"bytes_per_s": 2.039e12, "flops_per_s": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}},
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long each entry is timed. The CPU here is shared: its speed drifts by up to ~30% over
    minutes (two entries timed one after the other differ more than an entry's own rounds do), so
    rounds beyond 7 buy little while `make bench` must stay under 15 minutes."""

    tier: str  # "tiny" (harness self-test), "default" (reduced CPU sizes) or "full"
    warmup_rounds: int
    min_rounds: int
    max_rounds: int
    max_time: float  # seconds of timed rounds per entry
    min_round_time: float  # a round repeats the call until it lasts this long (CPU only)
    copy_bytes: int  # size of each buffer of the copy-bandwidth measurement
    matmul_size: int  # n of the n x n x n GEMM of the FLOP/s measurement


def settings_for(tier: str, device: str) -> Settings:
    if tier == "tiny":
        return Settings(
            tier,
            warmup_rounds=1,
            min_rounds=3,
            max_rounds=5,
            max_time=0.02,
            min_round_time=1e-4,
            copy_bytes=1 << 22,
            matmul_size=256,
        )
    on_cuda = device == "cuda"
    return Settings(
        tier,
        # On CPU the two untimed calls that size the rounds (`_seconds_per_call`) are the warm-up.
        warmup_rounds=3 if on_cuda else 0,
        min_rounds=10 if on_cuda else 7,
        max_rounds=1000 if on_cuda else 200,
        # A GPU entry settles within a few hundred rounds; GPU time is scarce.
        max_time=0.4 if on_cuda else 3.0 if tier == "full" else 1.0,
        min_round_time=1e-3,
        # Buffers far above the last-level cache (H100 L2: 50 MiB; this CPU's L3: 32 MiB or less).
        copy_bytes=(1 << 30) if on_cuda else (1 << 27),
        matmul_size=8192 if on_cuda else 2048,
    )


def pick(request, shapes: dict):
    """The entry of `shapes` (keys "default", "full", "tiny") for this run's size tier.

    `default` is the reduced CPU size `make bench` runs; `full` (--full) the model's real size;
    `tiny` (--tiny, the harness self-test) a few elements per dimension. A missing `full` or
    `tiny` falls back to `default`.
    """
    return shapes.get(tier(request.config), shapes["default"])


def tier(config) -> str:
    """The size tier of this run: "tiny" (--tiny), "full" (--full) or "default"."""
    if config.getoption("--tiny"):
        return "tiny"
    return "full" if config.getoption("--full") else "default"


# The optional peers of `vlmops[bench]`: import name -> pip name.
PEERS = {"flash_attn": "flash-attn", "liger_kernel": "liger-kernel", "xformers": "xformers"}


def peer_versions() -> dict:
    """The installed distribution version of each optional peer (None where absent), without importing it."""
    versions = {}
    for module, distribution in PEERS.items():
        try:
            versions[module] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[module] = None
    return versions


def require_peer(module: str, *, device: str, needs_cuda: bool = True):
    """The peer's module, or pytest.skip with the reason (no CUDA device, not installed, broken install)."""
    name = PEERS.get(module, module)
    if needs_cuda and device != "cuda":
        pytest.skip(f"{name} needs a CUDA device")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.skip(f"{name} not installed (pip install 'vlmops[bench]'): {error}")
    except (OSError, RuntimeError) as error:  # e.g. a wheel built for another CUDA or torch
        pytest.skip(f"{name} is installed but does not import: {error}")


def resolve_device(option: str) -> str:
    """--device auto|cpu|cuda -> the device the entries run on (auto: cuda when available)."""
    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return option


class CudaEventClock:
    """A clock on the GPU timeline: seconds since an origin event, read after the stream drains."""

    def __init__(self):
        self._origin = torch.cuda.Event(enable_timing=True)
        self._origin.record()

    def __call__(self) -> float:
        now = torch.cuda.Event(enable_timing=True)
        now.record()
        now.synchronize()
        return self._origin.elapsed_time(now) / 1e3

    def __repr__(self) -> str:
        return "CudaEventClock"


def _first_floating_dtype(value):
    if isinstance(value, torch.Tensor):
        return value.dtype if value.is_floating_point() else None
    if isinstance(value, (tuple, list)):
        for item in value:
            dtype = _first_floating_dtype(item)
            if dtype is not None:
                return dtype
    return None


def peak_method(device: str) -> str:
    """How peak_memory measures on this device (recorded next to each entry's peak)."""
    return "cuda.max_memory_allocated" if device == "cuda" else "torch.profiler CPU allocator events"


def peak_memory(call, device: str) -> tuple[int, object]:
    """Bytes the call allocates at its peak (outputs included, inputs excluded), and its output.

    CUDA: the caching allocator's max_memory_allocated above what was allocated before the call.
    CPU: torch has no CPU peak counter, so the CPU allocator's events recorded by torch.profiler
    (profile_memory=True) are replayed in time order and the running sum's maximum is taken.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = call()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, out
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = call()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, out


class Roofline:
    """The machine's copy bandwidth and per-dtype matmul throughput, measured once per run.

    Timed with torch.utils.benchmark (its median, CUDA-synchronized); both kernels are large
    enough (buffers far above the last-level cache, a GEMM of n = settings.matmul_size) that
    caches and launch overheads do not matter.
    """

    def __init__(self, device: str, settings: Settings):
        self.device = device
        self.settings = settings
        self._copy = None
        self._matmul = {}

    def _median_seconds(self, stmt: str, globals_: dict) -> float:
        from torch.utils import benchmark as tbench

        # torch.utils.benchmark times on one thread unless told otherwise; the entries use them all.
        timer = tbench.Timer(stmt=stmt, globals=globals_, num_threads=torch.get_num_threads())
        timer.timeit(2)  # warm-up: first calls page in buffers and pick kernels
        min_run_time = 0.05 if self.settings.tier == "tiny" else 1.0
        return timer.blocked_autorange(min_run_time=min_run_time).median

    def copy_bytes_per_s(self) -> float:
        """Bytes read + written per second by `dst.copy_(src)` on two large buffers."""
        if self._copy is None:
            n = self.settings.copy_bytes // 4
            src = torch.randn(n, device=self.device)
            dst = torch.empty_like(src)
            seconds = self._median_seconds("dst.copy_(src)", {"dst": dst, "src": src})
            self._copy = 2 * n * 4 / seconds
        return self._copy

    def matmul_flops_per_s(self, dtype: torch.dtype) -> float:
        """FLOP/s (2 n^3 per product) of an n x n x n matmul in `dtype`."""
        key = str(dtype).replace("torch.", "")
        if key not in self._matmul:
            n = self.settings.matmul_size
            a = torch.randn(n, n, device=self.device, dtype=dtype)
            b = torch.randn(n, n, device=self.device, dtype=dtype)
            out = torch.empty(n, n, device=self.device, dtype=dtype)
            seconds = self._median_seconds("torch.mm(a, b, out=out)", {"torch": torch, "a": a, "b": b, "out": out})
            self._matmul[key] = 2 * n**3 / seconds
        return self._matmul[key]

    def datasheet(self) -> dict | None:
        """The datasheet peaks of this GPU when it is one we know, else None (and always on CPU)."""
        if self.device != "cuda":
            return None
        name = torch.cuda.get_device_name()
        for key, peaks in DATASHEET_PEAKS.items():
            if key in name:
                return {"name": key, **peaks}
        return None


class TimedBenchmark(BenchmarkFixture):
    """pytest-benchmark's fixture with this suite's timing rules.

    It shares the state (`__dict__`) of the fixture pytest-benchmark created, so `group`,
    `extra_info` and the recorded stats are that fixture's, and pytest-benchmark's own type check
    of the `benchmark` fixture still holds.
    """

    @classmethod
    def wrap(cls, inner: BenchmarkFixture, device: str, settings: Settings, roofline: Roofline) -> "TimedBenchmark":
        self = cls.__new__(cls)
        self.__dict__ = inner.__dict__
        self._vlmops_device = device
        self._vlmops_settings = settings
        self._vlmops_roofline = roofline
        self._vlmops_flush_buffer = None
        if device == "cuda":
            # pytest-benchmark reads the clock from this attribute in every round.
            self._timer = CudaEventClock()
        return self

    def _flush_l2(self):
        """Untimed setup of every CUDA round: overwrite a buffer larger than any L2 cache."""
        if self._vlmops_flush_buffer is None:
            self._vlmops_flush_buffer = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        self._vlmops_flush_buffer.zero_()

    def _seconds_per_call(self, call) -> float:
        for _ in range(2):  # the first call pays one-time costs (allocator growth, lazy init, autotune)
            if self._vlmops_device == "cuda":
                self._flush_l2()
            start = self._timer()
            call()
            seconds = self._timer() - start
        return max(seconds, 1e-9)

    def __call__(self, function, *args, **kwargs):
        """Time `function(*args, **kwargs)`; returns its result like pytest-benchmark does."""
        settings = self._vlmops_settings

        def call():
            return function(*args, **kwargs)

        seconds = self._seconds_per_call(call)
        on_cuda = self._vlmops_device == "cuda"
        # On CPU a round repeats a short call until it lasts min_round_time (the clock's precision
        # stays negligible); on CUDA every round is one call after an L2 flush.
        iterations = 1 if on_cuda else max(1, math.ceil(settings.min_round_time / seconds))
        rounds = math.ceil(settings.max_time / (seconds * iterations))
        rounds = min(max(rounds, settings.min_rounds), settings.max_rounds)
        result = super().pedantic(
            function,
            args=args,
            kwargs=kwargs,
            setup=self._flush_l2 if on_cuda else None,
            rounds=rounds,
            warmup_rounds=settings.warmup_rounds,
            iterations=iterations,
        )
        self._record_memory_and_roofline(call)
        return result

    def pedantic(self, target, args=(), kwargs=None, setup=None, **options):
        """pytest-benchmark's pedantic mode as is (the test chose its rounds), plus memory and roofline."""
        result = super().pedantic(target, args=args, kwargs=kwargs, setup=setup, **options)

        def call():
            call_args, call_kwargs = args, kwargs or {}
            if setup is not None:
                made = setup()
                if made:
                    call_args, call_kwargs = made
            return target(*call_args, **call_kwargs)

        self._record_memory_and_roofline(call)
        return result

    def _record_memory_and_roofline(self, call) -> None:
        """Peak memory from one more untimed call, unless the entry measured it on an untimed call of
        its own (extra_info "peak_bytes" and "dtype" set: a call of a whole tower costs seconds on CPU)."""
        device = self._vlmops_device
        extra = self.extra_info
        if "peak_bytes" not in extra or "dtype" not in extra:
            peak, out = peak_memory(call, device)
            extra["peak_bytes"] = int(peak)
            extra["peak_method"] = peak_method(device)
            if "dtype" not in extra:
                dtype = _first_floating_dtype(out)
                extra["dtype"] = str(dtype or torch.float32).replace("torch.", "")
            del out
        roofline = self._vlmops_roofline
        extra["copy_bytes_per_s"] = roofline.copy_bytes_per_s()
        if extra.get("flops"):
            # Only entries that count FLOPs are divided by it; on CPU one bf16 matmul roofline
            # alone costs ~6 minutes.
            extra["matmul_flops_per_s"] = roofline.matmul_flops_per_s(getattr(torch, extra["dtype"]))
