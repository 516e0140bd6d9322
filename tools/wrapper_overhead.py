"""Per-call cost of the Python wrappers of the memory-bound ops on CPU, for tiny inputs.

For each op, ``vlmops.<op>`` (the public wrapper) against the ``torch.ops.vlmops.<op>`` call it
makes, and ``torch.ops.aten.alias`` (the dispatcher's cost for an op that does nothing): what a
wrapper adds is the first minus the second. Calls are timed in interleaved rounds (the machine may be
shared) and each figure is the minimum over the rounds, in microseconds per call, on one thread.

    python tools/wrapper_overhead.py [--rounds N]
"""

import argparse
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def calls():
    """{op: (wrapper call, torch.ops call)} on tiny CPU inputs."""
    import torch

    import vlmops

    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    tables = vlmops.rope_1d_tables(vlmops.rope_inv_freq(8, 100.0), True)
    q, k, positions = randn(4, 2, 8), randn(4, 1, 8), torch.arange(4)[:, None]
    q4, k4, positions3 = q[None], k[None], positions[None]  # the op's [B, S, H, D] and [B, S, A]
    x, weight = randn(4, 32), randn(32)
    gate, up = randn(4, 40), randn(4, 40)
    grid, w, b = randn(1, 4, 4, 8), randn(32), randn(32)
    rows, conv = randn(2, 12), randn(8, 3, 2, 2)
    ops = torch.ops.vlmops
    return {
        "rope (layout nhd)": (
            lambda: vlmops.apply_rope(q, k, positions, *tables),
            lambda: ops.rope(q, k, positions, tables.axis, tables.inv_freq, True),
        ),
        "rope (layout bshd)": (
            lambda: vlmops.apply_rope(q4, k4, positions3, *tables, layout="bshd"),
            lambda: ops.rope(q4, k4, positions3, tables.axis, tables.inv_freq, True),
        ),
        "rms_norm": (lambda: vlmops.rms_norm(x, weight, 1e-6), lambda: ops.rms_norm(x, weight, 1e-6)),
        "silu_mul": (lambda: vlmops.silu_mul(gate, up), lambda: ops.silu_mul(gate, up)),
        "pixel_shuffle": (lambda: vlmops.pixel_shuffle(grid, 2), lambda: ops.pixel_shuffle(grid, 2)),
        "pixel_shuffle_layer_norm": (
            lambda: vlmops.pixel_shuffle_layer_norm(grid, 2, w, b),
            lambda: ops.pixel_shuffle_layer_norm(grid, 2, w, b, 1e-5),
        ),
        "patch_embed": (
            lambda: vlmops.patch_embed(rows, conv),
            lambda: ops.patch_embed(rows, conv, None, None, None, None, None, None),
        ),
    }


def measure(rounds: int = 15, number: int = 2000) -> dict:
    """{op: (wrapper us, torch.ops us)} and the no-op dispatch's us under the key "aten.alias"."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pairs = calls()
        noop = torch.zeros(4)
        best = {name: [float("inf"), float("inf")] for name in pairs}
        best_noop = float("inf")
        for wrapper, op in pairs.values():  # warm up
            wrapper(), op()
        for _ in range(rounds):
            for name, functions in pairs.items():
                for i, function in enumerate(functions):
                    best[name][i] = min(best[name][i], timeit.timeit(function, number=number) / number * 1e6)
            noop_time = timeit.timeit(lambda: torch.ops.aten.alias(noop), number=number) / number * 1e6
            best_noop = min(best_noop, noop_time)
    finally:
        torch.set_num_threads(threads)
    return {**{name: tuple(times) for name, times in best.items()}, "aten.alias": best_noop}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    times = measure(args.rounds)
    print(f"torch.ops.aten.alias (dispatch of a no-op): {times.pop('aten.alias'):.2f} us")
    print(f"{'op':28s} {'vlmops.<op>':>12s} {'torch.ops':>10s} {'wrapper adds':>13s}")
    for name, (wrapper, op) in times.items():
        print(f"{name:28s} {wrapper:12.2f} {op:10.2f} {wrapper - op:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
