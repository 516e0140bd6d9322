"""The static GPU kernel report (tools/kernel_report.py): every Triton kernel spec compiles for sm_80
and sm_90a without a GPU, with no register spills and a register count a GPU can launch.

Compilation is impossible under TRITON_INTERPRET (which conftest sets on GPU-less machines), so the
report runs in a subprocess whose environment does not have it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmops.triton import kernel_specs

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "tools" / "kernel_report.py"
ARCHS = {"sm_80", "sm_90a"}


@pytest.fixture(scope="module")
def report_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_report") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, str(REPORT), "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"kernel_report failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text())


def test_every_triton_spec_compiles_for_both_archs(report_rows):
    specs = {(spec.name, spec.config) for spec in kernel_specs()}
    assert specs, "no Triton kernel specs registered"
    compiled = {(row["kernel"], row["config"], row["arch"]) for row in report_rows}
    missing = {(name, config, arch) for name, config in specs for arch in ARCHS} - compiled
    assert not missing, f"not in the report: {sorted(missing)}"


def test_no_spills_and_sane_registers(report_rows):
    for row in report_rows:
        assert set(row) == {
            "kernel",
            "config",
            "arch",
            "registers",
            "spill_stores",
            "spill_loads",
            "shared_bytes",
            "wgmma",
            "ld_global",
            "ld_global_128",
            "st_global",
            "st_global_128",
        }, row
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
        assert 0 < row["registers"] <= 255, row
        assert row["shared_bytes"] >= 0, row
        # The pixel shuffle kernels have no tl.dot: Hopper MMA appearing there would be a parsing bug.
        if row["kernel"].startswith("_pixel_shuffle"):
            assert row["wgmma"] is False, row
        if row["config"] != "native":  # every Triton kernel reads and writes global memory
            assert 0 <= row["ld_global_128"] <= row["ld_global"] and row["ld_global"] > 0, row
            assert 0 <= row["st_global_128"] <= row["st_global"] and row["st_global"] > 0, row


@pytest.fixture(scope="module")
def kernel_report():
    """tools/kernel_report.py as a module (tools/ is not a package)."""
    sys.path.insert(0, str(REPORT.parent))
    try:
        import kernel_report
    finally:
        sys.path.remove(str(REPORT.parent))
    return kernel_report


def test_collect_refuses_interpreter_mode(kernel_report, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernel_report.collect()


def test_ptxas_output_parsing(kernel_report):
    log = (
        "ptxas info    : Compiling entry function 'other_kernel' for 'sm_90a'\n"
        "ptxas info    : Function properties for other_kernel\n"
        "    8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 0 barriers\n"
        "ptxas info    : Compiling entry function 'my_kernel' for 'sm_90a'\n"
        "ptxas info    : Function properties for my_kernel\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers\n"
    )
    assert kernel_report._parse_ptxas(log, "my_kernel") == {"registers": 40, "spill_stores": 0, "spill_loads": 0}
    assert kernel_report._parse_ptxas(log, "other_kernel") == {"registers": 255, "spill_stores": 8, "spill_loads": 4}
    with pytest.raises(RuntimeError, match="no complete usage"):
        kernel_report._parse_ptxas(log, "absent_kernel")


def test_cuobjdump_resource_usage_parsing(kernel_report):
    """The fat binary of the native library: one section per arch; sm_86 and others are ignored."""
    dump = (
        "Fatbin elf code:\n================\narch = sm_80\ncode version = [1,7]\n\n"
        "Resource usage:\n Common:\n  GLOBAL:0\n Function _ZN6vlmops6kernelEv:\n"
        "  REG:30 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0\n"
        "Fatbin elf code:\n================\narch = sm_86\n\n"
        "Resource usage:\n Function _ZN6vlmops6kernelEv:\n  REG:31 STACK:0 SHARED:0 LOCAL:0\n"
        "Fatbin elf code:\n================\narch = sm_90a\n\n"
        "Resource usage:\n Function _ZN6vlmops6kernelEv:\n  REG:40 STACK:16 SHARED:2048 LOCAL:0\n"
    )
    rows = kernel_report._parse_resource_usage(dump)
    assert [(r["arch"], r["registers"], r["spill_stores"], r["shared_bytes"]) for r in rows] == [
        ("sm_80", 30, 0, 0),
        ("sm_90a", 40, 16, 2048),
    ]


def test_sass_wgmma_detection(kernel_report):
    sass = (
        "\t\tFunction : _Z4gemmv\n        /*0100*/  HGMMA.64x128x16.F32.BF16 gdesc[UR4], RZ, !UPT ;\n"
        "\t\tFunction : _Z4copyv\n        /*0100*/  LDG.E.128 R4, desc[UR4][R2.64] ;\n"
    )
    assert kernel_report._functions_using_wgmma(sass) == {"_Z4gemmv"}


def test_ptx_global_access_widths(kernel_report):
    ptx = (
        "\t@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];\n"
        "\tld.global.L1::evict_last.v2.b64 { %rd5, %rd6 }, [ %rd2 + 0 ];\n"
        "\t@!%p2 ld.global.b16 { %rs1 }, [ %rd3 + 0 ];\n"
        "\tld.global.v2.b32 { %r5, %r6 }, [ %rd4 + 0 ];\n"
        "\tcp.async.cg.shared.global [ %r7 + 0 ], [ %rd5 + 0 ], 0x10, %r8;\n"
        "\tcp.async.ca.shared.global [ %r9 + 0 ], [ %rd6 + 0 ], 4, %r10;\n"
        "\t@%p3 st.global.v4.b32 [ %rd7 + 0 ], { %r1, %r2, %r3, %r4 };\n"
        "\tst.global.b32 [ %rd8 + 0 ], %r5;\n"
        "\tld.shared.v4.b32 { %r1, %r2, %r3, %r4 }, [ %r11 + 0 ];\n"
    )
    assert kernel_report._ptx_global_accesses(ptx) == {
        "ld_global": 6,
        "ld_global_128": 3,
        "st_global": 2,
        "st_global_128": 1,
    }


def test_sass_global_access_widths(kernel_report):
    sass = (
        "\t\tFunction : _Z4copyv\n        /*0100*/  LDG.E.128 R4, desc[UR4][R2.64] ;\n"
        "        /*0110*/  LDG.E.U16 R8, desc[UR4][R2.64] ;\n        /*0120*/  STG.E.128 desc[UR4][R6.64], R4 ;\n"
        "\t\tFunction : _Z4normv\n        /*0100*/  LDG.E R4, desc[UR4][R2.64] ;\n"
        "        /*0110*/  STG.E.64 desc[UR4][R6.64], R4 ;\n"
    )
    assert kernel_report._sass_global_accesses(sass) == {
        "_Z4copyv": {"ld_global": 2, "ld_global_128": 1, "st_global": 1, "st_global_128": 1},
        "_Z4normv": {"ld_global": 1, "ld_global_128": 0, "st_global": 1, "st_global_128": 0},
    }
