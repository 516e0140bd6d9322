"""Times the Triton varlen attention forward on a GPU over tile configurations, next to PyTorch's
SDPA per image (transformers' loop, as benchmarks/bench_varlen_attention.py runs it), to choose
`HOPPER_FWD_CONFIGS` / `_block_sizes` in vlmops/triton/varlen_attention.py; then the backward's two
dQ variants (the deterministic dQ pass and the atomic dQ inside the dK/dV kernel).

    python tools/tune_attention.py [SHAPE ...]     # SHAPE: names of SHAPES (default: all)

Prints one line per (shape, configuration) as soon as it is timed (median of triton.testing.do_bench,
bf16), so a run cut short still reports what it measured. A configuration that fails to compile or
launch (e.g. too much shared memory) prints its error and the sweep goes on. "default" is the
launcher's own choice on this GPU.
"""

import functools
import sys
from pathlib import Path

import torch
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_varlen_attention import _transformers_sdpa_loop  # noqa: E402
from vlmops.triton import varlen_attention as triton_attention  # noqa: E402

# (segment lengths, heads, head dim): the benchmark's shapes at full size.
SHAPES = {
    "qwen2.5-vl-4img": ([1024, 2048, 3072, 4096], 16, 80),
    "qwen2.5-vl-window": ([64] * 256, 16, 80),
    "internvit-6b": ([1025] * 8, 25, 128),
    "siglip-so400m": ([729] * 8, 16, 72),
    "clip-vit-large-hd64": ([1024] * 4, 16, 64),
}
# (BLOCK_M, BLOCK_N, num_warps, num_stages, tma); None keeps the launcher's choice (stages: Triton's
# default; tma: TMA descriptors on sm_90+). The Hopper candidates are 128-row tiles of 8 warps over
# 64-128 keys, 2-3 stages, through TMA; then the pointer path and the Ampere tiles.
CONFIGS = [
    None,
    (128, 64, 8, 2, True),
    (128, 64, 8, 3, True),
    (128, 128, 8, 2, True),
    (128, 128, 8, 3, True),
    (128, 32, 8, 3, True),
    (64, 64, 4, 3, True),
    (128, 64, 8, 3, False),
    (128, 64, 8, None, False),
]
# Shapes whose backward compares the deterministic dQ pass with the atomic dQ.
BACKWARD_SHAPES = ("qwen2.5-vl-4img", "qwen2.5-vl-window")


def main() -> int:
    if not torch.cuda.is_available():
        print("tools/tune_attention.py needs a CUDA device", file=sys.stderr)
        return 2
    gen = torch.Generator(device="cuda").manual_seed(0)
    names = sys.argv[1:] or list(SHAPES)
    for name in names:
        lengths, H, D = SHAPES[name]
        N = sum(lengths)
        q, k, v = (torch.randn(N, H, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
        cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
        flops = 4 * sum(n * n for n in lengths) * H * D
        sdpa_loop = _transformers_sdpa_loop(lengths, D**-0.5)
        base = do_bench(functools.partial(sdpa_loop, q, k, v), warmup=25, rep=100, return_mode="median")
        print(f"{name:18} sdpa-loop            {base * 1e3:8.1f} us {flops / base / 1e9:7.1f} TFLOP/s", flush=True)
        for config in CONFIGS:
            bm, bn, warps, stages, tma = config or (None,) * 5
            label = "default" if config is None else f"{bm}x{bn} w{warps} s{stages or '-'} {'tma' if tma else 'ptr'}"
            try:
                ms = do_bench(
                    functools.partial(
                        triton_attention.varlen_attention,
                        q,
                        k,
                        v,
                        cu,
                        cu,
                        max(lengths),  # the bound transformers passes (window layers: 64)
                        max(lengths),
                        block_m=bm,
                        block_n=bn,
                        num_warps=warps,
                        num_stages=stages,
                        tma=tma,
                    ),
                    warmup=25,
                    rep=100,
                    return_mode="median",
                )
            except Exception as error:  # a configuration the GPU cannot run: report it, keep sweeping
                print(f"{name:18} {label:24} failed: {type(error).__name__}: {str(error)[:120]}", flush=True)
                continue
            print(
                f"{name:18} {label:24} {ms * 1e3:8.1f} us {flops / ms / 1e9:7.1f} TFLOP/s  {base / ms:5.2f}x sdpa-loop",
                flush=True,
            )
        if name in BACKWARD_SHAPES:
            out, lse = triton_attention.varlen_attention(q, k, v, cu, cu)
            grad_out = torch.randn_like(out)
            for atomic in (False, True):
                ms = do_bench(
                    functools.partial(
                        triton_attention.varlen_attention_backward,
                        grad_out,
                        q,
                        k,
                        v,
                        out,
                        lse,
                        cu,
                        cu,
                        atomic_dq=atomic,
                    ),
                    warmup=25,
                    rep=100,
                    return_mode="median",
                )
                label = "bwd atomic-dq" if atomic else "bwd dq-pass"
                print(f"{name:18} {label:24} {ms * 1e3:8.1f} us {2.5 * flops / ms / 1e9:7.1f} TFLOP/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
