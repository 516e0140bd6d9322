"""CUDA-graph tower vs eager on small images (CUDA only): ``vlmops.cuda_graph_tower`` on the patched
Qwen2.5-VL vision tower against the same patched tower run eagerly and the unpatched transformers tower.

On small images a tower forward is launch-bound (a few hundred small kernels); a replay is one launch.
Same seeded random weights for all three (the patched towers are deep copies), bf16, the same pixel
rows; before timing, the graph's output must equal the eager patched tower's.

- `cuda_graph_tower:qwen2.5-vl-1x224:fwd`: one 224x224 image (16x16 = 256 patches), bucket 256 (no
  padding).
- `cuda_graph_tower:qwen2.5-vl-3x112:fwd`: three 112x112 images (3 x 64 = 192 patches) in bucket 256:
  what the padding costs.

Default: depth 8 (hidden 1280, 16 heads, Qwen2.5-VL's widths); --full: depth 32 (Qwen2.5-VL-7B).
On CPU every entry is reported as skipped (a CUDA graph needs a CUDA device).
"""

import copy

import pytest
import torch

import vlmops
from benchmarks.bench_vision_tower import _ideal_bytes, _linear_work, build_towers
from benchmarks.harness import pick

# (depth, hidden, heads, intermediate, out_hidden, fullatt_block_indexes, images, image side in pixels)
SHAPES = {
    "1x224": {
        "default": (8, 1280, 16, 3420, 3584, [3, 7], 1, 224),
        "full": (32, 1280, 16, 3420, 3584, [7, 15, 23, 31], 1, 224),
        "tiny": (2, 64, 2, 128, 64, [1], 1, 56),
    },
    "3x112": {
        "default": (8, 1280, 16, 3420, 3584, [3, 7], 3, 112),
        "full": (32, 1280, 16, 3420, 3584, [7, 15, 23, 31], 3, 112),
        "tiny": (2, 64, 2, 128, 64, [1], 3, 28),
    },
}
BUCKETS = (16, 64, 256)


@pytest.mark.parametrize("impl", ["vlmops-cuda-graph", "vlmops", "transformers"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_cuda_graph_tower(benchmark, request, device, name, impl):
    benchmark.group = f"cuda_graph_tower:qwen2.5-vl-{name}:fwd"
    benchmark.extra_info.update(impl=impl, role="vlmops" if impl == "vlmops-cuda-graph" else "baseline")
    if device != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    tower, patched, rows, grid_thw = build_towers(pick(request, SHAPES[name]), device, torch.bfloat16)
    benchmark.extra_info.update(
        bytes=_ideal_bytes(tower, rows), flops=_linear_work(tower, rows)[0], dtype="bfloat16", tokens=rows.shape[0]
    )
    if impl == "vlmops-cuda-graph":
        runner = vlmops.cuda_graph_tower(copy.deepcopy(patched), buckets=BUCKETS, max_images=4)
        with torch.no_grad():
            expected = patched(rows, grid_thw=grid_thw).pooler_output
            torch.testing.assert_close(runner(rows, grid_thw).pooler_output, expected, rtol=1e-2, atol=1e-2)
        benchmark.extra_info.update(bucket=min(b for b in BUCKETS if b >= rows.shape[0]))

        def forward():
            return runner(rows, grid_thw).pooler_output

    else:
        model = patched if impl == "vlmops" else tower

        def forward():
            with torch.no_grad():
                return model(rows, grid_thw=grid_thw).pooler_output

    benchmark(forward)
