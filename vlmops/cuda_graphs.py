"""CUDA-graph runners for patched vision towers: ``vlmops.cuda_graph_tower``.

A vision tower on small images is launch-bound (hundreds of small kernels per forward). The patched
packed towers (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Pixtral) read nothing on the host, so one forward can
be captured in a CUDA graph and replayed with one launch. A graph has fixed shapes, so, as serving
engines do for their encoders, one graph is captured per token-count bucket: a call's packed tokens
are padded to the smallest bucket that holds them, and the padding is one more image of its own (its
own attention segment: no real token attends to it, nor it to them); the outputs are sliced back to
the real tokens and copied out of the graph's memory.

The padding is factored into functions of plain tensors (``pad_qwen_inputs``, ``pad_pixtral_inputs``)
so that it runs, and is tested, on any device: the tower run eagerly on padded inputs gives the
unpadded outputs, which is what the graphs replay.
"""

import bisect
import dataclasses

import torch

__all__ = [
    "CUDAGraphTower",
    "cuda_graph_tower",
    "pad_pixtral_inputs",
    "pad_qwen_inputs",
    "select_bucket",
    "unpad_outputs",
]

QWEN_FAMILIES = ("Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL")
FAMILIES = (*QWEN_FAMILIES, "Pixtral")


def select_bucket(num_tokens: int, buckets) -> int | None:
    """The smallest of the sorted ``buckets`` that holds ``num_tokens`` tokens, or None when none does."""
    index = bisect.bisect_left(buckets, num_tokens)
    return buckets[index] if index < len(buckets) else None


def pad_qwen_inputs(rows, grid_thw, bucket: int, spatial_merge_size: int, out_rows, out_grid) -> None:
    """Writes a Qwen tower call padded to ``bucket`` tokens into ``out_rows`` / ``out_grid``.

    Args:
        rows: ``[N, R]`` pixel rows of the call (N a multiple of spatial_merge_size**2, as every image's).
        grid_thw: ``[G, 3]`` (t, h, w) of the call, on out_grid's device.
        bucket: padded length, ``N <= bucket``, a multiple of spatial_merge_size**2.
        out_rows: ``[>= bucket, R]``: rows ``[:N]`` get the call's rows; ``[N:bucket]`` keep what they
            hold (the padding image's pixels, seen by no real token).
        out_grid: ``[> G, 3]`` int64: ``[:G]`` the call's grid, ``[G]`` the padding image
            ``(1, m, (bucket - N) / m)`` (all zeros when N == bucket), the rest zeros (empty images).

    Host reads: none (shapes and Python ints only; ``fill_`` writes scalars without a copy).
    """
    n, g, m = rows.shape[0], grid_thw.shape[0], spatial_merge_size
    pad = bucket - n
    if pad < 0 or pad % (m * m):
        raise ValueError(f"vlmops.pad_qwen_inputs: cannot pad {n} tokens to {bucket} in units of {m * m}")
    if g >= out_grid.shape[0]:
        raise ValueError(
            f"vlmops.pad_qwen_inputs: {g} images do not leave out_grid ({out_grid.shape[0]} rows) a padding row"
        )
    out_rows[:n].copy_(rows)
    out_grid[:g].copy_(grid_thw)
    out_grid[g:].zero_()
    if pad:
        out_grid[g, 0].fill_(1)
        out_grid[g, 1].fill_(m)
        out_grid[g, 2].fill_(pad // m)


def pad_pixtral_inputs(pixel_values, image_sizes, patch_size: int, out_pixels, out_sizes) -> None:
    """Writes a Pixtral tower call into a fixed canvas ``out_pixels`` / ``out_sizes``.

    Args:
        pixel_values: ``[B, C, H, W]`` of the call.
        image_sizes: ``[B, 2]`` int (height, width) in pixels on out_sizes' device, or None (every image
            fills ``H x W``).
        patch_size: P.
        out_pixels: ``[>= B, C, >= H, >= W]``: images go to the top-left corners of the first B slots;
            the rest of the canvas keeps what it holds (no patch of it is packed).
        out_sizes: ``[>= B, 2]`` int64: ``[:B]`` the sizes, clamped to ``H x W`` cut to whole patches (the
            slice transformers' loop takes), the rest zeros (empty images).

    The packed length passed to the tower (``num_patches``) is the bucket: the tokens past the images'
    patches are the padding segment of the patched forward. Host reads: none.
    """
    b, _, h, w = pixel_values.shape
    if b > out_pixels.shape[0] or h > out_pixels.shape[2] or w > out_pixels.shape[3]:
        raise ValueError(
            f"vlmops.pad_pixtral_inputs: pixel_values {tuple(pixel_values.shape)} do not fit the canvas "
            f"{tuple(out_pixels.shape)}"
        )
    out_pixels[:b, :, :h, :w].copy_(pixel_values)
    out_sizes.zero_()
    rows, cols = h // patch_size * patch_size, w // patch_size * patch_size
    if image_sizes is None:
        out_sizes[:b, 0].fill_(rows)
        out_sizes[:b, 1].fill_(cols)
    else:
        out_sizes[:b, 0].copy_(image_sizes[:, 0].clamp(max=rows))
        out_sizes[:b, 1].copy_(image_sizes[:, 1].clamp(max=cols))


def _pixtral_tokens(image_sizes, patch_size: int, batch: int, height: int, width: int) -> int:
    """The real packed length of a Pixtral call, from the sizes on the host (Python ints or a CPU
    tensor read for free; a GPU tensor is read back, a sync: pass ``num_patches`` to avoid it)."""
    from vlmops.transformers.pixtral_rules import _num_patches

    sizes = image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else image_sizes
    return _num_patches(sizes, None, patch_size, batch, height // patch_size, width // patch_size)


def _family(tower) -> str | None:
    return getattr(getattr(tower.forward, "__func__", None), "vlmops_tower_forward", None)


def _merge_unit(tower) -> int:
    """Patches per merged token: spatial_merge_size**2 for the Qwen towers, 1 for Pixtral."""
    return 1 if _family(tower) == "Pixtral" else tower.config.spatial_merge_size**2


def unpad_outputs(output, tokens: int, bucket: int, unit: int = 1):
    """A copy of a tower's output on ``bucket`` padded tokens with every tensor cut to the ``tokens`` real
    ones: ``[bucket, ...]`` -> ``[tokens, ...]``, merged ``[bucket / unit, ...]`` -> ``[tokens / unit, ...]``
    (unit: patches per merged token), Pixtral's
    ``[1, bucket, ...]`` -> ``[1, tokens, ...]``; lists (Qwen3-VL's DeepStack features) item by item."""

    def cut(value):
        if isinstance(value, (list, tuple)):
            return type(value)(cut(v) for v in value)
        if not isinstance(value, torch.Tensor):
            return value
        if value.dim() >= 2 and value.shape[0] == 1 and value.shape[1] == bucket:
            return value[:, :tokens].clone()
        if value.shape[0] == bucket:
            return value[:tokens].clone()
        if unit > 1 and value.shape[0] == bucket // unit:
            return value[: tokens // unit].clone()
        return value.clone()

    fields = {f.name: cut(getattr(output, f.name)) for f in dataclasses.fields(output)}
    return type(output)(**fields)


class CUDAGraphTower(torch.nn.Module):
    """A patched packed vision tower replayed from CUDA graphs, one per token-count bucket (see the module
    docstring and :func:`cuda_graph_tower`). Call it as the tower: ``(pixel_rows, grid_thw)`` for the
    Qwen towers, ``(pixel_values, image_sizes=None, num_patches=None)`` for Pixtral. Inference only.

    Attributes: ``tower``, ``family``, ``buckets`` (sorted), ``max_images``, ``eager_calls`` (calls that
    fit no bucket or more than max_images images and ran the tower eagerly)."""

    def __init__(self, tower, buckets, max_images: int):
        """Use :func:`cuda_graph_tower`, which checks the arguments."""
        super().__init__()
        self.tower = tower
        self.family = _family(tower)
        self.max_images = max_images
        self.eager_calls = 0
        weight = next(tower.parameters())
        device, dtype = weight.device, weight.dtype
        config = tower.config
        self.unit = _merge_unit(tower)
        if self.family == "Pixtral":
            self.patch_size = config.patch_size
            side = config.image_size
            self.pixels = torch.zeros(max_images, config.num_channels, side, side, device=device, dtype=dtype)
            self.sizes = torch.zeros(max_images, 2, dtype=torch.long, device=device)
        else:
            self.merge = config.spatial_merge_size
            row = config.in_channels * config.temporal_patch_size * config.patch_size**2
            self.rows = torch.zeros(max(buckets), row, device=device, dtype=dtype)
            self.grid = torch.zeros(max_images + 1, 3, dtype=torch.long, device=device)
        self.buckets = sorted(set(buckets))
        self.graphs, self.outputs = {}, {}
        # Largest first: the smaller graphs reuse its memory from the shared pool.
        self._pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        with torch.no_grad():
            for bucket in reversed(self.buckets):
                # Captured on padding only (the inputs of a call are copied in before each replay).
                if self.family == "Pixtral":
                    self.sizes.zero_()
                else:
                    pad_qwen_inputs(self.rows[:0], self.grid[:0], bucket, self.merge, self.rows, self.grid)
                self.graphs[bucket], self.outputs[bucket] = self._capture_graph(lambda b=bucket: self._run_static(b))

    def _run_static(self, bucket):
        if self.family == "Pixtral":
            return self.tower(self.pixels, image_sizes=self.sizes, num_patches=bucket)
        return self.tower(self.rows[:bucket], grid_thw=self.grid)

    def _capture_graph(self, fn):
        """(graph, fn()'s output captured in it): a warm-up run on a side stream first (Triton compiles
        and autotunes there), then the capture into the shared pool. Anything with ``replay()`` that
        rewrites that output in place can stand in for the graph (tests run the runner on CPU so)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = fn()
        return graph, output

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        if self.family == "Pixtral":
            return self._pixtral(*args, **kwargs)
        return self._qwen(*args, **kwargs)

    def _eager(self, *args, **kwargs):
        self.eager_calls += 1
        return self.tower(*args, **kwargs)

    def _qwen(self, hidden_states, grid_thw):
        tokens = hidden_states.shape[0]
        bucket = select_bucket(tokens, self.buckets)
        if bucket is None or grid_thw.shape[0] > self.max_images:
            return self._eager(hidden_states, grid_thw=grid_thw)
        pad_qwen_inputs(hidden_states, grid_thw.to(self.grid.device), bucket, self.merge, self.rows, self.grid)
        self.graphs[bucket].replay()
        return unpad_outputs(self.outputs[bucket], tokens, bucket, self.unit)

    def _pixtral(self, pixel_values, image_sizes=None, num_patches=None):
        batch, _, height, width = pixel_values.shape
        if num_patches is None:
            num_patches = _pixtral_tokens(image_sizes, self.patch_size, batch, height, width)
        bucket = select_bucket(num_patches, self.buckets)
        canvas = self.pixels.shape
        if bucket is None or batch > self.max_images or height > canvas[2] or width > canvas[3]:
            return self._eager(pixel_values, image_sizes=image_sizes, num_patches=num_patches)
        sizes = None if image_sizes is None else torch.as_tensor(image_sizes, device=self.sizes.device)
        pad_pixtral_inputs(pixel_values, sizes, self.patch_size, self.pixels, self.sizes)
        self.graphs[bucket].replay()
        return unpad_outputs(self.outputs[bucket], num_patches, bucket)


def cuda_graph_tower(tower, buckets=(256, 1024, 4096), max_images: int = 8) -> CUDAGraphTower:
    """Captures a patched packed vision tower in CUDA graphs, one per token-count bucket, and returns a
    module that replays them (``CUDAGraphTower``; see the module docstring for the padding).

    Args:
        tower: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision tower (``model.model.visual``) or a Pixtral
            vision tower (``model.model.vision_tower``) patched by ``vlmops.patch_model`` (its
            "attention" rule at least: the patched forward is the one that reads nothing on the host),
            in eval mode on a CUDA device.
        buckets: packed token counts (patches, before the merger) to capture; Qwen: multiples of
            ``spatial_merge_size**2``. A call runs the smallest bucket that holds its tokens.
        max_images: the most images (grid rows; Pixtral: the batch) one replay takes. Pixtral's
            canvas is ``[max_images, C, image_size, image_size]`` (the config's largest image).

    Returns:
        ``CUDAGraphTower``, called as the tower. Its outputs are the tower's (same class, the tensors cut
        to the real tokens and copied out of the graph's memory). A call that fits no bucket (more
        tokens than the largest, more images than max_images, a Pixtral image larger than the canvas)
        runs the tower eagerly, as serving engines fall back for inputs past their largest graph, and
        counts in ``eager_calls``.

    Raises:
        ValueError: a tower that is not a patched packed tower, a tower whose parameters are not on a
            CUDA device, empty or non-positive buckets, buckets that are not multiples of the merge
            unit, max_images < 1.
    """
    family = _family(tower)
    if family not in FAMILIES:
        raise ValueError(
            f"vlmops.cuda_graph_tower: {type(tower).__name__} is not a vision tower patched by vlmops.patch_model "
            f"with a packed forward ({', '.join(FAMILIES)}); patch it first (the 'attention' rule), and pass the "
            "tower itself (e.g. model.model.visual), not the whole model"
        )
    buckets = tuple(buckets)
    if not buckets or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in buckets):
        raise ValueError(f"vlmops.cuda_graph_tower: buckets must be positive ints, got {buckets}")
    unit = _merge_unit(tower)
    uneven = [b for b in buckets if b % unit]
    if uneven:
        raise ValueError(
            f"vlmops.cuda_graph_tower: buckets must be multiples of spatial_merge_size**2 = {unit} "
            f"(every image's token count is), got {uneven}"
        )
    if not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 1:
        raise ValueError(f"vlmops.cuda_graph_tower: max_images must be an int >= 1, got {max_images!r}")
    if tower.training:
        raise ValueError("vlmops.cuda_graph_tower: the tower is in training mode; call tower.eval() (inference only)")
    device = next(tower.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"vlmops.cuda_graph_tower: CUDA graphs need the tower on a CUDA device, it is on {device}")
    return CUDAGraphTower(tower, buckets, max_images)
