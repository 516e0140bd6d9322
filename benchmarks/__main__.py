"""The benchmark runner: `python -m benchmarks [--full | --tiny] [--device D] [--only EXPR] [--out DIR]`.

Runs every `benchmarks/bench_*.py` through pytest-benchmark in this process (a progress bar on
the terminal, pytest's own output in a log file), then writes the report: a table on stdout,
`<out>/<device>-<date>.json`, `<out>/<device>-<date>.png`, and for a CPU run of the default
suite the generated summary between the bench-summary markers of README.md. The static GPU kernel
report (`tools/kernel_report.py`, `collect()`, and its grid table, `launch_grids()`) runs afterwards in
a subprocess without TRITON_INTERPRET and is joined to the JSON and the table.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from benchmarks import harness, report

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"
KERNEL_REPORT_TIMEOUT_S = 900


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--full", action="store_true", help="the models' full sizes (and the extra full-only shapes)")
    sizes.add_argument("--tiny", action="store_true", help="shrink every shape: checks the harness, not the ops")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("--only", metavar="EXPR", help="pytest -k expression selecting entries (e.g. pixel_shuffle)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where the JSON and PNG go (default: %(default)s)"
    )
    readme = parser.add_mutually_exclusive_group()
    readme.add_argument(
        "--readme",
        type=Path,
        help="write the Markdown summary into this README (default: "
        "README.md, for a CPU run of the whole suite at default or full sizes into the default --out)",
    )
    readme.add_argument("--no-readme", action="store_true", help="never write a README summary")
    parser.add_argument(
        "--kernel-report",
        type=Path,
        default=ROOT / "tools" / "kernel_report.py",
        help="module with collect() -> list[dict] (default: %(default)s)",
    )
    return parser.parse_args(argv)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# collect() of the kernel report module, then its launch_grids() when it has one (a failure there is
# reported beside the kernel rows, not instead of them).
_KERNEL_REPORT_CODE = """
import json, runpy, sys
module = runpy.run_path(sys.argv[1])
kernels, grids, grids_reason = module["collect"](), [], ""
if "launch_grids" in module:
    try:
        grids = module["launch_grids"]()
    except Exception as error:
        grids_reason = f"{type(error).__name__}: {error}"
print(json.dumps({"kernels": kernels, "grids": grids, "grids_reason": grids_reason}))
"""


def run_kernel_report(path: Path) -> dict:
    """collect() and launch_grids() of the kernel report module, in a subprocess compiling for real GPUs
    (no interpreter)."""
    if not path.exists():
        return {"status": "not available", "reason": f"{path} not found", "kernels": [], "grids": []}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = _KERNEL_REPORT_CODE
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=KERNEL_REPORT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        reason = f"timed out after {KERNEL_REPORT_TIMEOUT_S} s"
        return {"status": "error", "reason": reason, "kernels": [], "grids": []}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"exit {proc.returncode}: {error}", "kernels": [], "grids": []}
    return {"status": "ok", "reason": "", **json.loads(lines[-1])}


def git_commit() -> str | None:
    """The checked-out commit (with "+dirty" when the tree has changes), None outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def roofline_summary(bench_json: dict, datasheet) -> dict:
    """The roofline the entries were divided by (every entry carries the values it was compared with)."""
    copy, matmul = None, {}
    for entry in bench_json.get("benchmarks", []):
        extra = entry.get("extra_info", {})
        copy = extra.get("copy_bytes_per_s", copy)
        if "matmul_flops_per_s" in extra:
            matmul[extra["dtype"]] = extra["matmul_flops_per_s"]
    return {"copy_bytes_per_s": copy, "matmul_flops_per_s": matmul, "datasheet": datasheet}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = harness.resolve_device(args.device)
    if device == "cuda" and not torch.cuda.is_available():
        print("python -m benchmarks: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    tier = "tiny" if args.tiny else "full" if args.full else "default"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{device}-{date}"
    log_path = Path(tempfile.mkstemp(prefix="vlmops-bench-", suffix=".log")[1])

    with tempfile.TemporaryDirectory() as tmp:
        bench_json_path = Path(tmp) / "pytest-benchmark.json"
        pytest_args = [
            str(ROOT / "benchmarks"),
            "-o",
            "python_files=bench_*.py",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            f"--rootdir={ROOT}",
            f"--benchmark-json={bench_json_path}",
            "--benchmark-disable-gc",
            f"--device={device}",
        ]
        pytest_args += ["--full"] if args.full else ["--tiny"] if args.tiny else []
        pytest_args += ["-k", args.only] if args.only else []
        # pytest captures fds 1 and 2 around each test: the progress bar writes to a duplicate of 2.
        progress = os.fdopen(os.dup(2), "w")
        collector = report.Collector(progress)
        started = datetime.datetime.now(datetime.timezone.utc)
        load_average = os.getloadavg()[0]
        with open(log_path, "w") as log, redirect_stdout(log):
            exit_code = int(pytest.main(pytest_args, plugins=[collector]))
        progress.close()
        duration = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        # pytest-benchmark leaves the file empty when no entry ran (all failed or were skipped).
        text = bench_json_path.read_text() if bench_json_path.exists() else ""
        bench_json = json.loads(text) if text.strip() else {}

    if exit_code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print(f"python -m benchmarks: no benchmark selected (pytest log: {log_path})", file=sys.stderr)
        return exit_code
    if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"python -m benchmarks: pytest stopped with exit code {exit_code}; see {log_path}", file=sys.stderr)
        print(log_path.read_text()[-4000:], file=sys.stderr)
        return exit_code

    datasheet = harness.Roofline(device, harness.settings_for(tier, device)).datasheet()
    rows = report.build_rows(bench_json, collector.unfinished_rows, collector.collected, datasheet)
    ratios = report.build_ratios(rows)
    result = {
        "meta": {
            "device": device,
            "device_name": device_name(device),
            "date": date,
            "started_utc": started.isoformat(timespec="seconds"),
            "duration_s": round(duration, 1),
            "tier": tier,
            "commit": git_commit(),
            "command": "python -m benchmarks" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
            "cpu_count": len(os.sched_getaffinity(0)),
            # 1-minute load average at the start and at the end: other processes share these CPUs.
            "load_average": [round(load_average, 2), round(os.getloadavg()[0], 2)],
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "triton": _version("triton"),
            "pytest_benchmark": _version("pytest_benchmark"),
            "peers": harness.peer_versions(),
            "vlmops_build": _vlmops_build_info(),
        },
        "columns": list(report.ROW_COLUMNS),
        "collected": collector.collected,
        "roofline": roofline_summary(bench_json, datasheet),
        "rows": rows,
        "ratios": ratios,
        "targets": report.check_targets(collector.targets, ratios, device),
        "kernel_report": run_kernel_report(args.kernel_report),
    }
    json_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
    report.write_json(result, json_path)
    report.write_plot(result, png_path)
    print(report.terminal_table(result))
    print(f"\nwrote {json_path} and {png_path}; pytest log: {log_path}")

    readme = args.readme
    whole_default_run = device == "cpu" and tier != "tiny" and not args.only and args.out.resolve() == DEFAULT_OUT
    if readme is None and not args.no_readme and whole_default_run:
        readme = ROOT / "README.md"
    if readme is not None:
        report.update_readme(result, readme)
        print(f"updated the benchmark summary in {readme}")
    return exit_code


def _version(module: str):
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


def _vlmops_build_info():
    import vlmops

    return vlmops.build_info()


if __name__ == "__main__":
    sys.exit(main())
