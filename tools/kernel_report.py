"""Static GPU kernel report: registers, spills and shared memory of every vlmops kernel, without a GPU.

Each Triton kernel spec of ``vlmops.triton.kernel_specs()`` is compiled ahead of time for sm_80 and
sm_90a; the triton wheel's ``ptxas -v`` on the PTX gives registers and spill stores/loads (the
cubin Triton builds is assembled from the same PTX), the compiled metadata gives shared memory, and
the sm_90a PTX is searched for ``wgmma`` (Hopper tensor-core MMA) and for ``cp.async.bulk.tensor``
(``tma``: tiles moved by the Hopper copy engine through tensor descriptors), and its global memory
instructions are counted by width: ``ld_global``/``st_global`` (all of them, ``cp.async`` copies from global
included) and ``ld_global_128``/``st_global_128`` (those moving 16 bytes per thread: ``.v4.b32``,
``.v2.b64``, ``.v8.b16``, 16-byte ``cp.async``), the access width a memory-bound loop needs to reach
bandwidth. When the built native library
``vlmops/_C*.so`` holds CUDA cubins, ``cuobjdump --dump-resource-usage`` lists its kernels as well
(config "native"; spills read as the stack frame plus local memory, wgmma as HGMMA and the access
widths as LDG/STG ``.128`` in the sm_90a SASS).

A second table gives each memory-bound kernel's grid at the benchmark shapes, in waves of 132 SMs
(tools/launch_grids.py: the Triton launchers run on fake CUDA tensors, the CUDA C++ grids come from
the functions their launchers call).

    python tools/kernel_report.py [--json PATH]

Must run without TRITON_INTERPRET (the interpreter replaces compilation); it refuses otherwise.
``collect()`` returns the rows as dicts for the benchmark harness, ``launch_grids()`` the grid rows.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (arch label, compute capability, ptxas --gpu-name)
ARCHS = (("sm_80", 80, "sm_80"), ("sm_90a", 90, "sm_90a"))
COLUMNS = (
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
)
# Bits of the PTX types a global access can move.
_PTX_TYPE_BITS = {"8": 8, "16": 16, "32": 32, "64": 64, "128": 128}
_PTX_ACCESS = re.compile(r"^\s*(?:@!?%p\d+\s+)?(ld|st)\.global((?:\.[\w:]+)*)\s")
_PTX_CP_ASYNC = re.compile(r"^\s*(?:@!?%p\d+\s+)?cp\.async\.\w+\.shared\.global[^,]*,[^,]*,\s*(0x[0-9a-fA-F]+|\d+)")


def _nvidia_bin(tool: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool)


def _ptxas_usage(ptx: str, gpu_name: str, kernel_name: str) -> dict:
    """Registers and spill bytes ptxas reports for `kernel_name` in `ptx`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        result = subprocess.run(
            # The flags Triton's own ptxas call uses (triton/backends/nvidia/compiler.py: make_cubin),
            # so the numbers are those of the cubin Triton loads.
            [
                _nvidia_bin("ptxas"),
                "-lineinfo",
                "-v",
                "--regAllocOptLevel=2",
                f"--gpu-name={gpu_name}",
                str(path),
                "-o",
                os.devnull,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return _parse_ptxas(result.stderr + result.stdout, kernel_name)


def _parse_ptxas(text: str, kernel_name: str) -> dict:
    """The 'Used N registers' and 'N bytes spill stores, M bytes spill loads' lines of one function."""
    usage, current = {}, None
    for line in text.splitlines():
        name = re.search(r"Compiling entry function '([^']+)'", line) or re.search(
            r"Function properties for (\S+)", line
        )
        if name:
            current = name.group(1)
        if current != kernel_name:
            continue
        spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spills:
            usage["spill_stores"], usage["spill_loads"] = int(spills.group(1)), int(spills.group(2))
        registers = re.search(r"Used (\d+) registers", line)
        if registers:
            usage["registers"] = int(registers.group(1))
    if set(usage) != {"registers", "spill_stores", "spill_loads"}:
        raise RuntimeError(f"ptxas -v output has no complete usage for {kernel_name}:\n{text}")
    return usage


def _ptx_global_accesses(ptx: str) -> dict:
    """Global loads and stores of a kernel's PTX, all and 128-bit (see the module docstring)."""
    counts = {"ld_global": 0, "ld_global_128": 0, "st_global": 0, "st_global_128": 0}
    for line in ptx.splitlines():
        access = _PTX_ACCESS.match(line)
        if access:
            kind, suffixes = access.group(1), access.group(2).split(".")
            vector = next((int(part[1:]) for part in suffixes if re.fullmatch(r"v\d+", part)), 1)
            bits = next((_PTX_TYPE_BITS[part[1:]] for part in suffixes if re.fullmatch(r"[bfsu]\d+", part)), 0)
            counts[f"{kind}_global"] += 1
            counts[f"{kind}_global_128"] += vector * bits == 128
            continue
        copy = _PTX_CP_ASYNC.match(line)
        if copy:
            counts["ld_global"] += 1
            counts["ld_global_128"] += int(copy.group(1), 0) == 16
    return counts


def _sass_global_accesses(sass: str) -> dict:
    """Per mangled function of sm_90a SASS: LDG/STG instructions, all and 128-bit."""
    found, name = {}, None
    for line in sass.splitlines():
        function = re.search(r"Function : (\S+)", line)
        if function:
            name = function.group(1)
            found[name] = {"ld_global": 0, "ld_global_128": 0, "st_global": 0, "st_global_128": 0}
            continue
        access = re.search(r"\b(LDG|STG)((?:\.[\w:]+)*)\s", line)
        if name and access:
            kind = "ld" if access.group(1) == "LDG" else "st"
            found[name][f"{kind}_global"] += 1
            found[name][f"{kind}_global_128"] += "128" in access.group(2).split(".")
    return found


def triton_rows(shard: tuple = (0, 1)) -> list:
    """Rows of the (spec, arch) compile jobs whose index is shard[0] modulo shard[1], in job order."""
    import triton
    from triton.backends.compiler import GPUTarget

    from vlmops.triton import kernel_specs

    rows = []
    # A spec names the archs its configuration is for (a Hopper one compiles for sm_90a only).
    jobs = [(spec, arch) for spec in kernel_specs() for arch in ARCHS if arch[0] in spec.archs]
    for job, (spec, (arch, capability, gpu_name)) in enumerate(jobs):
        if job % shard[1] != shard[0]:
            continue
        source = triton.compiler.ASTSource(
            fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs
        )
        options = {"num_warps": spec.num_warps}
        if spec.num_stages is not None:
            options["num_stages"] = spec.num_stages
        compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)
        ptx = compiled.asm["ptx"]
        rows.append(
            {
                "job": job,
                "kernel": spec.name,
                "config": spec.config,
                "arch": arch,
                **_ptxas_usage(ptx, gpu_name, compiled.metadata.name),
                "shared_bytes": int(compiled.metadata.shared),
                "wgmma": capability >= 90 and "wgmma" in ptx,
                "tma": "cp.async.bulk.tensor" in ptx,
                **_ptx_global_accesses(ptx),
            }
        )
    return rows


def triton_rows_parallel() -> list:
    """triton_rows() split over one process per CPU (each compile is a single-threaded Python pass plus
    ptxas; with a cold Triton cache, compiling serially takes minutes), merged back into job order."""
    workers = os.cpu_count() or 1
    rows = triton_rows() if workers == 1 else _triton_rows_in_processes(workers)
    return [{k: v for k, v in row.items() if k != "job"} for row in sorted(rows, key=lambda row: row["job"])]


def _triton_rows_in_processes(workers: int) -> list:
    """triton_rows() of each shard, each in a process running this script with --triton-shard."""
    with tempfile.TemporaryDirectory() as tmp:
        outputs = [Path(tmp) / f"shard{index}.json" for index in range(workers)]
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--triton-shard",
                    f"{index}/{workers}",
                    "--json",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index, output in enumerate(outputs)
        ]
        for process in processes:
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"kernel_report: a compile shard failed:\n{stderr}")
        return [row for output in outputs for row in json.loads(output.read_text())]


def native_rows() -> list:
    """CUDA C++ kernels of the built vlmops/_C*.so, per cubin arch; empty when it has none."""
    libraries = sorted((ROOT / "vlmops").glob("_C*.so"))
    if not libraries:
        return []
    result = subprocess.run(
        [_nvidia_bin("cuobjdump"), "--dump-resource-usage", str(libraries[0])], capture_output=True, text=True
    )
    if result.returncode != 0:  # cuobjdump fails on a library without any device code (a CPU-only build)
        return []
    sass = subprocess.run(
        [_nvidia_bin("cuobjdump"), "-sass", "-arch", "sm_90a", str(libraries[0])], capture_output=True, text=True
    )
    hopper_mma = _functions_using_wgmma(sass.stdout) if sass.returncode == 0 else set()
    # Access widths come from the sm_90a SASS, the only one dumped; the sm_80 rows repeat them.
    accesses = _sass_global_accesses(sass.stdout) if sass.returncode == 0 else {}
    unknown = {"ld_global": None, "ld_global_128": None, "st_global": None, "st_global_128": None}
    return [
        {
            **row,
            "kernel": _demangle(row["kernel"]),
            "wgmma": row["arch"] == "sm_90a" and row["kernel"] in hopper_mma,
            **accesses.get(row["kernel"], unknown),
        }
        for row in _parse_resource_usage(result.stdout)
    ]


def _functions_using_wgmma(sass: str) -> set:
    """Mangled names of the functions whose sm_90a SASS holds HGMMA (what PTX wgmma assembles to)."""
    found, name = set(), None
    for line in sass.splitlines():
        function = re.search(r"Function : (\S+)", line)
        if function:
            name = function.group(1)
        elif name and "HGMMA" in line:
            found.add(name)
    return found


def _parse_resource_usage(text: str) -> list:
    """Rows of `cuobjdump --dump-resource-usage` output for the sm_80 and sm_90a cubins of a fat binary."""
    rows, arch, name = [], None, None
    for line in text.splitlines():
        header = re.search(r"arch = (sm_\w+)", line)
        if header:
            arch = header.group(1)
        function = re.search(r"Function (\S+):", line)
        if function:
            name = function.group(1)
        usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if usage and name and arch in ("sm_80", "sm_90a"):
            # cuobjdump gives no spill counts; a nonzero stack frame or local memory is where spills go.
            local = int(usage.group(2)) + int(usage.group(4))
            rows.append(
                {
                    "kernel": name,
                    "config": "native",
                    "arch": arch,
                    "registers": int(usage.group(1)),
                    "spill_stores": local,
                    "spill_loads": local,
                    "shared_bytes": int(usage.group(3)),
                    "wgmma": False,  # set from the SASS by native_rows
                    "tma": False,  # the CUDA C++ kernels use no tensor maps
                }
            )
    return rows


def _demangle(name: str) -> str:
    """`shuffle_copy_kernel<unsigned long, false>` from its mangled name (namespaces, return type and
    parameter list dropped: the template arguments are what tells instantiations apart)."""
    try:
        full = subprocess.run(["c++filt", name], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return name
    full = full.replace("(anonymous namespace)::", "").removeprefix("void ").split("(", 1)[0]
    return full.removeprefix("vlmops::")


def collect() -> list:
    """One dict per (kernel, config, arch) with the keys of COLUMNS: Triton kernels, then CUDA C++ ones."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError(
            "kernel_report: TRITON_INTERPRET is set; Triton cannot compile in interpreter mode. "
            "Run it in a process without that variable."
        )
    return triton_rows_parallel() + native_rows()


def _grid_module():
    """tools/launch_grids.py (tools/ is not a package; this file may run through runpy)."""
    tools = str(Path(__file__).resolve().parent)
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import launch_grids

    return launch_grids


def launch_grids() -> list:
    """The grid table's rows (tools/launch_grids.py)."""
    return _grid_module().collect()


def format_table(rows: list) -> str:
    cells = [COLUMNS] + [tuple(str(row[c]) for c in COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the kernel rows as a JSON list to PATH")
    parser.add_argument("--grids-json", metavar="PATH", help="also write the grid rows as a JSON list to PATH")
    parser.add_argument(
        "--triton-shard",
        metavar="I/N",
        help="only write (--json) the rows of the Triton compile "
        "jobs I, I+N, ... (how collect() splits the compiles over processes)",
    )
    args = parser.parse_args(argv)
    if args.triton_shard:
        index, count = (int(part) for part in args.triton_shard.split("/"))
        Path(args.json).write_text(json.dumps(triton_rows((index, count))))
        return 0
    rows = collect()
    print(format_table(rows))
    if not any(row["config"] == "native" for row in rows):
        print("\n(no CUDA C++ kernels: vlmops/_C*.so is missing or was built without CUDA cubins)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    from benchmarks.report import grid_table_text

    grids = launch_grids()
    print("\n" + grid_table_text({"grids": grids}))
    if args.grids_json:
        Path(args.grids_json).write_text(json.dumps(grids, indent=2) + "\n")
    spilled = [row for row in rows if row["spill_stores"] or row["spill_loads"]]
    for row in spilled:
        print(f"SPILL: {row['kernel']} [{row['config']}] on {row['arch']}", file=sys.stderr)
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
