"""vlmops benchmarks: every op against the code users run today, as ratios and as a fraction of the machine's roofline.

Run `python -m benchmarks` (`make bench`; `--full` for the models' real sizes, `--device`,
`--only EXPR`, `--out DIR`). One pytest-benchmark module per op family, `bench_<family>.py`:

- each test takes the `benchmark` fixture, sets ``benchmark.group = "<op>:<shape-name>:<fwd|fwd+bwd>"``
  and ``benchmark.extra_info.update(impl=..., role="vlmops" | "baseline", bytes=..., flops=...)``
  (bytes moved and flops of an ideal kernel; optional ``dtype``, else the output's) *before* it
  may call ``pytest.skip(reason)``, so that a skipped entry is reported in its group with its reason;
- it then calls ``benchmark(fn, *args)`` once, with inputs built outside the call; the harness
  (`harness.TimedBenchmark`) picks warm-up and rounds, uses CUDA events and flushes L2 on GPU,
  and measures peak memory in one more untimed call;
- shapes are named after real models; ``benchmarks.harness.pick(request, {"default": ..., "full": ...,
  "tiny": ...})`` returns the one of this run (reduced CPU size, --full, --tiny for the harness
  self-test), and ``@pytest.mark.full_only`` marks extra shapes that only --full runs;
- optional peers (flash-attn, liger-kernel, xformers: `vlmops[bench]`) come through
  ``benchmarks.harness.require_peer(module, device=device)``, which skips with the reason;
- a module may declare ``CPU_TARGETS`` (group glob, baseline, min_speedup, source): the report
  says whether the measured CPU ratios meet them.
"""
