"""Patch rules of the Pixtral vision tower (``PixtralVisionModel``, also Mistral3's vision tower).

- "patch_embed": ``patch_conv`` (Conv2d) -> ``vlmops.nn.PatchEmbed`` (one GEMM, same ``patch_conv.weight``),
  where the conv is a patch embedding and ``patch_embed`` takes its weight.
- "rope": ``patch_positional_embedding`` -> ``vlmops.nn.VisionRotaryEmbedding`` (Pixtral convention),
  where ``rope`` takes the tower's heads, head dim and dtype.
- "attention": every layer's attention -> ``vlmops.nn.PackedVisionAttention``, and the tower's forward
  -> one that packs the images' patches, builds positions and cu_seqlens once per forward on the
  device, and runs varlen attention instead of SDPA with a dense ``[N, N]`` block-diagonal mask;
  where ``varlen_attention`` takes every layer's heads, head dim, dtype and scale, and no layer has
  dropout. All layers or none: the tower's forward serves the packed layers only.
- "norm": every ``PixtralRMSNorm`` -> ``vlmops.nn.RMSNorm``; "mlp": a SiLU ``PixtralMLP`` (Pixtral-12B,
  Mistral3) -> ``vlmops.nn.GatedMLP`` (see ``vlmops.transformers.norm_mlp_rules``).

The "rope" and "attention" rules have a variant for transformers 5.10-5.16, whose rotary module
``PixtralRotaryEmbedding`` holds a table of angles per flattened position (``vlmops.transformers.adapters``).
"""

import functools
import types

import torch
import torch.nn.functional as F

from vlmops.models._common import image_of_token
from vlmops.nn.attention import PackedVisionAttention
from vlmops.nn.patch_embed import PatchEmbed
from vlmops.nn.rope import VisionRotaryEmbedding
from vlmops.transformers.adapters import PixtralTableRotaryEmbedding, pixtral_cos_sin
from vlmops.transformers.norm_mlp_rules import norm_mlp_rules
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    Sample,
    attention_options_refusal,
    build_refusal,
    heads_of,
    parent_of,
    patch_conv_refusal,
    replace_module,
    resolve_or_none,
    rope_refusal,
    varlen_refusal,
)

PIXTRAL = "transformers.models.pixtral.modeling_pixtral"


def _num_patches(image_sizes, grid, P, batch, rows, cols):
    """The packed length sum over images of (h // P) * (w // P), each clamped to the batch's patch grid,
    from what the caller gave on the host: the batch's shape without image_sizes, Python sizes, or else
    one read of the image_sizes tensor (a device sync where it lives on a GPU)."""
    if image_sizes is None:
        return batch * rows * cols
    if isinstance(image_sizes, (list, tuple)):
        return sum(min(int(h) // P, rows) * min(int(w) // P, cols) for h, w in image_sizes)
    return int(grid.prod(-1).sum())


def _pixtral_forward(self, pixel_values, image_sizes=None, num_patches=None, **kwargs):
    """PixtralVisionModel.forward on vlmops ops (same outputs), with no host read when the packed length
    is known: ``image_sizes`` None (every image fills the batch) or Python ints, or ``num_patches``.

    The images' patches are packed by a gather whose indices are tensor code on the device (transformers
    loops over the images). ``num_patches``: the packed length, ``sum((h // P) * (w // P))`` over
    ``image_sizes``, which sizes the output; without it, it is computed from ``image_sizes`` (see
    ``_num_patches``). A larger ``num_patches`` pads the sequence: the tokens past the images' patches
    (copies of the first patch at position (0, 0)) form one segment of their own, which no image token
    attends to; with the exact count that segment is empty. A smaller one drops the last patches."""
    batch, _, height, width = pixel_values.shape
    P = self.patch_size
    device = pixel_values.device
    rows, cols = height // P, width // P
    if image_sizes is None:
        grid = _grid_limit(rows, cols, device).expand(batch, 2)
    else:
        # A slice past the batch's patch grid stops at its edge, as in transformers' loop.
        grid = torch.minimum(torch.as_tensor(image_sizes, device=device).long() // P, _grid_limit(rows, cols, device))
    # Computed here, the count is exactly the images' patches (a value the graph may not know when
    # read from image_sizes under torch.compile); the caller's may pad.
    exact = num_patches is None
    if exact:
        num_patches = _num_patches(image_sizes, grid, P, batch, rows, cols)
    # nn.Conv2d drops a remainder smaller than a patch; a view does the same.
    pixels = pixel_values[..., : rows * P, : cols * P].to(self.patch_conv.weight.dtype)
    embeds = self.patch_conv(pixels)  # [B, D, H/P, W/P]
    counts = grid.prod(-1)
    image, local = image_of_token(counts, num_patches)
    w = grid[image, 1].clamp(min=1)
    real = torch.arange(num_patches, device=device) < counts.sum()
    positions = torch.where(real[:, None], torch.stack((local // w, local % w), dim=-1), 0)
    # Gathered from the [B, H/P * W/P, D] view of the embeddings (no copy of the whole batch).
    patches = embeds.flatten(2).transpose(1, 2)[image, positions[:, 0] * cols + positions[:, 1]]
    patch_embeds = self.ln_pre(patches.unsqueeze(0))
    ends = counts.cumsum(0)
    if exact:
        cu_seqlens = F.pad(ends, (1, 0)).to(torch.int32)
    else:
        # The padding segment ends at num_patches; a fill kernel writes it (no host-to-device copy).
        cu_seqlens = F.pad(ends.clamp(max=num_patches), (1, 1), value=num_patches).to(torch.int32)
        cu_seqlens[:1].zero_()
    if isinstance(self.patch_positional_embedding, VisionRotaryEmbedding):
        position_embeddings = self.patch_positional_embedding.rope(positions)
    else:
        position_embeddings = pixtral_cos_sin(
            self.patch_positional_embedding, patch_embeds, positions, self.config.image_size // P
        )
    return self.transformer(
        patch_embeds, attention_mask=None, position_embeddings=position_embeddings, cu_seqlens=cu_seqlens, **kwargs
    )


def _grid_limit(rows: int, cols: int, device) -> torch.Tensor:
    """[2] (rows, cols) of the batch's patch grid, built on the device without a host-to-device copy."""
    return torch.stack((torch.full((), rows, device=device), torch.full((), cols, device=device))).long()


# What the tower forward calls in transformers besides the guarded functions.
_DECORATORS = (
    "transformers.utils.generic:merge_with_config_defaults",
    "transformers.utils.output_capturing:capture_outputs",
)


@functools.cache
def _forward():
    """_pixtral_forward in transformers' decorators (output_hidden_states, return_dict), built on first
    use: transformers is optional. It carries the tag ``vlmops_tower_forward``."""
    from transformers.utils.generic import merge_with_config_defaults
    from transformers.utils.output_capturing import capture_outputs

    forward = merge_with_config_defaults(capture_outputs(_pixtral_forward))
    forward.vlmops_tower_forward = "Pixtral"
    return forward


def _tower_patched(module):
    # Reads the tag only: deciding whether a module is patched imports nothing from transformers.
    return getattr(getattr(module.forward, "__func__", None), "vlmops_tower_forward", None) == "Pixtral"


def _attention_shapes(attn):
    """(q, k, v) of one token as PackedVisionAttention views the q/k/v projections."""
    return tuple(heads_of(projection, attn.num_heads) for projection in (attn.q_proj, attn.k_proj, attn.v_proj))


def _layers(tower, path):
    """{path: attention} of the tower's layers."""
    prefix = f"{path}." if path else ""
    layers = getattr(getattr(tower, "transformer", None), "layers", ())
    return {f"{prefix}transformer.layers.{i}.attention": layer.attention for i, layer in enumerate(layers)}


def _tower_refusal(root, tower, path):
    """Every layer's attention: options, then varlen_attention on its shapes."""
    for attention_path, attn in _layers(tower, path).items():
        reason = attention_options_refusal(attn, "dropout") or varlen_refusal(*_attention_shapes(attn), attn.scaling)
        if reason:
            return f"{attention_path}: {reason}"
    return None


def _rope_refusal(factory):
    """The replacement ``factory`` builds for the rotary module, against the attention of each layer of
    the tower that holds it."""

    def check(root, rotary, path):
        layers = _layers(parent_of(root, path), path.rpartition(".")[0])
        return rope_refusal(factory, rotary, {p: _attention_shapes(attn)[:2] for p, attn in layers.items()})

    return check


def _patch_conv_refusal(root, tower, path):
    """The conv and one image patch, then what vlmops.nn.PatchEmbed checks itself."""
    return patch_conv_refusal(tower.patch_conv) or build_refusal(PatchEmbed.from_conv, tower.patch_conv)


def _patch_tower(root, tower, path):
    prefix = f"{path}." if path else ""
    replacements = []
    for index, layer in enumerate(tower.transformer.layers):
        if not isinstance(layer.attention, PackedVisionAttention):
            old = type(layer.attention).__name__
            layer.attention = PackedVisionAttention.from_pixtral(layer.attention)
            replacements.append(
                Replacement(f"{prefix}transformer.layers.{index}.attention", old, "vlmops.nn.PackedVisionAttention")
            )
    tower.forward = types.MethodType(_forward(), tower)
    replacements.append(
        Replacement(
            path, "PixtralVisionModel.forward", "vlmops tower forward (metadata built once on device, varlen attention)"
        )
    )
    return replacements


def _patch_conv(root, tower, path):
    prefix = f"{path}." if path else ""
    tower.patch_conv = PatchEmbed.from_conv(tower.patch_conv)
    return [Replacement(f"{prefix}patch_conv", "Conv2d", "vlmops.nn.PatchEmbed")]


def _tower_sample(tower_path):
    """verify=True on a tower: one image of 2 x 3 patches in the patch conv's dtype, through the tower at
    ``tower_path(matched module's path)``."""

    def sample(root, module, path):
        scope = tower_path(path)
        tower = root.get_submodule(scope)
        weight = tower.patch_conv.weight
        P = tower.patch_size
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randn(1, weight.shape[1], 2 * P, 3 * P, generator=generator).to(weight.device, weight.dtype)
        sizes = torch.tensor([[2 * P, 3 * P]], device=weight.device)
        return Sample(scope, lambda t: t(pixels, image_sizes=sizes), "one image of 2x3 patches")

    return sample


def _rotary_patched(class_name):
    return lambda m: isinstance(m, VisionRotaryEmbedding) and m.replaces == class_name


_TOWER = f"{PIXTRAL}:PixtralVisionModel"
_TOWER_SPECS = (f"{PIXTRAL}:PixtralVisionModel.forward", f"{PIXTRAL}:PixtralVisionModel.__init__")
_ATTENTION_SPECS = (
    *_TOWER_SPECS,
    f"{PIXTRAL}:PixtralTransformer.forward",
    f"{PIXTRAL}:PixtralAttentionLayer.forward",
    f"{PIXTRAL}:PixtralAttention.forward",
    f"{PIXTRAL}:PixtralAttention.__init__",
    f"{PIXTRAL}:apply_rotary_pos_emb",
)
# transformers 5.10-5.16: the table rotary module, indexed by the positions this helper flattens.
_MESHGRID = f"{PIXTRAL}:position_ids_in_meshgrid"
_LEGACY = {
    "serves": lambda: resolve_or_none(f"{PIXTRAL}:PixtralRotaryEmbedding") is not None,
    "api": "table rotary module (transformers 5.10-5.16)",
}

RULES = [
    Rule(
        family="Pixtral",
        kind="patch_embed",
        target=_TOWER,
        guarded=_TOWER_SPECS,
        apply=_patch_conv,
        patched=lambda m: isinstance(getattr(m, "patch_conv", None), PatchEmbed),
        replaces_matched=False,
        check=_patch_conv_refusal,
        sample=_tower_sample(lambda path: path),
    ),
    Rule(
        family="Pixtral",
        kind="rope",
        target=f"{PIXTRAL}:PixtralRotaryEmbedding",
        guarded=(
            f"{PIXTRAL}:PixtralRotaryEmbedding.__init__",
            f"{PIXTRAL}:PixtralRotaryEmbedding.forward",
            f"{PIXTRAL}:PixtralRotaryEmbedding.compute_default_rope_parameters",
            _MESHGRID,
        ),
        apply=replace_module(PixtralTableRotaryEmbedding.from_table_module, "vlmops.nn.VisionRotaryEmbedding"),
        patched=_rotary_patched("PixtralRotaryEmbedding"),
        replaces_matched=True,
        check=_rope_refusal(PixtralTableRotaryEmbedding.from_table_module),
        sample=_tower_sample(lambda path: path.rpartition(".")[0]),
        **_LEGACY,
    ),
    Rule(
        family="Pixtral",
        kind="rope",
        target=f"{PIXTRAL}:PixtralVisionRotaryEmbedding",
        guarded=(
            f"{PIXTRAL}:PixtralVisionRotaryEmbedding.forward",
            f"{PIXTRAL}:PixtralVisionRotaryEmbedding.recomposition_frequencies",
            f"{PIXTRAL}:PixtralVisionRotaryEmbedding.compute_axial_rope_parameters",
        ),
        apply=replace_module(
            lambda m: VisionRotaryEmbedding.from_module(m, "pixtral"), "vlmops.nn.VisionRotaryEmbedding"
        ),
        patched=_rotary_patched("PixtralVisionRotaryEmbedding"),
        replaces_matched=True,
        check=_rope_refusal(lambda m: VisionRotaryEmbedding.from_module(m, "pixtral")),
        sample=_tower_sample(lambda path: path.rpartition(".")[0]),
    ),
    *(
        Rule(
            family="Pixtral",
            kind="attention",
            target=_TOWER,
            guarded=guarded,
            apply=_patch_tower,
            patched=_tower_patched,
            replaces_matched=False,
            check=_tower_refusal,
            requires=_DECORATORS,
            sample=_tower_sample(lambda path: path),
            **variant,
        )
        for guarded, variant in (((*_ATTENTION_SPECS, _MESHGRID), _LEGACY), (_ATTENTION_SPECS, {}))
    ),
    *norm_mlp_rules("Pixtral", PIXTRAL, "PixtralRMSNorm", "PixtralMLP"),
]
