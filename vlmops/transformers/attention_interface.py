"""vlmops' varlen attention as a transformers attention implementation: ``attn_implementation="vlmops"``.

``vlmops.register_attention()`` registers it (idempotent); ``vlmops.patch_model`` calls it when it
switches a vision tower's attention. It is not registered at ``import vlmops``: that would import
transformers' ``modeling_utils`` (seconds) in every program, and transformers is optional.

What the implementation runs:

- transformers hands attention functions ``query [B, H, Lq, D]``, ``key``/``value [B, Hk, Lk, D]``
  (transposed views of ``[B, L, H, D]`` projections). An equal-length batch is the packed
  ``[B*L, H, D]`` view of them (a copy only where their strides do not allow a view) with
  ``cu_seqlens = arange(B + 1) * L`` built on their device: nothing synchronizes with the host.
- Where transformers passes flash-attn's varlen kwargs (``cu_seq_lens_q``/``cu_seq_lens_k`` and
  ``max_length_q``/``max_length_k``, with ``B == 1`` packed sequences), those boundaries are used.
  Qwen2-VL / Qwen2.5-VL vision attention passes them only to implementations whose name contains
  "flash" (``is_flash_attention_requested``); under ``"vlmops"`` it runs its own per-image loop
  (transformers' code, which reads the lengths on the host) and calls this once per image. The
  Qwen patch rules of ``vlmops.patch_model`` are the packed path for those towers.
- Grouped-query attention (``Hk < H``) runs as is, without repeating k/v.

What it refuses (``ValueError`` naming the cause), rather than compute something else: an attention
mask (transformers builds one for ``"vlmops"`` only when it is not trivially all-visible, so a
padding mask is never dropped silently), causal attention, dropout > 0, and sliding windows,
softcapping, attention sinks and position biases. Use ``attn_implementation={"vision_config":
"vlmops", "text_config": "sdpa"}`` for a whole VLM whose language model is causal.
"""

import torch

from vlmops.ops.varlen_attention import varlen_attention

__all__ = ["NAME", "register_attention", "vlmops_attention_forward"]

NAME = "vlmops"

# Keyword arguments of other implementations that change the math; refused when set.
_UNSUPPORTED = ("sliding_window", "softcap", "s_aux", "position_bias")


def _refuse(reason: str):
    return ValueError(f'attn_implementation="{NAME}": {reason}')


def _packed(t: torch.Tensor) -> torch.Tensor:
    """[B, H, L, D] -> [B*L, H, D]: a view of the [B, L, H, D] tensor it was transposed from."""
    return t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[3])


def _uniform_cu_seqlens(batch: int, length: int, device: torch.device) -> torch.Tensor:
    return torch.arange(batch + 1, dtype=torch.int32, device=device) * length


def vlmops_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The AttentionInterface function: returns ``(attn_output [B, Lq, H, D], None)`` like transformers' sdpa."""
    # transformers' convention (sdpa, flash): the call's is_causal wins over the module's attribute,
    # and a module that does not say is causal.
    if is_causal if is_causal is not None else getattr(module, "is_causal", True):
        raise _refuse(
            f"{type(module).__name__} is causal; vlmops' varlen attention is bidirectional (vision towers). "
            'For a whole VLM pass attn_implementation={"vision_config": "vlmops", "text_config": "sdpa"}'
        )
    if attention_mask is not None:
        raise _refuse(
            f"{type(module).__name__} got an attention mask of shape {tuple(attention_mask.shape)}; vlmops runs "
            "unmasked or cu_seqlens-packed attention only (use sdpa for padded batches)"
        )
    if dropout:
        raise _refuse(f"attention dropout ({dropout}) is not implemented; set attention_dropout=0 or use eval()")
    for name in _UNSUPPORTED:
        if kwargs.get(name) is not None:
            raise _refuse(f"{name} is not supported")
    batch, heads, length_q, head_dim = query.shape
    length_k = key.shape[2]
    if cu_seq_lens_q is not None or cu_seq_lens_k is not None:
        if batch != 1:
            raise _refuse(f"cu_seq_lens_q/cu_seq_lens_k need one packed sequence (batch 1), got batch {batch}")
        cu_q = cu_seq_lens_q if cu_seq_lens_q is not None else cu_seq_lens_k
        cu_k = cu_seq_lens_k if cu_seq_lens_k is not None else cu_seq_lens_q
        cu_q, cu_k = cu_q.to(torch.int32), cu_k.to(torch.int32)
    else:
        cu_q = _uniform_cu_seqlens(batch, length_q, query.device)
        cu_k = cu_q if length_k == length_q else _uniform_cu_seqlens(batch, length_k, query.device)
        max_length_q, max_length_k = length_q, length_k
    out = varlen_attention(
        _packed(query),
        _packed(key),
        _packed(value),
        cu_q,
        cu_k,
        max_seqlen_q=max_length_q,
        max_seqlen_k=max_length_k,
        softmax_scale=scaling,
    )
    return out.view(batch, length_q, heads, head_dim), None


def register_attention() -> str:
    """Registers ``"vlmops"`` with transformers' ``AttentionInterface`` (and its mask interface), idempotently.

    After this, ``from_pretrained(..., attn_implementation="vlmops")``, ``from_config`` and
    ``model.set_attn_implementation("vlmops")`` accept it. Returns the name, ``"vlmops"``.

    The mask interface gets transformers' sdpa mask builder: it returns ``None`` when the mask is
    trivially all-visible and a mask otherwise, which the attention function then refuses. Without
    a registered mask builder transformers would pass no mask at all for a custom implementation,
    dropping padding silently.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, vlmops_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
