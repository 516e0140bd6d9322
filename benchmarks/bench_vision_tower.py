"""End to end: the Qwen2.5-VL vision tower patched by `vlmops.patch_model` against the same tower unpatched.

Both towers are `Qwen2_5_VisionTransformerPretrainedModel` built from one random config with the
same random weights (the patched one is a deep copy), transformers' sdpa attention as the baseline,
on the same packed pixel rows of several images. Before timing, the patched tower's output must
equal the unpatched one's (fp32 tolerance on CPU).

- `vision_tower:qwen2.5-vl:fwd`: the whole tower forward.
- `vision_tower:qwen2.5-vl-non-linear:fwd`: the same forward with every `nn.Linear` replaced by the
  output it produced on these inputs (recorded once, untimed): what is left is everything except the
  Linear layers (RoPE, attention, norms, activations, patch embedding, window permutes, metadata);
  for the patched tower also one copy of each qkv output, which its in-place RoPE overwrites. The
  patched tower's MLP gate/up layers are `vlmops.nn.RowAlignedLinear` (still `nn.Linear`s, so they
  are replayed too, as the padded-row views they produce): their faster GEMMs count in the whole
  tower only.
- Also recorded on CUDA (untimed, in each whole-tower entry's `extra_info`) and printed on CPU by
  `python -m benchmarks.bench_vision_tower`: a `torch.profiler` split of one forward into "Linear
  layers" (self time of aten::addmm / aten::mm / aten::linear) and everything else. On CPU a forward
  takes ~20 s, so `make bench` leaves that split to the non-linear entries.
- Peak memory is that of the fixture's untimed output-check forward of each tower.

Default size: a reduced config (depth 8, hidden 1280, 16 heads, intermediate 3420, fp32 on
CPU; bf16 on CUDA) with 2 of its 4 images of 448x448 (2048 patches): each image is its own attention
segment and every other op is per token, so the ratios do not depend on the image count, while one
forward on CPU takes half as long, which keeps `make bench` short.
--full: depth 32 (Qwen2.5-VL-7B) and 4 images.
"""

import copy

import pytest
import torch
from torch import nn

import vlmops

# CPU targets of the Qwen2.5-VL tower (fp32): everything except the Linear layers >= 2.5x faster and the whole tower
# >= 1.07x faster than the unpatched tower, measured side by side in one run.
CPU_TARGETS = [
    {
        "group": "vision_tower:qwen2.5-vl:fwd",
        "baseline": "transformers",
        "min_speedup": 1.07,
        "source": "the whole Qwen2.5-VL vision tower >= 1.07x the unpatched tower",
    },
    {
        "group": "vision_tower:qwen2.5-vl-non-linear:fwd",
        "baseline": "transformers",
        "min_speedup": 2.5,
        "source": "everything except the Linear layers >= 2.5x the unpatched tower",
    },
]

# (depth, hidden, heads, intermediate, out_hidden, fullatt_block_indexes, images, image side in pixels)
SHAPES = {
    "default": (8, 1280, 16, 3420, 3584, [3, 7], 2, 448),
    "full": (32, 1280, 16, 3420, 3584, [7, 15, 23, 31], 4, 448),
    "tiny": (2, 64, 2, 128, 64, [1], 2, 112),
}
PATCH, TEMPORAL, MERGE = 14, 2, 2
LINEAR_OPS = ("aten::addmm", "aten::mm", "aten::linear")
# One forward of the default size takes seconds on CPU: fixed rounds instead of the
# harness's >= 10 (medians of 3 rounds, side by side in one run), so that `make bench` stays under
# 15 minutes. The untimed forwards before them (the output check or the Linear recording) are the
# warm-up.
ROUNDS = dict(rounds=3, warmup_rounds=0, iterations=1)


def build_towers(shape, device, dtype):
    """(unpatched tower, patched deep copy, pixel rows, grid_thw) of one seeded random config."""
    from transformers import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    depth, hidden, heads, intermediate, out_hidden, full_layers, images, side = shape
    config = Qwen2_5_VLVisionConfig(
        depth=depth,
        hidden_size=hidden,
        num_heads=heads,
        intermediate_size=intermediate,
        out_hidden_size=out_hidden,
        fullatt_block_indexes=full_layers,
        window_size=112,
        patch_size=PATCH,
        temporal_patch_size=TEMPORAL,
        spatial_merge_size=MERGE,
    )
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(config, attn_implementation="sdpa")
    tower = tower.to(device=device, dtype=dtype).eval()
    patched = copy.deepcopy(tower)
    vlmops.patch_model(patched)
    grid_thw = torch.tensor([[1, side // PATCH, side // PATCH]] * images, device=device)
    rows = torch.randn(int(grid_thw.prod(-1).sum()), 3 * TEMPORAL * PATCH * PATCH, device=device, dtype=dtype)
    return tower, patched, rows, grid_thw


def _linear_work(tower, rows) -> tuple[int, int]:
    """(FLOPs, output bytes) of the Linear layers of one forward (2 * tokens * in * out FLOPs each)."""
    tokens, flops, out_bytes = rows.shape[0], 0, 0
    for name, module in tower.named_modules():
        if isinstance(module, nn.Linear):
            n = tokens // MERGE**2 if name.startswith("merger") else tokens
            flops += 2 * n * module.in_features * module.out_features
            out_bytes += n * module.out_features * rows.element_size()
    return flops, out_bytes


def _ideal_bytes(tower, rows) -> int:
    """A whole forward reads every weight and the pixel rows once and writes the merged tokens."""
    params = sum(p.numel() * p.element_size() for p in tower.parameters())
    out = rows.shape[0] // MERGE**2 * tower.merger.mlp[-1].out_features * rows.element_size()
    return params + rows.numel() * rows.element_size() + out


def record_linears(tower, forward):
    """Runs forward() once, recording each nn.Linear's output: {module name: (output, replay copy?)}.

    Each Linear runs once per forward, so one recorded output per module replays the forward exactly.
    An output the tower then modifies in place (the patched attention rotates q and k inside the qkv
    projection's output) is kept as a snapshot and replayed as a fresh copy each call, standing in for
    the write an out-of-place RoPE would do; the others are replayed as they are (no copy)."""
    recorded, names = {}, {m: n for n, m in tower.named_modules() if isinstance(m, nn.Linear)}
    hooks = [
        m.register_forward_hook(lambda m, args, out: recorded.__setitem__(names[m], (out, out.clone()))) for m in names
    ]
    try:
        out = forward()
    finally:
        for hook in hooks:
            hook.remove()
    return out, {name: (snapshot, not torch.equal(live, snapshot)) for name, (live, snapshot) in recorded.items()}


def replay_linears(tower, recorded) -> None:
    """Replaces the forward of every nn.Linear of tower by its recorded output (see record_linears)."""
    for name, module in tower.named_modules():
        if isinstance(module, nn.Linear):
            out, fresh = recorded[name]
            module.forward = (lambda *args, _out=out: _out.clone()) if fresh else (lambda *args, _out=out: _out)


def profile_split(tower, rows, grid_thw) -> dict:
    """Self time (s) of one forward: Linear layers (LINEAR_OPS) and everything else, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rows.is_cuda else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        tower(rows, grid_thw=grid_thw)
    linear = other = 0.0
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if rows.is_cuda else event.self_cpu_time_total) / 1e6
        if event.key in LINEAR_OPS:
            linear += seconds
        else:
            other += seconds
    return {"linear_s": linear, "other_s": other}


@pytest.fixture(scope="module")
def towers(request, device):
    """Both towers, their inputs, and the peak memory of one untimed forward of each (the output check)."""
    from benchmarks.harness import peak_memory, pick

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tower, patched, rows, grid_thw = build_towers(pick(request, SHAPES), device, dtype)
    peaks, outs = {}, {}
    for impl, model in (("transformers", tower), ("vlmops", patched)):

        def forward(model=model):
            with torch.no_grad():
                return model(rows, grid_thw=grid_thw).pooler_output

        peaks[impl], outs[impl] = peak_memory(forward, device)
    got, expected = outs["vlmops"], outs["transformers"]
    if dtype == torch.bfloat16:
        # Two bf16 towers drift apart over 32 layers: the patched one must be as close to the float32
        # tower as the unpatched one is (within 3x).
        with torch.no_grad():
            exact = copy.deepcopy(tower).float()(rows.float(), grid_thw=grid_thw).pooler_output
        error, baseline_error = ((out.float() - exact).abs().max().item() for out in (got, expected))
        assert error <= 3 * baseline_error, f"patched bf16 tower error {error} vs unpatched {baseline_error}"
    else:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    return {"transformers": tower, "vlmops": patched, "rows": rows, "grid_thw": grid_thw, "peaks": peaks}


def _peak_info(peak_bytes, device) -> dict:
    """The peak memory of the fixture's check forward (the harness does not call the entry again)."""
    from benchmarks.harness import peak_method

    return {"peak_bytes": int(peak_bytes), "peak_method": peak_method(device)}


@pytest.mark.parametrize("impl", ["vlmops", "transformers"])
def test_vision_tower_qwen2_5_vl(benchmark, device, towers, impl):
    tower, rows, grid_thw = towers[impl], towers["rows"], towers["grid_thw"]
    benchmark.group = "vision_tower:qwen2.5-vl:fwd"
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=_ideal_bytes(tower, rows),
        flops=_linear_work(tower, rows)[0],
        dtype=str(rows.dtype).replace("torch.", ""),
        **_peak_info(towers["peaks"][impl], device),
    )
    if device == "cuda":  # a forward costs milliseconds there; on CPU the non-linear entries are the split
        benchmark.extra_info.update({f"profile_{k}": v for k, v in profile_split(tower, rows, grid_thw).items()})

    def forward():
        with torch.no_grad():
            return tower(rows, grid_thw=grid_thw).pooler_output

    benchmark.pedantic(forward, **ROUNDS)


@pytest.mark.parametrize("impl", ["vlmops", "transformers"])
def test_vision_tower_qwen2_5_vl_non_linear(benchmark, device, towers, impl):
    tower = copy.deepcopy(towers[impl])
    rows, grid_thw = towers["rows"], towers["grid_thw"]

    def forward():
        with torch.no_grad():
            return tower(rows, grid_thw=grid_thw).pooler_output

    expected, recorded = record_linears(tower, forward)
    replay_linears(tower, recorded)
    benchmark.group = "vision_tower:qwen2.5-vl-non-linear:fwd"
    # bytes: every Linear output, which the rest of the tower reads at least once.
    benchmark.extra_info.update(
        impl=impl,
        role="vlmops" if impl == "vlmops" else "baseline",
        bytes=_linear_work(tower, rows)[1],
        flops=0,
        dtype=str(rows.dtype).replace("torch.", ""),
    )
    torch.testing.assert_close(forward(), expected)  # the replay reproduces the forward
    benchmark.pedantic(forward, **ROUNDS)


def main():
    """Prints the profiler split of both towers at the default size (CPU, fp32)."""
    tower, patched, rows, grid_thw = build_towers(SHAPES["default"], "cpu", torch.float32)
    splits = {}
    for name, model in (("transformers", tower), ("vlmops", patched)):
        profile_split(model, rows, grid_thw)  # warm-up
        splits[name] = profile_split(model, rows, grid_thw)
        print(
            f"{name:>12}: Linear layers {splits[name]['linear_s']:.3f} s, "
            f"everything else {splits[name]['other_s']:.3f} s"
        )
    base, mine = splits["transformers"], splits["vlmops"]
    print(
        f"everything except Linear: {base['other_s'] / mine['other_s']:.2f}x faster; whole tower (profiled): "
        f"{(base['linear_s'] + base['other_s']) / (mine['linear_s'] + mine['other_s']):.2f}x faster"
    )


if __name__ == "__main__":
    main()
