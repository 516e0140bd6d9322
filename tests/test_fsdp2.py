"""A patched Qwen2.5-VL vision tower trains under FSDP2 (``torch.distributed.fsdp.fully_shard``, every
block sharded, then the root) on two CPU processes (gloo): the losses, the full gradients (the
sharded DTensor gradients all-gathered) and the updated parameters of every step equal those of the
unpatched tower under the same setup, and the vlmops ops ran in the sharded forward and backward."""

import copy
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import RecordVlmopsCalls
from test_patch_qwen import IMAGE_GRID, PATCH_ROW, VIDEO_GRID, config
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

import vlmops

WORLD_SIZE = 2
STEPS = 3
# Each rank trains on its own batch (rank 0 two images, rank 1 a video), so the reduce-scatter of the
# gradients mixes two different batches.
GRIDS = [IMAGE_GRID, VIDEO_GRID]


def tower():
    """The tiny seeded Qwen2.5-VL tower of test_patch_qwen (window blocks 0 and 2, full-frame 1 and 3;
    a gated MLP whose rows the patched GEMMs pad)."""
    _, cfg = config("Qwen2.5-VL")
    torch.manual_seed(0)
    return Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config, attn_implementation="sdpa")


def shard(model):
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def train(model, pixels, grid, target):
    """STEPS steps of SGD with momentum on the mean squared error of the merged features: the loss of
    every step, and the full gradients and parameters after it (gathered from the shards). SGD keeps
    the parameters' difference proportional to the gradients' (Adam's first step, ``g / (|g| + eps)``,
    turns a rounding difference in a near-zero gradient into a whole step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    steps = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = (model(pixels, grid_thw=grid).pooler_output - target).pow(2).mean()
        loss.backward()
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
        optimizer.step()
        params = {name: p.full_tensor() for name, p in model.named_parameters()}
        steps.append(dict(loss=loss.detach(), grads=grads, params=params))
    return steps


def worker(rank, store_path, out_dir):
    torch.set_num_threads(1)  # two processes on a shared CPU
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD_SIZE)
    try:
        reference = tower()
        patched = copy.deepcopy(reference)
        report = vlmops.patch_model(patched)
        generator = torch.Generator().manual_seed(rank + 1)
        grid = GRIDS[rank]
        pixels = torch.randn(int(grid.prod(-1).sum()), PATCH_ROW, generator=generator)
        target = torch.randn(int(grid.prod(-1).sum()) // 4, reference.config.out_hidden_size, generator=generator)
        expected = train(shard(reference), pixels, grid, target)
        with RecordVlmopsCalls() as recorder:
            got = train(shard(patched), pixels, grid, target)
        sharded = all(isinstance(p, DTensor) for p in patched.parameters())
        torch.save(
            dict(
                expected=expected,
                got=got,
                replaced={r.new for r in report.replacements},
                calls=set(recorder.calls),
                sharded=sharded,
            ),
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_patched_tower_trains_like_transformers_under_fsdp2(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    for rank, result in enumerate(ranks):
        assert result["sharded"]
        assert {"vlmops.nn.PackedVisionAttention", "vlmops.nn.RMSNorm", "vlmops.nn.GatedMLP"} <= result["replaced"]
        # Forward and backward of the patched ops ran on the unsharded parameters.
        assert {
            "vlmops::patch_embed",
            "vlmops::patch_embed_backward",
            "vlmops::rope",
            "vlmops::varlen_attention",
            "vlmops::varlen_attention_backward",
            "vlmops::rms_norm",
            "vlmops::rms_norm_backward",
            "vlmops::silu_mul",
            "vlmops::silu_mul_backward",
        } <= result["calls"], sorted(result["calls"])
        losses = [step["loss"] for step in result["got"]]
        assert losses[-1] < losses[0], losses  # the steps trained the tower
        for step, (got, expected) in enumerate(zip(result["got"], result["expected"])):
            where = f"rank {rank}, step {step}"
            torch.testing.assert_close(got["loss"], expected["loss"], rtol=1e-5, atol=1e-6, msg=where)
            assert got["grads"].keys() == expected["grads"].keys()
            for name, grad in expected["grads"].items():
                assert grad.abs().max() > 0, f"{where}: {name} has no gradient"
                torch.testing.assert_close(
                    got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, w=f"{where}, {name}": f"{w}: {m}"
                )
            for name, param in expected["params"].items():
                torch.testing.assert_close(
                    got["params"][name], param, rtol=1e-5, atol=1e-6, msg=lambda m, w=f"{where}, {name}": f"{w}: {m}"
                )
    # The gathered gradients are the average over both ranks' batches: the same on each rank, and the
    # losses differ (each rank its own batch).
    for name, grad in ranks[0]["got"][0]["grads"].items():
        torch.testing.assert_close(ranks[1]["got"][0]["grads"][name], grad, rtol=0, atol=0)
    assert not torch.equal(ranks[0]["got"][0]["loss"], ranks[1]["got"][0]["loss"])
