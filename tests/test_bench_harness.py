"""The benchmark harness cannot rot: it runs end to end on tiny shapes, and its report logic is checked.

The end-to-end run is a subprocess (`python -m benchmarks --tiny`) writing into a temporary
directory; it must never touch README.md or benchmarks/results/.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.__main__ import run_kernel_report

ROOT = Path(__file__).resolve().parent.parent

FAKE_KERNEL_REPORT = """
import os

def collect():
    return [{"kernel": "fake_kernel", "config": "BLOCK=64", "arch": "sm_90a", "registers": 40, "spill_stores": 0,
             "spill_loads": 0, "shared_bytes": 1024, "wgmma": True,
             "triton_interpret": os.environ.get("TRITON_INTERPRET")}]

def launch_grids():
    return [{"kernel": "fake_copy_kernel", "backend": "triton", "entry": "fake:entry:fwd", "tier": "full",
             "dtype": "float32", "grid": [264, 1, 1], "programs": 264, "sms": 132, "waves": 2.0, "sm_sized": False,
             "vector_bytes": 16}]
"""


def _fingerprint(path: Path):
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    fake = out / "fake_kernel_report.py"
    fake.write_text(FAKE_KERNEL_REPORT)
    protected = {p: _fingerprint(p) for p in (ROOT / "README.md", ROOT / "benchmarks" / "results")}
    env = dict(os.environ, TRITON_INTERPRET="1")  # the kernel report must run without it all the same
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--kernel-report",
            str(fake),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for path, before in protected.items():
        assert _fingerprint(path) == before, f"the tiny run modified {path}"
    (json_path,) = out.glob("cpu-*.json")
    return {"out": out, "stdout": proc.stdout, "result": json.loads(json_path.read_text()), "json": json_path}


def test_every_row_has_every_column(tiny_run):
    result = tiny_run["result"]
    assert result["columns"] == list(report.ROW_COLUMNS)
    assert result["rows"]
    for row in result["rows"]:
        assert set(row) == set(report.ROW_COLUMNS), row
        if row["status"] == "ok":
            for column in (
                "median_s",
                "iqr_s",
                "rounds",
                "bytes",
                "bytes_per_s",
                "pct_copy_bandwidth",
                "peak_bytes",
                "dtype",
            ):
                assert row[column] is not None, (column, row)
            # peak_bytes may be 0: an in-place entry (rope's vlmops-inplace) allocates nothing.
            assert row["median_s"] > 0 and row["peak_bytes"] >= 0


def test_every_entry_ran_or_was_skipped_with_a_reason(tiny_run):
    result = tiny_run["result"]
    by_test = {row["test"]: row for row in result["rows"]}
    assert result["collected"], "nothing was collected"
    for nodeid in result["collected"]:
        assert nodeid in by_test, f"{nodeid} has no row"
        row = by_test[nodeid]
        assert row["status"] in ("ok", "skipped"), row
        if row["status"] == "skipped":
            assert row["reason"].strip(), row
        assert row["role"] in ("vlmops", "baseline"), row
    # Every group that ran a vlmops impl and a baseline has their ratio.
    for group in {row["group"] for row in result["rows"]}:
        ran = [row for row in result["rows"] if row["group"] == group and row["status"] == "ok"]
        pairs = {(r["vlmops_impl"], r["baseline"]) for r in result["ratios"] if r["group"] == group}
        expected = {
            (m["impl"], b["impl"]) for m in ran if m["role"] == "vlmops" for b in ran if b["role"] == "baseline"
        }
        assert pairs == expected


def test_outputs_written(tiny_run):
    result, out = tiny_run["result"], tiny_run["out"]
    (png,) = out.glob("cpu-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["meta"]["tier"] == "tiny" and result["meta"]["device"] == "cpu"
    assert result["roofline"]["copy_bytes_per_s"] > 0 and result["roofline"]["matmul_flops_per_s"]["float32"] > 0
    assert result["targets"], "the pixel shuffle CPU targets were not picked up"
    assert all(t["status"] in ("met", "NOT met") for t in result["targets"])
    stdout = tiny_run["stdout"]
    assert "speedup of vlmops" in stdout and "roofline" in stdout and "fake_kernel" in stdout
    assert "launch grids at the benchmark shapes (waves of 132 SMs)" in stdout and "fake_copy_kernel" in stdout


def test_kernel_report_joined_without_interpreter(tiny_run):
    kernel_report = tiny_run["result"]["kernel_report"]
    assert kernel_report["status"] == "ok"
    (kernel,) = kernel_report["kernels"]
    assert kernel["kernel"] == "fake_kernel" and kernel["triton_interpret"] is None
    (grid,) = kernel_report["grids"]
    assert grid["kernel"] == "fake_copy_kernel" and kernel_report["grids_reason"] == ""


def test_grid_table_text():
    """The grid table of make bench's report: one line per launch, grid, programs, waves, vector bytes;
    a failed grid collection is named instead of the table."""
    grids = [
        {
            "kernel": "k1",
            "backend": "triton",
            "entry": "op:case:fwd",
            "tier": "full",
            "dtype": "bfloat16",
            "grid": [128, 5, 1],
            "programs": 640,
            "sms": 132,
            "waves": 4.85,
            "sm_sized": True,
            "vector_bytes": 16,
        },
        {
            "kernel": "k2",
            "backend": "cuda",
            "entry": "op:case:fwd",
            "tier": "default",
            "dtype": "float32",
            "grid": [100, 1, 1],
            "programs": 100,
            "sms": 132,
            "waves": 0.76,
            "sm_sized": False,
            "vector_bytes": None,
        },
    ]
    lines = report.grid_table_text({"grids": grids}).splitlines()
    assert lines[0] == "launch grids at the benchmark shapes (waves of 132 SMs):"
    assert lines[3].split() == [
        "k1",
        "triton",
        "op:case:fwd",
        "full",
        "bfloat16",
        "128x5x1",
        "640",
        "4.85",
        "yes",
        "16",
        "B",
    ]
    assert lines[4].split() == ["k2", "cuda", "op:case:fwd", "default", "float32", "100x1x1", "100", "0.76", "no", "-"]
    failed = report.grid_table_text({"grids": [], "grids_reason": "ImportError: no triton"})
    assert failed == "launch grids: ImportError: no triton"


def test_kernel_report_absent_or_broken(tmp_path):
    missing = run_kernel_report(tmp_path / "kernel_report.py")
    assert missing["status"] == "not available" and "not found" in missing["reason"]
    broken = tmp_path / "broken.py"
    broken.write_text("def collect():\n    raise RuntimeError('no ptxas here')\n")
    failed = run_kernel_report(broken)
    assert failed["status"] == "error" and "no ptxas here" in failed["reason"]
    grids_broken = tmp_path / "grids_broken.py"
    grids_broken.write_text(
        "def collect():\n    return []\n\ndef launch_grids():\n    raise ImportError('no triton')\n"
    )
    partial = run_kernel_report(grids_broken)
    assert partial["status"] == "ok" and partial["grids"] == [] and partial["grids_reason"] == "ImportError: no triton"


def _row(group, impl, role, median):
    return {"group": group, "impl": impl, "role": role, "status": "ok", "median_s": median}


def test_ratios_and_targets():
    rows = [
        _row("op:s:fwd", "vlmops", "vlmops", 1.0),
        _row("op:s:fwd", "vlmops-triton", "vlmops", 2.0),
        _row("op:s:fwd", "transformers", "baseline", 3.0),
        _row("op:s:fwd", "torch.compile", "baseline", 1.5),
        {**_row("op:s:fwd", "liger-kernel", "baseline", None), "status": "skipped"},
        _row("op:t:fwd", "eager", "baseline", 1.0),
    ]
    ratios = {(r["group"], r["vlmops_impl"], r["baseline"]): r["speedup"] for r in report.build_ratios(rows)}
    assert ratios == {
        ("op:s:fwd", "vlmops", "transformers"): 3.0,
        ("op:s:fwd", "vlmops", "torch.compile"): 1.5,
        ("op:s:fwd", "vlmops-triton", "transformers"): 1.5,
        ("op:s:fwd", "vlmops-triton", "torch.compile"): 0.75,
    }
    targets = [
        {"group": "op:*:fwd", "baseline": "transformers", "min_speedup": 2.0, "source": "t1"},
        {"group": "op:s:fwd", "baseline": "torch.compile", "min_speedup": 1.0, "source": "t2"},
        {"group": "other:*", "baseline": "eager", "min_speedup": 1.0, "source": "t3"},
    ]
    checked = report.check_targets(targets, report.build_ratios(rows), "cpu")
    # vlmops-triton misses the first one (1.5x < 2x) and the second (0.75x): a target holds only if every impl meets it.
    assert [t["status"] for t in checked] == ["NOT met", "NOT met", "not measured"]
    assert "not applicable" in report.check_targets(targets, report.build_ratios(rows), "cuda")[0]["status"]


def test_readme_summary_replaces_only_its_section(tmp_path):
    result = {
        "meta": {
            "command": "python -m benchmarks",
            "date": "2026-01-01",
            "device": "cpu",
            "device_name": "cpu",
            "cpu_count": 2,
            "torch": "x",
            "transformers": "y",
            "tier": "default",
            "load_average": [1.0, 1.0],
        },
        "roofline": {"copy_bytes_per_s": 1e10, "matmul_flops_per_s": {"float32": 5e10}, "datasheet": None},
        "rows": [],
        "ratios": [],
        "targets": [],
        "kernel_report": {"status": "not available", "reason": "absent", "kernels": []},
    }
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\nowned by the lead\n")
    report.update_readme(result, readme)
    first = readme.read_text()
    assert first.startswith("# project\n\nowned by the lead\n") and "## Benchmarks" in first
    assert first.count(report.README_BEGIN) == 1 and first.count(report.README_END) == 1
    readme.write_text(first + "\nmore text by the lead\n")
    result["meta"]["date"] = "2026-02-02"
    report.update_readme(result, readme)
    second = readme.read_text()
    assert "2026-02-02" in second and "2026-01-01" not in second
    assert second.endswith("\nmore text by the lead\n") and second.count("## Benchmarks") == 1


def test_rows_from_pytest_benchmark_json():
    stats = {"median": 0.5, "iqr": 0.1, "mean": 0.55, "min": 0.4, "rounds": 10, "iterations": 1}
    bench_json = {
        "benchmarks": [
            {
                "group": "op:s:fwd",
                "name": "test[vlmops]",
                "fullname": "b.py::test[vlmops]",
                "stats": stats,
                "extra_info": {
                    "impl": "vlmops",
                    "role": "vlmops",
                    "bytes": 4e9,
                    "flops": 1e10,
                    "dtype": "bfloat16",
                    "copy_bytes_per_s": 1e10,
                    "matmul_flops_per_s": 1e11,
                    "peak_bytes": 123,
                },
            }
        ]
    }
    skipped = {
        "group": "op:s:fwd",
        "impl": "peer",
        "role": "baseline",
        "status": "skipped",
        "reason": "not installed",
        "test": "b.py::test[peer]",
    }
    datasheet = {"name": "H100", "bytes_per_s": 4e10, "flops_per_s": {"bfloat16": 1e12}}
    collected = ["b.py::test[vlmops]", "b.py::test[peer]", "b.py::test[silent]"]
    rows = {row["test"]: row for row in report.build_rows(bench_json, [skipped], collected, datasheet)}
    assert all(set(row) == set(report.ROW_COLUMNS) for row in rows.values())
    ran = rows["b.py::test[vlmops]"]
    assert (ran["op"], ran["shape"], ran["mode"]) == ("op", "s", "fwd")
    assert ran["bytes_per_s"] == 8e9 and ran["pct_copy_bandwidth"] == pytest.approx(80.0)
    assert ran["flops_per_s"] == 2e10 and ran["pct_matmul"] == pytest.approx(20.0)
    assert ran["pct_datasheet_bandwidth"] == pytest.approx(20.0) and ran["pct_datasheet_flops"] == pytest.approx(2.0)
    assert rows["b.py::test[peer]"]["status"] == "skipped" and rows["b.py::test[peer]"]["median_s"] is None
    assert rows["b.py::test[silent]"]["status"] == "error" and "without timing" in rows["b.py::test[silent]"]["reason"]


def test_missing_peer_is_a_skip_with_its_reason():
    from benchmarks.harness import require_peer

    with pytest.raises(pytest.skip.Exception, match="needs a CUDA device"):
        require_peer("liger_kernel", device="cpu")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_peer("vlmops_no_such_peer", device="cuda")


def test_roofline_times_on_every_thread(monkeypatch):
    # torch.utils.benchmark.Timer defaults to one thread: a roofline measured that way reads about
    # half a multi-core machine's GEMM rate, and multi-threaded entries then show more than 100% of it.
    import torch
    from torch.utils import benchmark as tbench

    from benchmarks.harness import Roofline, settings_for

    threads = []
    real_timer = tbench.Timer

    def recording_timer(*args, **kwargs):
        threads.append(kwargs.get("num_threads", 1))
        return real_timer(*args, **kwargs)

    monkeypatch.setattr(tbench, "Timer", recording_timer)
    roofline = Roofline("cpu", settings_for("tiny", "cpu"))
    assert roofline.copy_bytes_per_s() > 0 and roofline.matmul_flops_per_s(torch.float32) > 0
    assert threads == [torch.get_num_threads()] * 2


def test_wrapper_overhead_tool_runs():
    """tools/wrapper_overhead.py times every memory-bound op's wrapper against its torch.ops call."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import wrapper_overhead
    finally:
        sys.path.remove(str(ROOT / "tools"))
    times = wrapper_overhead.measure(rounds=1, number=3)
    assert times.pop("aten.alias") > 0
    assert set(times) == set(wrapper_overhead.calls())
    assert all(wrapper > 0 and op > 0 for wrapper, op in times.values())
