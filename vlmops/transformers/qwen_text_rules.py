"""Patch rules of the Qwen2-VL, Qwen2.5-VL and Qwen3-VL language models: the decoder's M-RoPE.

"rope" (part "text"), on the text model (``Qwen2VLTextModel``, ``Qwen2_5_VLTextModel``,
``Qwen3VLTextModel``):

- its rotary module -> ``vlmops.nn.MRotaryEmbedding(output="rope")``, which returns the batch's
  positions (transformers' ``position_ids [3, B, S]``, as the model computes them with
  ``get_rope_index``, viewed as ``[B, S, 3]``) and the per-pair tables (``mrope_section``: contiguous
  sections for Qwen2/2.5-VL, interleaved for Qwen3-VL) instead of cos/sin tables ``[B, S, head_dim]``;
- every decoder layer's attention -> transformers' own attention forward, in which the one function
  that rotates q and k (``apply_rotary_pos_emb``; ``apply_multimodal_rotary_pos_emb`` before
  transformers 5.17) is ``vlmops.apply_rope``: q and k are rotated in one pass, the angles computed in
  registers from the positions. Everything else (projections, Qwen3-VL's q/k norms, the KV cache, the
  attention implementation) stays transformers' code of the installed release.

Applied where the rotary module is the default rope type (no scaling) and ``rope`` takes the
attention's heads, key/value heads, head dim and dtype; all the text model's layers or none. The rule
has a variant for transformers 5.10-5.16, whose rotary modules return cos/sin per axis (Qwen2/2.5-VL
pick the sections in ``apply_multimodal_rotary_pos_emb``, Qwen3-VL in ``apply_interleaved_mrope``).
"""

import functools
import inspect
import types

import torch

from vlmops.nn.rope import MRotaryEmbedding
from vlmops.ops.rope import RopeTables, apply_rope
from vlmops.transformers.patch import Replacement, Rule, Sample, _written, heads_of, resolve_or_none, rope_refusal

QWEN2 = "transformers.models.qwen2_vl.modeling_qwen2_vl"
QWEN2_5 = "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl"
QWEN3 = "transformers.models.qwen3_vl.modeling_qwen3_vl"

_LAYOUTS = {1: "bhsd", 2: "bshd"}  # apply_rotary_pos_emb's unsqueeze_dim -> the layout of q and k


def _rotation(spec):
    """What the patched attention calls where transformers' forward calls the function ``spec`` names
    (``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)`` or
    ``apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim=1)``).

    The forward unpacks its ``position_embeddings`` as ``cos, sin``: an :class:`vlmops.nn.MRope`
    unpacks as ``(positions [B, S, 3], tables)``, which arrive here in their places, and q and k
    (``[B, H, S, D]``) are rotated by ``vlmops.apply_rope``. The M-RoPE sections are in the tables, so
    the ``mrope_section`` argument of the older function is not read. Given transformers' own
    ``(cos, sin)``, it runs that function."""
    transformers_function = resolve_or_none(spec)
    # unsqueeze_dim's place among the arguments after sin (after mrope_section in the older function), read
    # from the function as its module writes it (kernels' hub decorator may wrap it in a module).
    module, _, name = spec.partition(":")
    written = _written(transformers_function, name, module)
    place = list(inspect.signature(written).parameters).index("unsqueeze_dim") - 4

    def rotate(q, k, cos, sin, *args, **kwargs):
        if not isinstance(sin, RopeTables):
            return transformers_function(q, k, cos, sin, *args, **kwargs)
        unsqueeze_dim = args[place] if len(args) > place else kwargs.get("unsqueeze_dim", 1)
        return apply_rope(q, k, cos, *sin, layout=_LAYOUTS[unsqueeze_dim])

    return rotate


def _cell_contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _with_globals(function, names: dict):
    """A copy of ``function`` in which the global ``names`` resolve to the objects given (the other
    globals to those of its module when the copy is made). Wrappers that ``functools.wraps`` put
    around it and that hold it in their closure (``deprecate_kwarg``'s) are rebuilt around the copy.
    Raises ValueError when the function does not read one of the names, or a wrapper does not hold
    the function it wraps."""
    inner = getattr(function, "__wrapped__", None)
    if inner is None:
        missing = sorted(set(names) - set(function.__code__.co_names))
        if missing:
            raise ValueError(f"{function.__qualname__} does not call {', '.join(missing)}")
        scope = {**function.__globals__, **names}
        closure = function.__closure__
    else:
        copy = _with_globals(inner, names)
        cells = function.__closure__ or ()
        if not any(_cell_contents(cell) is inner for cell in cells):
            raise ValueError(f"a wrapper of {function.__qualname__} does not hold the function it wraps")
        scope = function.__globals__
        closure = tuple(types.CellType(copy) if _cell_contents(cell) is inner else cell for cell in cells)
    rebuilt = types.FunctionType(function.__code__, scope, function.__name__, function.__defaults__, closure)
    rebuilt.__kwdefaults__ = function.__kwdefaults__
    rebuilt.__dict__.update(function.__dict__)
    rebuilt.__qualname__, rebuilt.__doc__ = function.__qualname__, function.__doc__
    if inner is not None:
        rebuilt.__wrapped__ = copy
    return rebuilt


@functools.cache
def _attention_forward(attention_cls, rotate_spec):
    """``attention_cls.forward`` with the global named by ``rotate_spec`` ("module:function") bound to
    :func:`_rotation` of it."""
    name = rotate_spec.rpartition(":")[2]
    return _with_globals(attention_cls.forward, {name: _rotation(rotate_spec)})


def _mrope_section(rotary):
    """The rotary module's ``mrope_section`` (transformers >= 5.17), else its config's (the value the
    attention of 5.10-5.16 reads)."""
    sections = getattr(rotary, "mrope_section", None)
    if sections is None:
        sections = getattr(rotary.config, "rope_parameters", None) or {}
        if "mrope_section" not in sections:
            raise ValueError("the text config's rope_parameters have no mrope_section")
        sections = sections["mrope_section"]
    return sections


def _factory(interleaved):
    return lambda rotary: MRotaryEmbedding.from_module(rotary, interleaved, _mrope_section(rotary), output="rope")


def _patched(rotary_name):
    """Is a text model the product of the rule whose rotary class is ``rotary_name``? Reads the module
    only: deciding whether a module is patched imports nothing from transformers."""

    def patched(text_model):
        rotary = getattr(text_model, "rotary_emb", None)
        return isinstance(rotary, MRotaryEmbedding) and rotary.output == "rope" and rotary.replaces == rotary_name

    return patched


def _check(rotary_spec, attention_spec, rotate_spec, interleaved):
    def check(root, text_model, path):
        prefix = f"{path}." if path else ""
        rotary_cls, attention_cls = resolve_or_none(rotary_spec), resolve_or_none(attention_spec)
        rotary = getattr(text_model, "rotary_emb", None)
        if type(rotary) is not rotary_cls:
            return f"{prefix}rotary_emb is a {type(rotary).__name__}, not transformers' {rotary_cls.__name__}"
        consumers = {}
        for index, layer in enumerate(text_model.layers):
            attn, where = layer.self_attn, f"{prefix}layers.{index}.self_attn"
            if type(attn) is not attention_cls or "forward" in vars(attn):
                return f"{where} is not transformers' {attention_cls.__name__} with its own forward"
            heads, kv_heads = attn.config.num_attention_heads, attn.config.num_key_value_heads
            consumers[where] = (heads_of(attn.q_proj, heads), heads_of(attn.k_proj, kv_heads))
        try:
            _attention_forward(attention_cls, rotate_spec)
        except ValueError as error:
            return str(error)
        return rope_refusal(_factory(interleaved), rotary, consumers)

    return check


def _apply(attention_spec, rotate_spec, interleaved):
    def apply(root, text_model, path):
        prefix = f"{path}." if path else ""
        rotary = text_model.rotary_emb
        text_model.rotary_emb = _factory(interleaved)(rotary)
        replacements = [Replacement(f"{prefix}rotary_emb", type(rotary).__name__, "vlmops.nn.MRotaryEmbedding")]
        forward = _attention_forward(resolve_or_none(attention_spec), rotate_spec)
        for index, layer in enumerate(text_model.layers):
            attn = layer.self_attn
            attn.forward = types.MethodType(forward, attn)
            replacements.append(
                Replacement(
                    f"{prefix}layers.{index}.self_attn",
                    f"{type(attn).__name__}.forward",
                    "transformers' attention forward rotating q and k with vlmops.rope",
                )
            )
        return replacements

    return apply


def _sample(root, text_model, path):
    """verify=True on a text model: 8 rows of hidden states at 3-D positions that differ per axis (t, h
    and w), through the whole text model, without a cache."""
    weight = text_model.embed_tokens.weight
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(1, 8, weight.shape[1], generator=generator).to(weight.device, weight.dtype)
    s = torch.arange(8, device=weight.device)
    position_ids = torch.stack((s, s // 2, s % 3))[:, None]

    def run(model):
        return model(inputs_embeds=rows, position_ids=position_ids, use_cache=False).last_hidden_state

    return Sample(path, run, "8 rows of hidden states at 3-D positions")


def _rules(family, module, text_model, layer, attention, rotary, interleaved, legacy):
    """The two variants of one family's rule. ``legacy``: (the rotation function, the rotary module's
    methods) of transformers 5.10-5.16; the current variant's are ``apply_rotary_pos_emb`` and the
    rotary module's ``recomposition_frequencies``."""

    def spec(name):
        return f"{module}:{name}"

    def rule(rotate, rotary_methods, **variant):
        guarded = (
            spec(f"{text_model}.forward"),
            spec(f"{layer}.forward"),
            spec(f"{attention}.__init__"),
            spec(f"{attention}.forward"),
            spec(rotate),
            spec(f"{rotary}.__init__"),
            spec(f"{rotary}.compute_default_rope_parameters"),
            spec(f"{rotary}.forward"),
            *(spec(f"{rotary}.{method}") for method in rotary_methods),
        )
        return Rule(
            family=family,
            kind="rope",
            part="text",
            target=spec(text_model),
            guarded=guarded,
            apply=_apply(spec(attention), spec(rotate), interleaved),
            patched=_patched(rotary),
            replaces_matched=False,
            check=_check(spec(rotary), spec(attention), spec(rotate), interleaved),
            sample=_sample,
            **variant,
        )

    def serves_legacy():
        cls = resolve_or_none(spec(rotary))
        return cls is not None and not hasattr(cls, "recomposition_frequencies")

    legacy_rotate, legacy_methods = legacy
    return [
        rule(
            legacy_rotate,
            legacy_methods,
            serves=serves_legacy,
            api="rotary modules returning cos/sin per axis (transformers 5.10-5.16)",
        ),
        rule("apply_rotary_pos_emb", ("recomposition_frequencies",)),
    ]


RULES = [
    *_rules(
        "Qwen2-VL",
        QWEN2,
        "Qwen2VLTextModel",
        "Qwen2VLDecoderLayer",
        "Qwen2VLAttention",
        "Qwen2VLRotaryEmbedding",
        False,
        ("apply_multimodal_rotary_pos_emb", ()),
    ),
    *_rules(
        "Qwen2.5-VL",
        QWEN2_5,
        "Qwen2_5_VLTextModel",
        "Qwen2_5_VLDecoderLayer",
        "Qwen2_5_VLAttention",
        "Qwen2_5_VLRotaryEmbedding",
        False,
        ("apply_multimodal_rotary_pos_emb", ()),
    ),
    *_rules(
        "Qwen3-VL",
        QWEN3,
        "Qwen3VLTextModel",
        "Qwen3VLTextDecoderLayer",
        "Qwen3VLTextAttention",
        "Qwen3VLTextRotaryEmbedding",
        True,
        ("apply_rotary_pos_emb", ("apply_interleaved_mrope",)),
    ),
]
