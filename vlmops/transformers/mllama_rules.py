"""Patch rules of Llama 3.2 Vision (transformers' Mllama).

- ``cross_attention``: the text cross-attention layers run ``vlmops.gated_cross_attention`` on key
  ranges read from the dense mask transformers builds, where the op takes their heads, key/value
  heads, head dim and dtype, and they have no dropout and transformers' softmax scale
  ``head_dim ** -0.5`` (the one ``vlmops.nn.MllamaCrossAttention`` uses).
- ``cross_attention_mask``: ``MllamaModel.forward`` builds no dense ``[B, 1, Lq, Lk]`` mask. Once per
  forward it builds the key ranges ``(kv_start, kv_end)`` (int32 ``[B, Lq]``) from the small
  ``cross_attention_mask`` ``[B, Lq, n_images, n_tiles]`` with ``vlmops.mllama_kv_ranges``, on the
  mask's device, and transformers' ``full_text_row_masked_out_mask`` ``[B, 1, Lq, 1]``, and passes the
  ranges where transformers passes its mask (the decoder layers hand it to every cross-attention
  layer, which must then be vlmops'; the rule replaces those still transformers').
"""

import functools
import inspect
import types

import torch

from vlmops.models.mllama import mllama_kv_ranges
from vlmops.nn.gated_cross_attention import MllamaCrossAttention
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    Sample,
    Zeros,
    attention_options_refusal,
    op_refusal,
    resolve_or_none,
    set_submodule,
)

MLLAMA = "transformers.models.mllama.modeling_mllama"


def _tokens_per_tile(root) -> int:
    """The vision tower's tokens per tile (its ``num_patches``), so the ranges are read from one mask
    entry per tile; 1 (every entry) when the patched module holds no vision tower."""
    for module in root.modules():
        if type(module).__name__ == "MllamaVisionModel":
            return module.num_patches
    return 1


def _cross_attention_refusal(root, attn, path):
    """Options, then gated_cross_attention on one text token attending to one image token:
    q ``[1, 1, H, D]``, k/v ``[1, 1, Hk, D]`` in the projections' dtypes, no gate."""
    reason = attention_options_refusal(attn, "dropout")
    if reason:
        return reason
    D = attn.head_dim
    if attn.scaling != D**-0.5:
        return f"softmax scale {attn.scaling} is not head_dim ** -0.5 = {D**-0.5}, the scale MllamaCrossAttention uses"
    projections = (
        (attn.q_proj, attn.num_heads),
        (attn.k_proj, attn.num_key_value_heads),
        (attn.v_proj, attn.num_key_value_heads),
    )
    q, k, v = (Zeros((1, 1, heads, D), projection.weight.dtype) for projection, heads in projections)
    ranges = Zeros((1, 1), torch.int32)
    return op_refusal("gated_cross_attention", q, k, v, ranges, ranges, None, D**-0.5)


def _patch_cross_attention(root, attn, path):
    set_submodule(root, path, MllamaCrossAttention.from_mllama(attn, tokens_per_tile=_tokens_per_tile(root)))
    return [Replacement(path, type(attn).__name__, "vlmops.nn.MllamaCrossAttention")]


def _cross_attention_sample(root, attn, path):
    """verify=True on the module: 3 text rows attending to 4 image tokens (cross_attention_states in the
    model's width) through an additive mask of transformers' form (row 0 sees every token, row 1 the
    first two, row 2 the last two), with a fresh cache; then one decode row that reads the keys and
    values back from that cache."""
    from transformers.cache_utils import DynamicCache

    weight = attn.q_proj.weight
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(weight.device, weight.dtype)

    width, image_width = attn.q_proj.in_features, attn.k_proj.in_features
    hidden, states, step = randn(1, 3, width), randn(1, 4, image_width), randn(1, 1, width)
    visible = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool, device=weight.device)
    mask = torch.zeros(1, 1, 3, 4, dtype=weight.dtype, device=weight.device)
    mask = mask.masked_fill(~visible, torch.finfo(weight.dtype).min)
    # The cache's keyword in the installed transformers' signature ("cache", earlier "past_key_values").
    name = "cache" if "cache" in inspect.signature(type(attn).forward).parameters else "past_key_values"

    def run(module):
        cache = {name: DynamicCache()}
        if attn.layer_idx:
            # Before 5.24 the layer reads its cached keys only where layer 0 of the cache holds tokens,
            # as the model's first (self-attention) layer does.
            empty = torch.zeros(1, attn.num_key_value_heads, 1, attn.head_dim, dtype=weight.dtype, device=weight.device)
            cache[name].update(empty, empty, 0)
        prefill = module(
            hidden_states=hidden, cross_attention_states=states, attention_mask=mask, use_cache=True, **cache
        )[0]
        decode = module(
            hidden_states=step, cross_attention_states=None, attention_mask=mask[:, :, :1], use_cache=True, **cache
        )[0]
        return prefill, decode

    return Sample(path, run, "3 text rows and 4 image tokens with a cache, then one decode row")


def mllama_cross_attention_inputs(cross_attention_mask, num_vision_tokens: int, dtype: torch.dtype):
    """What transformers' ``_prepare_cross_attention_mask`` tells the text model, without its dense mask.

    Args:
        cross_attention_mask: ``[B, Lq, n_images, n_tiles]`` (the processor's mask, any dtype).
        num_vision_tokens: tokens per tile (the vision tower's ``num_patches``).
        dtype: the model's dtype (that of transformers' masks).

    Returns:
        ``((kv_start, kv_end), full_text_row_masked_out_mask)``: int32 ``[B, Lq]`` key ranges, where a
        row that sees no tile gets every key (transformers zeroes such rows of its additive mask),
        and ``[B, 1, Lq, 1]`` in ``dtype``, 1 where the row sees a tile, else 0.

    A tile is visible where transformers' inverted mask ``(1.0 - mask).to(dtype)`` is 0, the entries
    its additive mask leaves at 0: this reads ``[B, Lq, n_images, n_tiles]`` entries, never
    ``[B, Lq, Lk]``.
    """
    visible = (1.0 - cross_attention_mask).to(dtype) == 0
    ranges = mllama_kv_ranges(visible, num_vision_tokens, masked_rows="all")
    B, Lq = visible.shape[:2]
    rows = visible.reshape(B, 1, Lq, -1).any(-1, keepdim=True).to(dtype)
    return ranges, rows


def _mllama_model_forward(
    self,
    input_ids=None,
    pixel_values=None,
    aspect_ratio_mask=None,
    aspect_ratio_ids=None,
    attention_mask=None,
    cross_attention_mask=None,
    cross_attention_states=None,
    position_ids=None,
    cache=None,
    inputs_embeds=None,
    use_cache=None,
    past_key_values=None,
    **kwargs,
):
    """transformers' ``MllamaModel.forward`` with the key ranges of
    :func:`mllama_cross_attention_inputs` in place of ``_prepare_cross_attention_mask``'s dense mask.

    Serves both generations of the code (:func:`_text_model_code`, read by :func:`_model_forward`):
    the cache comes as ``cache`` (transformers >= 5.24, which still takes ``past_key_values``) or
    ``past_key_values``. The mask rows
    of the tokens being processed are the whole mask when it has one row per token, else rows
    ``[past, past + seq_len)`` (``past``: the cache's length), as transformers >= 5.24 takes them;
    before 5.24 transformers took rows ``[past, past + seq_len)`` always, which is the same wherever
    it ran (its ``generate`` passes the mask of every row so far).
    """
    cache = past_key_values if cache is None else cache
    if (input_ids is None) ^ (inputs_embeds is not None):
        raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
    if pixel_values is not None and cross_attention_states is not None:
        raise ValueError("`pixel_values` and `cross_attention_states` cannot be provided simultaneously")

    vision_outputs = None
    if pixel_values is not None:
        if aspect_ratio_ids is None:
            raise ValueError("`aspect_ratio_ids` must be provided if `pixel_values` is provided")
        vision_outputs = self.vision_model(
            pixel_values=pixel_values, aspect_ratio_ids=aspect_ratio_ids, aspect_ratio_mask=aspect_ratio_mask
        )
        cross_attention_states = vision_outputs.last_hidden_state
        cross_attention_states = self.multi_modal_projector(cross_attention_states).reshape(
            -1, cross_attention_states.shape[-2], self.hidden_size
        )

    full_text_row_masked_out_mask = None
    if cross_attention_mask is not None:
        seq_len = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        if cross_attention_mask.shape[1] != seq_len:
            # A cache's length, as transformers reads it (an int; a 0-dim tensor for static caches).
            past_seen_tokens = int(cache.get_seq_length()) if cache is not None else 0
            cross_attention_mask = cross_attention_mask[:, past_seen_tokens : past_seen_tokens + seq_len]
        cross_attention_mask, full_text_row_masked_out_mask = mllama_cross_attention_inputs(
            cross_attention_mask, self.vision_model.num_patches, self.dtype
        )

    cache_keyword, output_class = _TEXT_MODEL_CODE
    outputs = self.language_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cross_attention_states=cross_attention_states,
        cross_attention_mask=cross_attention_mask,
        full_text_row_masked_out_mask=full_text_row_masked_out_mask,
        use_cache=use_cache,
        inputs_embeds=inputs_embeds,
        **{cache_keyword: cache},
        **kwargs,
    )
    if output_class.__name__ == "MultimodalBaseModelOutputWithPast":
        return output_class(**outputs, image_outputs=vision_outputs)
    return output_class(
        last_hidden_state=outputs.last_hidden_state,
        past_key_values=outputs.past_key_values,
        hidden_states=outputs.hidden_states,
        attentions=outputs.attentions,
    )


# _text_model_code(), set when the forward is built: the forward reads plain values (torch.compile
# traces it).
_TEXT_MODEL_CODE = None


def _text_model_code():
    """What differs between the generations of the installed transformers' Mllama code, read once:
    the keyword ``MllamaTextModel.forward`` takes its cache by (``cache`` from 5.24, before it
    ``past_key_values``) and the output class of ``MllamaModel.forward``
    (``MultimodalBaseModelOutputWithPast`` from 5.24, before it ``BaseModelOutputWithPast``)."""
    from transformers.models.mllama import modeling_mllama

    parameters = inspect.signature(modeling_mllama.MllamaTextModel.forward).parameters
    output_class = getattr(modeling_mllama, "MultimodalBaseModelOutputWithPast", None)
    return (
        "cache" if "cache" in parameters else "past_key_values",
        output_class or modeling_mllama.BaseModelOutputWithPast,
    )


@functools.cache
def _model_forward():
    """_mllama_model_forward in transformers' ``can_return_tuple`` (``return_dict``), built on first use:
    transformers is optional. It carries the tag ``vlmops_model_forward``."""
    from transformers.utils.generic import can_return_tuple

    global _TEXT_MODEL_CODE
    _TEXT_MODEL_CODE = _text_model_code()
    forward = can_return_tuple(_mllama_model_forward)
    forward.vlmops_model_forward = "Mllama"
    return forward


def _model_patched(module):
    # Reads the tag only: deciding whether a module is patched imports nothing from transformers.
    return getattr(getattr(module.forward, "__func__", None), "vlmops_model_forward", None) == "Mllama"


def _cross_attention_layers(model, path):
    """{path: cross-attention module} of the text model's cross-attention decoder layers."""
    prefix = f"{path}." if path else ""
    layers = getattr(getattr(model, "language_model", None), "layers", ())
    return {
        f"{prefix}language_model.layers.{i}.cross_attn": layer.cross_attn
        for i, layer in enumerate(layers)
        if hasattr(layer, "cross_attn")
    }


def _model_refusal(root, model, path):
    """Every cross-attention layer of the text model must run on key ranges: vlmops' (in transformers'
    placement of the row mask), or transformers' where the layer rule's check passes."""
    if not hasattr(model, "vision_model") or not hasattr(model, "language_model"):
        return "the model has no vision_model and language_model, whose forward this rule replaces"
    cross_attention = resolve_or_none(f"{MLLAMA}:MllamaTextCrossAttention")
    for layer_path, attn in _cross_attention_layers(model, path).items():
        if isinstance(attn, MllamaCrossAttention):
            if attn.placement != "transformers":
                return f"{layer_path}: placement {attn.placement!r} is not transformers' row-mask placement"
        elif cross_attention is not None and isinstance(attn, cross_attention):
            reason = _cross_attention_refusal(root, attn, layer_path)
            if reason:
                return f"{layer_path}: {reason}"
        else:
            return f"{layer_path}: {type(attn).__name__} takes transformers' dense mask, not key ranges"
    return None


def _patch_model(root, model, path):
    replacements = []
    for layer_path, attn in _cross_attention_layers(model, path).items():
        if not isinstance(attn, MllamaCrossAttention):
            replacements.extend(_patch_cross_attention(root, attn, layer_path))
    model.forward = types.MethodType(_model_forward(), model)
    replacements.append(
        Replacement(path, "MllamaModel.forward", "vlmops forward (key ranges from cross_attention_mask, no dense mask)")
    )
    return replacements


def _model_sample(root, model, path):
    """verify=True on the model: 4 text rows (row 0 before the image, rows 1-2 see both tiles, row 3
    the first) attending to one image of 2 tiles given as ``cross_attention_states`` (the model's
    width), with a fresh cache; then one decode row whose mask row is the prompt's last, passed with
    the prompt's rows (the form every release's forward slices)."""
    from transformers.cache_utils import DynamicCache

    weight = model.language_model.embed_tokens.weight
    generator = torch.Generator().manual_seed(0)
    tiles, tokens = 2, model.vision_model.num_patches
    states = torch.randn(1, tiles * tokens, weight.shape[1], generator=generator).to(weight.device, weight.dtype)
    ids = torch.randint(0, model.config.text_config.vocab_size, (1, 5), generator=generator).to(weight.device)
    mask = torch.tensor([[0, 0], [1, 1], [1, 1], [1, 0]], device=weight.device)[None, :, None, :]
    name = "cache" if "cache" in inspect.signature(type(model.language_model).forward).parameters else "past_key_values"

    def run(module):
        cache = {name: DynamicCache()}
        prefill = module(
            input_ids=ids[:, :4], cross_attention_states=states, cross_attention_mask=mask, use_cache=True, **cache
        ).last_hidden_state
        decode = module(
            input_ids=ids[:, 4:], cross_attention_mask=torch.cat([mask, mask[:, -1:]], 1), use_cache=True, **cache
        )
        return prefill, decode.last_hidden_state

    return Sample(path, run, "4 text rows and one image of 2 tiles with a cache, then one decode row")


RULES = [
    Rule(
        family="Mllama",
        kind="cross_attention",
        target=f"{MLLAMA}:MllamaTextCrossAttention",
        # The replaced forward, the layer that calls it (row mask placement), the mask it reads.
        guarded=(
            f"{MLLAMA}:MllamaTextCrossAttention.forward",
            f"{MLLAMA}:MllamaCrossAttentionDecoderLayer.forward",
            f"{MLLAMA}:_prepare_cross_attention_mask",
            f"{MLLAMA}:MllamaModel.forward",
        ),
        apply=_patch_cross_attention,
        patched=lambda module: isinstance(module, MllamaCrossAttention),
        replaces_matched=True,
        check=_cross_attention_refusal,
        sample=_cross_attention_sample,
    ),
    Rule(
        family="Mllama",
        kind="cross_attention_mask",
        target=f"{MLLAMA}:MllamaModel",
        # The replaced forward, the mask function it stands for (ranges and row mask), the text model
        # and decoder layer that carry both to the cross-attention layers, and the layers it replaces.
        guarded=(
            f"{MLLAMA}:MllamaModel.forward",
            f"{MLLAMA}:_prepare_cross_attention_mask",
            f"{MLLAMA}:MllamaTextModel.forward",
            f"{MLLAMA}:MllamaCrossAttentionDecoderLayer.forward",
            f"{MLLAMA}:MllamaTextCrossAttention.forward",
        ),
        requires=("transformers.utils.generic:can_return_tuple",),
        apply=_patch_model,
        patched=_model_patched,
        replaces_matched=False,
        check=_model_refusal,
        sample=_model_sample,
    ),
]
