"""From pytest-benchmark's results to the report: rows, ratios, targets, table, JSON, PNG, README.

A row is one entry (group x impl): ran ("ok", with its median and roofline percentages), skipped
(with pytest.skip's reason) or failed ("error", with the exception line). Ratios are baseline
median / vlmops median within a group, for every (vlmops impl, baseline) pair that ran.
"""

import fnmatch
import json
import math
from pathlib import Path

import pytest

ROW_COLUMNS = (
    "group",
    "op",
    "shape",
    "mode",
    "impl",
    "role",
    "status",
    "reason",
    "dtype",
    "median_s",
    "iqr_s",
    "mean_s",
    "min_s",
    "rounds",
    "iterations",
    "bytes",
    "flops",
    "bytes_per_s",
    "pct_copy_bandwidth",
    "flops_per_s",
    "pct_matmul",
    "pct_datasheet_bandwidth",
    "pct_datasheet_flops",
    "peak_bytes",
    "test",
)
README_BEGIN = "<!-- bench-summary:begin -->"
README_END = "<!-- bench-summary:end -->"


def _split_group(group: str) -> tuple[str, str, str]:
    """ "<op>:<shape-name>:<fwd|fwd+bwd>" -> its three parts (a group not named so is its own op)."""
    parts = group.split(":")
    return tuple(parts) if len(parts) == 3 else (group, "", "")


class Collector:
    """pytest plugin: a progress bar, the rows of skipped and failed entries, and the CPU targets."""

    def __init__(self, progress_stream):
        self.progress_stream = progress_stream
        self.bar = None
        self.unfinished_rows = []  # skipped or failed entries: pytest-benchmark has no stats for them
        self.targets = []
        self.collected = []  # node ids of every selected entry: each must end up as a row

    def pytest_collection_finish(self, session):
        from tqdm import tqdm

        self.collected = [item.nodeid for item in session.items]
        self.bar = tqdm(total=len(session.items), file=self.progress_stream, unit="entry", dynamic_ncols=True)
        modules = {item.module for item in session.items if getattr(item, "module", None) is not None}
        for module in sorted(modules, key=lambda m: m.__name__):
            self.targets.extend(getattr(module, "CPU_TARGETS", ()))

    def pytest_runtest_logstart(self, nodeid, location):
        if self.bar is not None:
            self.bar.set_description(nodeid.split("::")[-1][:60])

    def pytest_runtest_logfinish(self, nodeid, location):
        if self.bar is not None:
            self.bar.update(1)

    def pytest_sessionfinish(self, session):
        if self.bar is not None:
            self.bar.close()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.passed:
            return
        fixture = getattr(item, "funcargs", {}).get("benchmark")
        group = getattr(fixture, "group", None) or item.nodeid
        extra = dict(getattr(fixture, "extra_info", {}) or {})
        if report.skipped:
            status = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
        else:
            status = "error"
            reason = f"{report.when}: " + (call.excinfo.exconly().splitlines()[0] if call.excinfo else "failed")
        self.unfinished_rows.append(
            {
                "group": group,
                "impl": extra.get("impl", item.name),
                "role": extra.get("role", ""),
                "status": status,
                "reason": reason,
                "dtype": extra.get("dtype"),
                "bytes": extra.get("bytes"),
                "flops": extra.get("flops"),
                "test": item.nodeid,
            }
        )


def _pct(numerator, denominator):
    if not numerator or not denominator:
        return None
    return 100.0 * numerator / denominator


def build_rows(
    pytest_benchmark_json: dict, unfinished_rows: list, collected: list, datasheet: dict | None
) -> list[dict]:
    """One row per collected entry (and per failure), with every column of ROW_COLUMNS."""
    rows = []
    for entry in pytest_benchmark_json.get("benchmarks", []):
        extra = entry.get("extra_info", {})
        stats = entry["stats"]
        median = stats["median"]
        nbytes, flops = extra.get("bytes") or 0, extra.get("flops") or 0
        bytes_per_s = nbytes / median if nbytes else None
        flops_per_s = flops / median if flops else None
        row = {
            "group": entry.get("group") or entry["fullname"],
            "impl": extra.get("impl", entry["name"]),
            "role": extra.get("role", ""),
            "status": "ok",
            "reason": "",
            "dtype": extra.get("dtype"),
            "median_s": median,
            "iqr_s": stats["iqr"],
            "mean_s": stats["mean"],
            "min_s": stats["min"],
            "rounds": stats["rounds"],
            "iterations": stats["iterations"],
            "bytes": nbytes,
            "flops": flops,
            "bytes_per_s": bytes_per_s,
            "pct_copy_bandwidth": _pct(bytes_per_s, extra.get("copy_bytes_per_s")),
            "flops_per_s": flops_per_s,
            "pct_matmul": _pct(flops_per_s, extra.get("matmul_flops_per_s")),
            "pct_datasheet_bandwidth": _pct(bytes_per_s, datasheet and datasheet["bytes_per_s"]),
            "pct_datasheet_flops": _pct(flops_per_s, datasheet and datasheet["flops_per_s"].get(extra.get("dtype"))),
            "peak_bytes": extra.get("peak_bytes"),
            "test": entry["fullname"],
        }
        rows.append(row)
    rows.extend(unfinished_rows)
    reported = {row["test"] for row in rows}
    rows.extend(
        {
            "group": nodeid,
            "impl": nodeid.split("::")[-1],
            "role": "",
            "status": "error",
            "reason": "passed without timing anything (no benchmark(...) call)",
            "test": nodeid,
        }
        for nodeid in collected
        if nodeid not in reported
    )
    complete = []
    for row in rows:
        op, shape, mode = _split_group(row["group"])
        full = {column: None for column in ROW_COLUMNS}
        full.update(row, op=op, shape=shape, mode=mode)
        complete.append(full)
    order = {"vlmops": 0, "baseline": 1}
    complete.sort(key=lambda r: (r["group"], order.get(r["role"], 2), r["median_s"] or math.inf, r["impl"]))
    return complete


def build_ratios(rows: list[dict]) -> list[dict]:
    """speedup = baseline median / vlmops median, for every pair of rows that ran in one group."""
    ratios = []
    groups = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(row["group"], []).append(row)
    for group, members in groups.items():
        for mine in (r for r in members if r["role"] == "vlmops"):
            for base in (r for r in members if r["role"] == "baseline"):
                ratios.append(
                    {
                        "group": group,
                        "vlmops_impl": mine["impl"],
                        "baseline": base["impl"],
                        "speedup": base["median_s"] / mine["median_s"],
                    }
                )
    return ratios


def check_targets(targets: list[dict], ratios: list[dict], device: str) -> list[dict]:
    """Each CPU target with the measured speedups of every vlmops impl in its group(s)."""
    checked = []
    for target in targets:
        found = [
            r
            for r in ratios
            if fnmatch.fnmatchcase(r["group"], target["group"]) and r["baseline"] == target["baseline"]
        ]
        measured = [
            {
                "group": r["group"],
                "vlmops_impl": r["vlmops_impl"],
                "speedup": r["speedup"],
                "met": r["speedup"] >= target["min_speedup"],
            }
            for r in found
        ]
        if device != "cpu":
            status = "not applicable (CPU target, this run is on " + device + ")"
        elif not measured:
            status = "not measured"
        else:
            status = "met" if all(m["met"] for m in measured) else "NOT met"
        checked.append({**target, "measured": measured, "status": status})
    return checked


# ---------------------------------------------------------------------------------------------- text


def fmt_time(seconds) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def fmt_rate(value, pct, unit, pct_datasheet=None) -> str:
    """ "0.42 GB/s (11%)": the achieved rate and its share of the measured roofline (and of the datasheet)."""
    if value is None:
        return "-"
    text = f"{value / 1e9:.3g} G{unit}"
    shares = [f"{p:.0f}%{label}" for p, label in ((pct, ""), (pct_datasheet, " of datasheet")) if p is not None]
    return text + (f" ({', '.join(shares)})" if shares else "")


def _speedup_text(row, ratios) -> str:
    if row["role"] != "baseline" or row["status"] != "ok":
        return ""
    mine = [r for r in ratios if r["group"] == row["group"] and r["baseline"] == row["impl"]]
    return ", ".join(f"{r['vlmops_impl']} {r['speedup']:.2f}x" for r in mine)


def _table(headers, lines) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *lines)]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(out)


def terminal_table(result: dict) -> str:
    rows, ratios = result["rows"], result["ratios"]
    lines = []
    for row in rows:
        if row["status"] == "ok":
            lines.append(
                (
                    row["group"],
                    row["impl"],
                    row["role"],
                    fmt_time(row["median_s"]),
                    fmt_time(row["iqr_s"]),
                    fmt_rate(row["bytes_per_s"], row["pct_copy_bandwidth"], "B/s", row["pct_datasheet_bandwidth"]),
                    fmt_rate(row["flops_per_s"], row["pct_matmul"], "FLOP/s", row["pct_datasheet_flops"]),
                    fmt_bytes(row["peak_bytes"]),
                    _speedup_text(row, ratios),
                )
            )
        else:
            lines.append((row["group"], row["impl"], row["role"], row["status"], "", "", "", "", row["reason"]))
    headers = (
        "group",
        "impl",
        "role",
        "median",
        "IQR",
        "bandwidth (% copy)",
        "compute (% matmul)",
        "peak mem",
        "speedup of vlmops vs this baseline",
    )
    parts = [_table(headers, lines), "", roofline_text(result)]
    for target in result["targets"]:
        parts.append(target_text(target))
    parts.append(kernel_report_text(result["kernel_report"]))
    return "\n".join(parts)


def roofline_text(result: dict) -> str:
    roof = result["roofline"]
    text = (
        f"roofline ({result['meta']['device_name']}): copy {roof['copy_bytes_per_s'] / 1e9:.3g} GB/s"
        if roof["copy_bytes_per_s"]
        else "roofline: not measured"
    )
    for dtype, value in sorted(roof["matmul_flops_per_s"].items()):
        text += f", matmul {dtype} {value / 1e9:.3g} GFLOP/s"
    if roof.get("datasheet"):
        sheet = roof["datasheet"]
        text += f"; datasheet {sheet['name']}: {sheet['bytes_per_s'] / 1e12:.3g} TB/s, " + ", ".join(
            f"{d} {v / 1e12:.4g} TFLOP/s" for d, v in sheet["flops_per_s"].items()
        )
    return text


def target_text(target: dict) -> str:
    measured = ", ".join(f"{m['vlmops_impl']} {m['speedup']:.2f}x" for m in target["measured"]) or "no measurement"
    return (
        f"CPU target ({target['source']}): >= {target['min_speedup']:g}x vs {target['baseline']} "
        f"in {target['group']} -> measured {measured}: {target['status']}"
    )


def kernel_report_text(report: dict) -> str:
    if report["status"] != "ok":
        return f"kernel report: {report['status']} ({report['reason']})"
    kernels = report["kernels"]
    if not kernels:
        return "kernel report: no kernels"
    headers = (
        "kernel",
        "config",
        "arch",
        "registers",
        "spill stores",
        "spill loads",
        "shared",
        "wgmma",
        "ld 128-bit/all",
        "st 128-bit/all",
    )
    lines = [
        (
            k.get("kernel"),
            k.get("config"),
            k.get("arch"),
            k.get("registers"),
            k.get("spill_stores"),
            k.get("spill_loads"),
            fmt_bytes(k.get("shared_bytes")),
            k.get("wgmma"),
            f"{k.get('ld_global_128')}/{k.get('ld_global')}",
            f"{k.get('st_global_128')}/{k.get('st_global')}",
        )
        for k in kernels
    ]
    spilled = [
        f"{k.get('kernel')} [{k.get('config')}] on {k.get('arch')}"
        for k in kernels
        if k.get("spill_stores") or k.get("spill_loads")
    ]
    verdict = "SPILLS: " + "; ".join(spilled) if spilled else "no spills"
    text = f"kernel report ({len(kernels)} kernels, {verdict}):\n" + _table(headers, lines)
    return text + "\n\n" + grid_table_text(report)


def grid_table_text(report: dict) -> str:
    """The kernel report's grid table: each memory-bound kernel's grid at the benchmark shapes, in
    waves of the SMs of tools/launch_grids.py (programs / SMs; sm-sized: capped by the SM count)."""
    grids = report.get("grids") or []
    if not grids:
        return "launch grids: " + (report.get("grids_reason") or "none")
    headers = (
        "kernel",
        "backend",
        "benchmark entry",
        "tier",
        "dtype",
        "grid",
        "programs",
        "waves",
        "sm-sized",
        "vector",
    )
    lines = [
        (
            g["kernel"],
            g["backend"],
            g["entry"],
            g["tier"],
            g["dtype"],
            "x".join(str(d) for d in g["grid"]),
            g["programs"],
            f"{g['waves']:.2f}",
            "yes" if g["sm_sized"] else "no",
            f"{g['vector_bytes']} B" if g["vector_bytes"] else "-",
        )
        for g in grids
    ]
    return f"launch grids at the benchmark shapes (waves of {grids[0]['sms']} SMs):\n" + _table(headers, lines)


# ---------------------------------------------------------------------------------------------- files


def write_json(result: dict, path: Path) -> None:
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")


def write_plot(result: dict, path: Path) -> None:
    """Horizontal bars: speedup of each vlmops impl over each baseline, per group, log scale."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = result["ratios"]
    baselines = sorted({r["baseline"] for r in ratios})
    colors = {b: plt.cm.tab10(i % 10) for i, b in enumerate(baselines)}
    labels = [f"{r['group']}  [{r['vlmops_impl']} vs {r['baseline']}]" for r in ratios]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.32 * max(1, len(ratios))))
    if ratios:
        y = list(range(len(ratios)))
        speedups = [r["speedup"] for r in ratios]
        # Bars grow from 1x: right when vlmops is faster, left when it is slower.
        ax.barh(y, [s - 1 for s in speedups], left=1, color=[colors[r["baseline"]] for r in ratios])
        for position, speedup in zip(y, speedups):
            ax.annotate(
                f"{speedup:.2f}x",
                (speedup, position),
                xytext=(3 if speedup >= 1 else -3, 0),
                textcoords="offset points",
                va="center",
                ha="left" if speedup >= 1 else "right",
                fontsize=7,
            )
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        low, high = min(speedups + [1.0]), max(speedups + [1.0])
        ax.set_xlim(low / 1.5, high * 1.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[b]) for b in baselines]
        ax.legend(
            handles,
            baselines,
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            title="baseline",
            title_fontsize=7,
        )
    else:
        ax.text(
            0.5,
            0.5,
            "no ratios: no group had a vlmops and a baseline entry that ran",
            ha="center",
            transform=ax.transAxes,
        )
        ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup of vlmops (baseline median / vlmops median), log scale; > 1 means vlmops is faster")
    meta = result["meta"]
    ax.set_title(
        f"vlmops speedups on {meta['device_name']} ({meta['date']}, {meta['tier']} sizes, "
        f"load average {meta['load_average'][0]:.1f} on {meta['cpu_count']} CPUs)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_summary(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"Generated by `{meta['command']}` on {meta['date']} at commit {meta.get('commit') or 'unknown'} "
        f"({meta['device_name']}, {meta['cpu_count']} CPUs, "
        f"load average {meta['load_average'][0]:.1f} at the start: the machine is shared, so ratios are noisy; "
        f"torch {meta['torch']}, transformers {meta['transformers']}, {meta['tier']} sizes"
        + (": reduced from the models' real sizes where the entry says so" if meta["tier"] == "default" else "")
        + "). Do not edit by hand.",
        "",
        roofline_text(result) + ".",
        "",
        "| group | impl | median | bandwidth (% of copy) | compute (% of matmul) | peak memory "
        "| speedup of vlmops vs this |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if row["status"] == "ok":
            lines.append(
                f"| {row['group']} | {row['impl']} | {fmt_time(row['median_s'])} | "
                f"{fmt_rate(row['bytes_per_s'], row['pct_copy_bandwidth'], 'B/s')} | "
                f"{fmt_rate(row['flops_per_s'], row['pct_matmul'], 'FLOP/s')} | "
                f"{fmt_bytes(row['peak_bytes'])} | {_speedup_text(row, result['ratios'])} |"
            )
        else:
            lines.append(f"| {row['group']} | {row['impl']} | {row['status']}: {row['reason']} | | | | |")
    if result["targets"]:
        lines += ["", "Targets from the op issues:", ""]
        lines += [f"- {target_text(t)}" for t in result["targets"]]
    lines += [
        "",
        f"All columns: `benchmarks/results/{meta['device']}-{meta['date']}.json`; speedup plot: the `.png` "
        "beside it (not committed).",
    ]
    lines += ["", kernel_report_text(result["kernel_report"]).split("\n")[0].rstrip(":") + "."]
    return "\n".join(lines)


def update_readme(result: dict, readme: Path) -> None:
    """Replace what lies between the bench-summary markers (adding a Benchmarks section if absent)."""
    text = readme.read_text() if readme.exists() else ""
    block = f"{README_BEGIN}\n{markdown_summary(result)}\n{README_END}"
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1]
        text = head + block + tail
    else:
        section = (
            "## Benchmarks\n\n"
            "`make bench` runs `python -m benchmarks` (reduced sizes on the default device; `make bench-full`: "
            "`--full`, the models' real sizes). Options: `--device cpu|cuda`, `--only EXPR` (a pytest `-k` "
            "expression), `--out DIR`. Each op's entries (`benchmarks/bench_<op>.py`) time vlmops against the "
            "transformers code it replaces, eager PyTorch, `torch.compile` of it and, on GPU, the installed "
            "peers; the report gives medians, speedups, achieved bandwidth and FLOP/s as a share of the copy "
            "bandwidth and matmul throughput measured in the same run, and peak memory, in "
            "`benchmarks/results/<device>-<date>.json` and a speedup plot beside it. The summary of the latest "
            "CPU run below is generated by it.\n\n"
        )
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + section + block + "\n"
    readme.write_text(text)
