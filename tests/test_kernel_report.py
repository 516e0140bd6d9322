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


def test_every_triton_spec_compiles_for_its_archs(report_rows):
    specs = {(spec.name, spec.config) for spec in kernel_specs()}
    assert specs, "no Triton kernel specs registered"
    compiled = {(row["kernel"], row["config"], row["arch"]) for row in report_rows}
    # A spec compiles for every arch it names: both, or sm_90a alone for a Hopper configuration.
    wanted = {(spec.name, spec.config, arch) for spec in kernel_specs() for arch in spec.archs}
    assert {arch for spec in kernel_specs() for arch in spec.archs} == ARCHS
    assert all(set(spec.archs) in (ARCHS, {"sm_90a"}) for spec in kernel_specs())
    missing = wanted - compiled
    assert not missing, f"not in the report: {sorted(missing)}"


def test_hopper_attention_reads_through_tma_with_wgmma(report_rows):
    """The attention kernels' Hopper configurations move their tiles with the copy engine
    (cp.async.bulk.tensor) and multiply with wgmma, except decode's 16-row tiles (below wgmma's 64
    rows); the pointer-path configurations and every sm_80 compile use no TMA."""
    hopper = [r for r in report_rows if "_attention_" in r["kernel"] or "_xattn_" in r["kernel"]]
    hopper = [r for r in hopper if "hopper" in r["config"]]
    assert {r["arch"] for r in hopper} == {"sm_90a"}
    assert {r["kernel"] for r in hopper} == {
        "_varlen_attention_fwd_kernel",
        "_varlen_attention_bwd_dq_kernel",
        "_varlen_attention_bwd_dkdv_kernel",
        "_gated_xattn_fwd_kernel",
    }
    for row in hopper:
        assert row["tma"] == (not row["config"].endswith("-ptr")), row
        assert row["wgmma"] or ":decode" in row["config"], row
    assert not any(row["tma"] for row in report_rows if row["arch"] == "sm_80")


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
            "tma",
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


# The memory-bound Triton kernels. At contiguous inputs (every spec but NARROWER_BY_DESIGN) their main
# loops move 16 bytes per thread and access; what may stay narrower, per kernel: at most
# (loads, stores) in the PTX, and what they are.
NARROW_ALLOWED = {
    "_rope_kernel": (24, 0, "per pair a thread holds (8): the position gather; cos/sin's slow-path table reads"),
    "_silu_mul_fwd_kernel": (0, 0, ""),
    "_silu_mul_bwd_kernel": (0, 0, ""),
    "_rms_norm_fwd_kernel": (0, 1, "the rows' rstd"),
    "_rms_norm_bwd_kernel": (1, 0, "the rows' rstd"),
    "_pixel_shuffle_copy_kernel": (0, 0, ""),
    "_pixel_shuffle_layer_norm_fwd_kernel": (0, 2, "the row's mean and rstd"),
    "_pixel_shuffle_layer_norm_bwd_dx_kernel": (2, 0, "the row's mean and rstd"),
    "_pixel_shuffle_layer_norm_bwd_dwdb_kernel": (8, 2, "the tile rows' mean and rstd; the column partials, once"),
}
# Specs of inputs whose rows are not all 16-byte aligned: 3420 bf16 output rows are 8-byte aligned.
NARROWER_BY_DESIGN = {"qwen2.5-vl-vision:padded-rows:bfloat16:fwd", "qwen2.5-vl-vision:padded-rows:bfloat16:bwd"}


def test_memory_bound_main_loops_move_16_bytes(report_rows):
    checked = set()
    for row in report_rows:
        if row["kernel"] not in NARROW_ALLOWED or row["config"] in NARROWER_BY_DESIGN:
            continue
        loads, stores, _ = NARROW_ALLOWED[row["kernel"]]
        assert row["ld_global_128"] > 0, row
        assert row["st_global_128"] > 0 or row["st_global"] <= stores, row  # (dW/db stores only its partials)
        assert row["ld_global"] - row["ld_global_128"] <= loads, row
        assert row["st_global"] - row["st_global_128"] <= stores, row
        checked.add(row["kernel"])
    assert checked == set(NARROW_ALLOWED)


def test_native_shuffle_copy_moves_16_bytes(report_rows):
    """The CUDA C++ pixel shuffle copies 16-byte vectors (LDG.128/STG.128 in its uint4 instantiations),
    when the built library has CUDA kernels."""
    native = [r for r in report_rows if r["config"] == "native" and r["kernel"].startswith("shuffle_copy_kernel<uint4")]
    if not any(r["config"] == "native" for r in report_rows):
        pytest.skip("vlmops/_C*.so has no CUDA kernels (a CPU-only build)")
    assert {r["kernel"] for r in native} == {"shuffle_copy_kernel<uint4, false>", "shuffle_copy_kernel<uint4, true>"}
    for row in native:
        assert row["ld_global_128"] >= 1 and row["st_global_128"] >= 1, row


def test_native_rope_moves_16_bytes(report_rows):
    """The CUDA C++ RoPE rotates and copies head rows in 16-byte vectors (its widest instantiation per
    dtype: 8 half/bfloat16, 4 float, 2 double elements); only the position, axis and inv_freq reads of
    the cos/sin step are narrower."""
    if not any(r["config"] == "native" for r in report_rows):
        pytest.skip("vlmops/_C*.so has no CUDA kernels (a CPU-only build)")
    widest = ("c10::BFloat16", 8), ("c10::Half", 8), ("float", 4), ("double", 2)
    wide = [
        r
        for r in report_rows
        if r["config"] == "native"
        and any(r["kernel"].startswith(f"rope_kernel<{t},") and r["kernel"].endswith(f", {v}>") for t, v in widest)
    ]
    # (positions int32/int64) x (rounding, for half and bfloat16 only)
    assert len({r["kernel"] for r in wide}) == 4 + 4 + 2 + 2
    for row in wide:
        assert row["st_global"] == row["st_global_128"] > 0, row
        assert row["ld_global"] - row["ld_global_128"] <= 3, row


# --- the grid table: tools/launch_grids.py ------------------------------------------------------------


@pytest.fixture(scope="module")
def launch_grids():
    sys.path.insert(0, str(REPORT.parent))
    try:
        import launch_grids
    finally:
        sys.path.remove(str(REPORT.parent))
    return launch_grids


@pytest.fixture(scope="module")
def grid_rows(launch_grids):
    return launch_grids.collect()


# Every benchmark entry of the memory-bound ops and the kernels its launches run (both tiers; the
# --full-only entries at full size).
EXPECTED_TRITON = {
    "rope:qwen2-vl-vision (fwd, bwd)": {"_rope_kernel"},
    "rope:qwen2.5-vl-7b-text (fwd, bwd)": {"_rope_kernel"},
    "rms_norm:qwen2.5-vl-vision:fwd": {"_rms_norm_fwd_kernel"},
    "rms_norm:qwen2.5-vl-vision:bwd": {"_rms_norm_bwd_kernel"},
    "silu_mul:qwen2.5-vl-vision:fwd": {"_silu_mul_fwd_kernel"},
    "silu_mul:qwen2.5-vl-vision:bwd": {"_silu_mul_bwd_kernel"},
    "pixel_shuffle:internvl-300m:fwd": {"_pixel_shuffle_copy_kernel"},
    "pixel_shuffle:smolvlm-256m:fwd": {"_pixel_shuffle_copy_kernel"},
    "pixel_shuffle_layer_norm:internvl-300m:fwd": {"_pixel_shuffle_layer_norm_fwd_kernel"},
    "pixel_shuffle_layer_norm:internvl-300m:bwd": {
        "_pixel_shuffle_layer_norm_bwd_dx_kernel",
        "_pixel_shuffle_layer_norm_bwd_dwdb_kernel",
    },
    "pixel_shuffle_layer_norm:internvit-6b:fwd": {"_pixel_shuffle_layer_norm_fwd_kernel"},
    "pixel_shuffle_layer_norm:internvit-6b:bwd": {
        "_pixel_shuffle_layer_norm_bwd_dx_kernel",
        "_pixel_shuffle_layer_norm_bwd_dwdb_kernel",
    },
    "patch_embed:siglip-so400m-uint8:fwd": {"_patch_embed_fwd_kernel"},
}


def test_grid_table_covers_every_memory_bound_entry(launch_grids, grid_rows):
    for row in grid_rows:
        assert set(row) == set(launch_grids.COLUMNS), row
        assert row["programs"] == row["grid"][0] * row["grid"][1] * row["grid"][2] > 0, row
        assert row["waves"] == round(row["programs"] / row["sms"], 2), row
    triton = {}
    for row in grid_rows:
        if row["backend"] == "triton" and row["tier"] == "full":
            triton.setdefault(row["entry"], set()).add(row["kernel"])
    assert triton == EXPECTED_TRITON


def test_grid_bar_at_full_sizes(grid_rows):
    """The GPU benchmark sizes (--full): every memory-bound kernel's grid is at least 2 waves of the
    SMs, or sized by the SM count (persistent)."""
    for row in grid_rows:
        if row["tier"] == "full":
            assert row["waves"] >= 2 or row["sm_sized"], row


def test_grid_capture_sees_the_launch(launch_grids):
    """The recorder reports the launcher's own grid: rope's head groups appear below 4 waves of blocks
    and scale with the SM count; the native geometry is the launchers' (when the library is built)."""
    from vlmops import _native

    case = next(c for c in launch_grids._rope_cases("default") if "text" in c.entry)
    ((kernel, grid, vector),) = launch_grids.triton_launches(case)
    S, D = 2048, 128  # bench_rope.TEXT_SHAPES["default"]: 2048 tokens of 28 + 4 heads of 128
    blocks = S * (D // 2) // 1024
    assert kernel == "_rope_kernel" and grid[0] == blocks and vector == 16
    groups = grid[1]
    assert groups > 1 and blocks * groups >= 4 * launch_grids.SMS
    ((_, grid_small, _),) = launch_grids.triton_launches(case, 8)
    assert grid_small[1] < groups
    if not _native.available():
        pytest.skip("the native library is not built")
    g = _native._C.launch_geometry
    assert g.rope(16384, 40, 4) == {"grid": (16384, 1), "threads": 128, "shared_bytes": 320, "vector_elements": 1}
    contiguous = g.pixel_shuffle_copy(
        4, 1024, [1024 * 1024, 32 * 1024, 1024, 1], [256 * 4096, 16 * 4096, 4096, 1], 0, 0, 8 * 32 * 32 * 1024
    )
    assert contiguous["vector_elements"] == 4 and contiguous["grid"] == (8 * 32 * 32 * 1024 // 4 // 256, 1)
    assert g.pixel_shuffle_copy(2, 1024, [1, 1, 1, 2], [1, 1, 1, 1], 0, 0, 4096)["vector_elements"] == 1
    assert (
        g.pixel_shuffle_copy(2, 1024, [2048, 1024, 1024, 1], [4096, 4096, 4096, 1], 4, 0, 4096)["vector_elements"] == 2
    )
    assert (
        g.pixel_shuffle_copy(2, 1020, [2040, 1020, 1020, 1], [4080, 4080, 4080, 1], 0, 0, 4080)["vector_elements"] == 4
    )
    assert g.pixel_shuffle_layer_norm_affine(2048, 4096) == {
        "grid": (16, 32),
        "threads": 256,
        "shared_bytes": 0,
        "vector_elements": 1,
    }
