"""`import vlmops` works on a checkout whose native library was not built (one RuntimeWarning at import,
every op runs its pure-PyTorch reference) and without triton (an optional dependency).

Each environment is a fresh interpreter that imports vlmops, then calls every op of OPS and compares it
with plain PyTorch:
- "unbuilt": a copy of the vlmops package without its compiled library;
- "no_triton": this checkout, with a meta-path finder that makes triton look not installed (``import
  triton`` raises ModuleNotFoundError, ``importlib.util.find_spec("triton")`` is None);
- "unbuilt_no_triton": both;
- "broken_library": a copy whose compiled library cannot be loaded (as one built against another torch).
"""

import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The tensors and helpers OPS use (CPU, float32).
INPUTS = """
x, w = torch.randn(3, 16), torch.randn(16)
gate, up = torch.randn(3, 8), torch.randn(3, 8)
grid, lw, lb = torch.randn(2, 4, 4, 8), torch.randn(32), torch.randn(32)
shuffled = grid.reshape(2, 2, 2, 2, 2, 8).permute(0, 1, 3, 2, 4, 5).reshape(2, 2, 2, 32)
q, k, v, cu = torch.randn(8, 2, 32), torch.randn(8, 2, 32), torch.randn(8, 2, 32), torch.tensor([0, 3, 8]).int()
qb, kb, vb = torch.randn(2, 3, 2, 32), torch.randn(2, 5, 2, 32), torch.randn(2, 5, 2, 32)
start, end, alpha = torch.zeros(2, 3).int(), torch.full((2, 3), 5).int(), torch.tensor(0.7)
rows, conv, bias = torch.randn(6, 3 * 4 * 4), torch.randn(10, 3, 4, 4), torch.randn(10)
positions, axis, inv_freq = torch.arange(8).reshape(8, 1), torch.zeros(16, dtype=torch.int64), torch.rand(16)
angle = positions * inv_freq


def attend(q, k, v):  # softmax attention of [..., L, H, D] tensors
    heads_first = [t.transpose(-2, -3) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*heads_first).transpose(-2, -3)


def rotate(t, angle):  # rotate-half RoPE of t [N, H, 2P] by angle [N, P]
    cos, sin = torch.cat((angle.cos(), angle.cos()), -1)[:, None], torch.cat((angle.sin(), angle.sin()), -1)[:, None]
    t1, t2 = t.chunk(2, -1)
    return t * cos + torch.cat((-t2, t1), -1) * sin
"""

# One line per op: (the call of the public op, the same computation in plain PyTorch).
OPS = [
    ("vlmops.rms_norm(x, w)", "x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w"),
    ("vlmops.silu_mul(gate, up)", "F.silu(gate) * up"),
    ("vlmops.pixel_shuffle(grid, 2)", "shuffled"),
    ("vlmops.pixel_shuffle_layer_norm(grid, 2, lw, lb)", "F.layer_norm(shuffled, (32,), lw, lb)"),
    ("vlmops.varlen_attention(q, k, v, cu)", "torch.cat([attend(q[:3], k[:3], v[:3]), attend(q[3:], k[3:], v[3:])])"),
    ("vlmops.gated_cross_attention(qb, kb, vb, start, end, alpha)", "torch.tanh(alpha) * attend(qb, kb, vb)"),
    ("vlmops.patch_embed(rows, conv, bias)", "F.linear(rows, conv.flatten(1), bias)"),
    ("vlmops.apply_rope(q, k, positions, axis, inv_freq, True)", "(rotate(q, angle), rotate(k, angle))"),
]


def _name(call: str) -> str:
    return re.match(r"vlmops\.(\w+)\(", call).group(1)


BLOCK_TRITON = """
import importlib.machinery, sys


class WithoutTriton(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            return None
        return super().find_spec(name, path, target)


sys.meta_path = [WithoutTriton if finder is importlib.machinery.PathFinder else finder for finder in sys.meta_path]
"""

# An editable install of this checkout (`make build`) adds a finder that would find the checkout's library
# for the copy's vlmops._C: the copy must be the only vlmops.
ONLY_THE_COPY = """
import sys

sys.meta_path = [finder for finder in sys.meta_path if not getattr(finder, "__module__", "").startswith("__editable__")]
"""

# Run with the JSON of {"inputs": INPUTS, "ops": OPS} as its argument; prints one JSON report.
PROBE = """
import importlib.util, json, sys, warnings

with warnings.catch_warnings(record=True) as at_import:
    warnings.simplefilter("always")
    import vlmops
import torch
import torch.nn.functional as F

spec = json.loads(sys.argv[1])
torch.manual_seed(0)
exec(spec["inputs"])
ops = {}
with warnings.catch_warnings(record=True) as at_call:
    warnings.simplefilter("always")
    for call, expected in spec["ops"]:
        try:
            torch.testing.assert_close(eval(call), eval(expected), atol=1e-4, rtol=1e-4)
            ops[call] = "ok"
        except Exception as error:
            ops[call] = f"{type(error).__name__}: {error}"
print(json.dumps({
    "file": vlmops.__file__,
    "native": vlmops.build_info()["native"],
    "warnings_at_import": [f"{w.category.__name__}: {w.message}" for w in at_import],
    "warnings_at_call": [str(w.message) for w in at_call if "vlmops._C" in str(w.message)],
    "triton_imported": "triton" in sys.modules,
    "triton_found": importlib.util.find_spec("triton") is not None,
    "ops": ops,
}))
"""

MODES = ("unbuilt", "no_triton", "unbuilt_no_triton", "broken_library")
COPIES = ("unbuilt", "unbuilt_no_triton", "broken_library")  # the modes that import a copy of the package
BUILT = any((ROOT / "vlmops").glob("_C*.so"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """report(mode): what the probe saw in a fresh interpreter set up as ``mode`` says (run once per mode)."""
    reports = {}

    def run(mode: str) -> dict:
        if mode in reports:
            return reports[mode]
        cwd = ROOT
        if mode in COPIES:
            cwd = tmp_path_factory.mktemp(mode)
            shutil.copytree(ROOT / "vlmops", cwd / "vlmops", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        if mode == "broken_library":
            (cwd / "vlmops" / f"_C{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"not a shared object")
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TRITON_INTERPRET")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        code = (ONLY_THE_COPY if mode in COPIES else "") + (BLOCK_TRITON if "no_triton" in mode else "")
        code += PROBE
        argument = json.dumps({"inputs": INPUTS, "ops": OPS})
        result = subprocess.run(
            [sys.executable, "-c", code, argument], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
        reports[mode] = json.loads(result.stdout.strip().splitlines()[-1])
        assert Path(reports[mode]["file"]).is_relative_to(cwd), (reports[mode]["file"], cwd)
        return reports[mode]

    return run


@pytest.mark.parametrize("mode", ["unbuilt", "unbuilt_no_triton"])
def test_an_unbuilt_checkout_warns_once_at_import(report, mode):
    seen = report(mode)
    assert not seen["native"]
    assert len(seen["warnings_at_import"]) == 1, seen["warnings_at_import"]
    warning = seen["warnings_at_import"][0]
    assert warning.startswith("RuntimeWarning: vlmops: the native library is not built (vlmops._C)"), warning
    assert "pip install --no-build-isolation --no-deps -e ." in warning
    assert seen["warnings_at_call"] == []


def test_a_library_that_fails_to_load_is_named_in_the_warning(report):
    seen = report("broken_library")
    assert not seen["native"]
    assert len(seen["warnings_at_import"]) == 1, seen["warnings_at_import"]
    warning = seen["warnings_at_import"][0]
    assert warning.startswith("RuntimeWarning: vlmops: the native library failed to load ("), warning
    assert "_C" in warning and "pip install --no-build-isolation --no-deps -e ." in warning


@pytest.mark.parametrize("mode", ["no_triton", "unbuilt_no_triton"])
def test_triton_is_optional(report, mode):
    seen = report(mode)
    assert not seen["triton_found"] and not seen["triton_imported"]


@pytest.mark.skipif(not BUILT, reason="the native library is not built")
def test_a_built_checkout_without_triton_runs_the_native_ops_silently(report):
    seen = report("no_triton")
    assert seen["native"]
    assert seen["warnings_at_import"] == []


@pytest.mark.parametrize("call", [call for call, _ in OPS], ids=[_name(call) for call, _ in OPS])
@pytest.mark.parametrize("mode", MODES)
def test_every_op_runs(report, mode, call):
    assert report(mode)["ops"][call] == "ok"


def test_import_leaves_torch_dynamo_unloaded():
    """`import vlmops` stays light: torch._dynamo (about a second to import; torch.nn.attention.varlen
    pulls it in) loads only when a call needs it."""
    code = "import sys, vlmops; print(sorted({'torch._dynamo', 'torch.nn.attention.varlen'} & set(sys.modules)))"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
