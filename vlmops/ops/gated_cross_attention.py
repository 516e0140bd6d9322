"""Gated cross-attention (Flamingo / OpenFlamingo, IDEFICS v1, Llama 3.2 Vision): text rows attend to
image tokens within one key range per row, the result scaled by ``tanh(gate)``, with no dense
``[B, Lq, Lk]`` mask and no K/V expansion for grouped-query attention.

The visibility rules of the models become key ranges with the builders here (tensor code on the
inputs' device, no host sync): :func:`flamingo_kv_ranges` (OpenFlamingo's ``MaskedCrossAttention``)
and :func:`mllama_kv_ranges` (transformers' Mllama ``cross_attention_mask``).
"""

import torch

from vlmops import _native, reference
from vlmops.ops._checks import check_int, check_same_device, check_tensor

__all__ = ["flamingo_kv_ranges", "gated_cross_attention", "mllama_kv_ranges", "mllama_kv_ranges_from_additive_mask"]

_FN = "gated_cross_attention"


def _check_range_values(kv_start, kv_end, Lk: int) -> None:
    """Values of the key ranges (CPU only: reading them from a GPU would synchronize). Under
    torch.compile the CPU kernel's own check raises instead (a data-dependent branch would break the graph)."""
    if kv_start.device.type != "cpu" or torch.compiler.is_compiling():
        return
    bad = (kv_start < 0) | (kv_end > Lk) | (kv_start > kv_end)
    if bool(bad.any()):
        b, i = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(
            f"vlmops.{_FN}: row {i} of batch {b} has key range [kv_start, kv_end) = [{int(kv_start[b, i])}, "
            f"{int(kv_end[b, i])}), which must satisfy 0 <= kv_start <= kv_end <= Lk = {Lk}"
        )


def check_inputs(q, k, v, kv_start, kv_end, gate) -> None:
    """Every argument check of the op (shared with the Triton launchers); range values on CPU only."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(_FN, name, t, ndim=4)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"vlmops.{_FN}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if v.shape != k.shape:
        raise ValueError(f"vlmops.{_FN}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    B, Lq, H, D = q.shape
    Bk, Lk, Hk, Dk = k.shape
    if Bk != B:
        raise ValueError(f"vlmops.{_FN}: k has batch {Bk} but q has {B}")
    if Dk != D:
        raise ValueError(f"vlmops.{_FN}: k has head dim {Dk} but q has {D}")
    if not (8 <= D <= 256 and D % 8 == 0):
        raise ValueError(f"vlmops.{_FN}: head dim must be a multiple of 8 in [8, 256], got {D}")
    if Hk == 0 or H % Hk:
        raise ValueError(f"vlmops.{_FN}: q heads ({H}) must be a multiple of k/v heads ({Hk})")
    for name, r in (("kv_start", kv_start), ("kv_end", kv_end)):
        check_tensor(_FN, name, r, dtypes=(torch.int32,), ndim=2)
        if tuple(r.shape) != (B, Lq):
            raise ValueError(f"vlmops.{_FN}: {name} must be [B, Lq] = [{B}, {Lq}], got {tuple(r.shape)}")
    if gate is not None:
        check_tensor(_FN, "gate", gate)
        if gate.numel() != 1 or gate.dim() > 1:
            raise ValueError(f"vlmops.{_FN}: gate must be a scalar tensor (shape [] or [1]), got {tuple(gate.shape)}")
    check_same_device(_FN, "q", q, k=k, v=v, kv_start=kv_start, kv_end=kv_end, gate=gate)
    _check_range_values(kv_start, kv_end, Lk)


def gated_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_start: torch.Tensor,
    kv_end: torch.Tensor,
    gate: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    return_lse: bool = False,
):
    """Cross-attention where query row ``i`` of batch entry ``b`` sees keys ``[kv_start[b, i], kv_end[b, i])``,
    the output multiplied by ``tanh(gate)``.

    ``out[b, i, h] = tanh(gate) * softmax(q[b, i, h] @ k[b, s:e, h // (H // Hk)]^T * scale) @ v[b, s:e, ...]``
    with ``s, e = kv_start[b, i], kv_end[b, i]``. A row with an empty range (``s == e``: text before
    any image) gets an all-zero output and zero gradients, never NaN.

    Args:
        q: ``[B, Lq, H, D]``; float32, float64, float16 or bfloat16; D a multiple of 8 up to 256.
            Read through its strides (e.g. a view of a projection) as long as D is unit-stride.
        k, v: ``[B, Lk, Hk, D]`` in q's dtype, ``H % Hk == 0`` (grouped-query attention, never
            expanded in memory). ``[B, Hk, Lk, D]`` caches (transformers' layout) pass as
            ``cache.transpose(1, 2)`` without a copy.
        kv_start, kv_end: int32 ``[B, Lq]`` on q's device, ``0 <= kv_start <= kv_end <= Lk``. Build
            them with :func:`flamingo_kv_ranges` or :func:`mllama_kv_ranges`.
        gate: optional scalar tensor ``alpha`` (shape ``[]`` or ``[1]``, any float dtype); the output is
            multiplied by ``tanh(alpha)`` in the kernel's epilogue, and autograd returns its gradient.
        softmax_scale: scale of ``q @ k^T``; default ``D ** -0.5``.
        return_lse: also return the log-sum-exp ``[B, H, Lq]`` of each softmax row (float32, float64
            for float64 inputs; ``-inf`` on empty rows). It carries no gradient.

    Returns:
        ``out [B, Lq, H, D]`` in q's dtype, or ``(out, lse)`` with ``return_lse=True``.
        Differentiable in q, k, v and gate.

    Errors: bad shapes, dtypes, devices, head dims and ``H % Hk != 0`` raise ``ValueError`` /
    ``TypeError``. On CPU the range values are checked eagerly; on CUDA they are not read on the
    host (that would synchronize) and must be valid.
    """
    check_inputs(q, k, v, kv_start, kv_end, gate)
    if softmax_scale is not None:
        if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
            raise TypeError(f"vlmops.{_FN}: softmax_scale must be a float or None, got {type(softmax_scale).__name__}")
        softmax_scale = float(softmax_scale)
    if _native.available():
        out, lse = torch.ops.vlmops.gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale)
    else:
        _native.warn_fallback(_FN)
        out, lse = reference.gated_cross_attention(q, k, v, kv_start, kv_end, gate, softmax_scale)
    return (out, lse) if return_lse else out


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register() -> None:
    @torch.library.register_fake("vlmops::gated_cross_attention")
    def _(q, k, v, kv_start, kv_end, gate=None, softmax_scale=None):
        B, Lq, H, D = q.shape
        return q.new_empty(B, Lq, H, D), q.new_empty(B, H, Lq, dtype=_lse_dtype(q.dtype))

    @torch.library.register_fake("vlmops::gated_cross_attention_backward")
    def _(grad_out, q, k, v, out, lse, kv_start, kv_end, gate=None, softmax_scale=None):
        grad_gate = gate.new_empty(gate.shape) if gate is not None else q.new_empty(0, dtype=_lse_dtype(q.dtype))
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), grad_gate

    def setup_context(ctx, inputs, output):
        q, k, v, kv_start, kv_end, gate, softmax_scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, kv_start, kv_end, gate)
        ctx.softmax_scale = softmax_scale
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse, kv_start, kv_end, gate = ctx.saved_tensors
        grad_q, grad_k, grad_v, grad_gate = torch.ops.vlmops.gated_cross_attention_backward(
            grad_out, q, k, v, out, lse, kv_start, kv_end, gate, ctx.softmax_scale
        )
        return grad_q, grad_k, grad_v, None, None, grad_gate if gate is not None else None, None

    torch.library.register_autograd("vlmops::gated_cross_attention", backward, setup_context=setup_context)


if _native.available():
    _register()


def _ranges_from_chunk_visibility(fn: str, visible: torch.Tensor, chunk: int, masked_rows: str):
    """visible bool [B, Lq, C]: row sees key chunk c (keys [c * chunk, (c + 1) * chunk)) -> int32 ranges.

    The visible chunks of a row must be consecutive (one range); a row that sees none gets an empty
    range, or all C chunks with ``masked_rows="all"``.
    """
    C = visible.shape[-1]
    index = torch.arange(C, device=visible.device)
    count = visible.sum(-1)
    first = torch.where(visible, index, C).amin(-1) if C else count
    last = torch.where(visible, index, -1).amax(-1) if C else count - 1
    contiguous = (count == 0) | (last - first + 1 == count)
    message = (
        f"vlmops.{fn}: a text row sees a set of image tiles that is not one contiguous run of keys; "
        "gated_cross_attention takes one key range per row"
    )
    if visible.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(contiguous.all()):
            b, i = (int(x) for x in torch.nonzero(~contiguous)[0])
            seen = torch.nonzero(visible[b, i]).flatten().tolist()
            raise ValueError(f"{message} (batch {b}, row {i} sees chunks {seen} of {chunk} keys)")
    else:
        torch._assert_async(contiguous.all(), message)
    seen = count > 0
    start = torch.where(seen, first * chunk, 0)
    end = torch.where(seen, (last + 1) * chunk, C * chunk if masked_rows == "all" else 0)
    return start.to(torch.int32), end.to(torch.int32)


def _check_masked_rows(fn: str, masked_rows: str) -> None:
    if masked_rows not in ("empty", "all"):
        raise ValueError(f"vlmops.{fn}: masked_rows must be 'empty' or 'all', got {masked_rows!r}")


def mllama_kv_ranges(cross_attention_mask: torch.Tensor, tokens_per_tile: int, masked_rows: str = "empty"):
    """Key ranges of Llama 3.2 Vision (transformers' Mllama) from its ``cross_attention_mask``.

    Args:
        cross_attention_mask: ``[B, Lq, n_images, n_tiles]`` (the processor's output, any dtype):
            non-zero where text row ``i`` may see tile ``t`` of image ``n``. The keys are the images'
            tiles in order, ``tokens_per_tile`` each (``cross_attention_states`` of shape
            ``[B, n_images * n_tiles * tokens_per_tile, hidden]``).
        tokens_per_tile: vision tokens per tile (Llama 3.2 Vision: 1601 = (560 / 14)^2 + 1).
        masked_rows: what a row that sees no tile gets. ``"empty"`` (default): an empty range, i.e.
            a zero attention output (Meta's reference placement of the full-text-row mask).
            ``"all"``: every key, which is what transformers computes (its
            ``_prepare_cross_attention_mask`` zeroes such rows of the additive mask and masks them
            only after the MLP); use it for parity with transformers.

    Returns:
        ``(kv_start, kv_end)`` int32 ``[B, Lq]`` on the mask's device.

    Errors: a row whose visible tiles are not consecutive (e.g. two images of which the first has
    padding tiles) has no single key range and raises ``ValueError`` on CPU; on CUDA and under
    torch.compile the same check runs as ``torch._assert_async`` (on CUDA a device-side assertion,
    which does not synchronize).
    """
    fn = "mllama_kv_ranges"
    check_tensor(fn, "cross_attention_mask", cross_attention_mask, dtypes=None, ndim=4)
    check_int(fn, "tokens_per_tile", tokens_per_tile, minimum=1)
    _check_masked_rows(fn, masked_rows)
    B, Lq = cross_attention_mask.shape[:2]
    visible = (cross_attention_mask != 0).reshape(B, Lq, -1)
    return _ranges_from_chunk_visibility(fn, visible, tokens_per_tile, masked_rows)


def mllama_kv_ranges_from_additive_mask(attention_mask: torch.Tensor, tokens_per_tile: int):
    """Key ranges from the additive ``[B, 1, Lq, Lk]`` mask that transformers' Mllama passes to its
    cross-attention layers (the output of ``_prepare_cross_attention_mask``: 0 where visible).

    Reads one key per tile (a strided view, no ``[B, Lq, Lk]`` temporary). Rows whose mask row is all
    zero, which includes the rows transformers marks as seeing no image, get every key, as in
    transformers. Same errors as :func:`mllama_kv_ranges`.
    """
    fn = "mllama_kv_ranges_from_additive_mask"
    check_tensor(fn, "attention_mask", attention_mask, dtypes=None, ndim=4)
    check_int(fn, "tokens_per_tile", tokens_per_tile, minimum=1)
    if attention_mask.shape[1] != 1 or attention_mask.shape[-1] % tokens_per_tile:
        raise ValueError(
            f"vlmops.{fn}: attention_mask must be [B, 1, Lq, Lk] with Lk a multiple of tokens_per_tile "
            f"{tokens_per_tile}, got {tuple(attention_mask.shape)}"
        )
    visible = attention_mask[:, 0, :, ::tokens_per_tile] == 0
    return _ranges_from_chunk_visibility(fn, visible, tokens_per_tile, "empty")


def flamingo_kv_ranges(
    media_locations: torch.Tensor,
    tokens_per_image: int,
    only_attend_immediate_media: bool = True,
    num_media: int | None = None,
    use_cached_media: bool = False,
):
    """Key ranges of Flamingo / OpenFlamingo's ``MaskedCrossAttention`` from ``media_locations``.

    A text token's media time is the number of ``<image>`` tokens up to and including it (so the
    ``<image>`` token itself follows its image). With ``only_attend_immediate_media`` it sees only the
    image of its media time, keys ``[(t - 1) * n, t * n)``; otherwise every image up to it, keys
    ``[0, t * n)``. Tokens before the first image (``t == 0``) get an empty range (zero output):
    OpenFlamingo zeroes them in the first mode; in the second its softmax over an all-masked row
    averages every media token instead, which no trained model relies on.

    Args:
        media_locations: bool ``[B, Lq]``, True at ``<image>`` tokens.
        tokens_per_image: media tokens per image ``n`` (keys are ``[B, T * n, ...]``, image-major,
            OpenFlamingo's ``"b t n d -> b (t n) d"``).
        only_attend_immediate_media: OpenFlamingo's flag of the same name.
        num_media: ``T``, the images per sample. When given, a token whose media time exceeds it sees
            only the existing images (immediate mode: none), as OpenFlamingo's mask does.
        use_cached_media: OpenFlamingo's decode convention: every token's media time is the number of
            ``<image>`` tokens in its whole row (the text attends to the last cached image).

    Returns:
        ``(kv_start, kv_end)`` int32 ``[B, Lq]`` on media_locations' device.
    """
    fn = "flamingo_kv_ranges"
    check_tensor(fn, "media_locations", media_locations, dtypes=(torch.bool,), ndim=2)
    check_int(fn, "tokens_per_image", tokens_per_image, minimum=1)
    if num_media is not None:
        check_int(fn, "num_media", num_media, minimum=0)
    if use_cached_media:
        text_time = media_locations.sum(-1, keepdim=True).expand(media_locations.shape)
    else:
        text_time = media_locations.to(torch.int64).cumsum(-1)
    if num_media is None:
        last = text_time
        seen = text_time > 0
    else:
        last = text_time.clamp(max=num_media)
        seen = (text_time > 0) & (text_time <= num_media) if only_attend_immediate_media else text_time > 0
    end = torch.where(seen, last * tokens_per_image, 0)
    start = torch.where(seen, end - tokens_per_image, 0) if only_attend_immediate_media else torch.zeros_like(end)
    return start.to(torch.int32), end.to(torch.int32)
