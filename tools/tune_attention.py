"""Times the Triton varlen attention forward on a GPU over tile configurations, next to PyTorch's
SDPA per image (transformers' loop, as benchmarks/bench_varlen_attention.py runs it), to choose
`_block_sizes` in vlmops/triton/varlen_attention.py.

    python tools/tune_attention.py

Prints one line per (shape, configuration) as soon as it is timed (median of triton.testing.do_bench,
bf16), so a run cut short still reports what it measured. A configuration that fails to compile or
launch (e.g. too much shared memory) prints its error and the sweep goes on.
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
}
# (BLOCK_M, BLOCK_N, num_warps, num_stages); None keeps Triton's default stages.
CONFIGS = [
    (128, 64, 8, None),
    (128, 64, 4, None),
    (64, 64, 4, None),
    (128, 128, 8, None),
    (64, 128, 4, None),
    (128, 32, 4, None),
    (128, 64, 8, 2),
    (128, 64, 4, 4),
]


def main() -> int:
    if not torch.cuda.is_available():
        print("tools/tune_attention.py needs a CUDA device", file=sys.stderr)
        return 2
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, (lengths, H, D) in SHAPES.items():
        N = sum(lengths)
        q, k, v = (torch.randn(N, H, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
        cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
        flops = 4 * sum(n * n for n in lengths) * H * D
        sdpa_loop = _transformers_sdpa_loop(lengths, D**-0.5)
        base = do_bench(functools.partial(sdpa_loop, q, k, v), warmup=25, rep=100, return_mode="median")
        print(f"{name:18} sdpa-loop            {base * 1e3:8.1f} us {flops / base / 1e9:7.1f} TFLOP/s", flush=True)
        for bm, bn, warps, stages in CONFIGS:
            label = f"{bm}x{bn} w{warps} s{stages or '-'}"
            try:
                ms = do_bench(
                    functools.partial(
                        triton_attention.varlen_attention,
                        q,
                        k,
                        v,
                        cu,
                        cu,
                        block_m=bm,
                        block_n=bn,
                        num_warps=warps,
                        num_stages=stages,
                    ),
                    warmup=25,
                    rep=100,
                    return_mode="median",
                )
            except Exception as error:  # a configuration the GPU cannot run: report it, keep sweeping
                print(f"{name:18} {label:20} failed: {type(error).__name__}: {str(error)[:120]}", flush=True)
                continue
            print(
                f"{name:18} {label:20} {ms * 1e3:8.1f} us {flops / ms / 1e9:7.1f} TFLOP/s  {base / ms:5.2f}x sdpa-loop",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
