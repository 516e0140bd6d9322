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
"""

import functools
import types

import torch
import torch.nn.functional as F

from vlmops.nn.attention import PackedVisionAttention
from vlmops.nn.patch_embed import PatchEmbed
from vlmops.nn.rope import VisionRotaryEmbedding
from vlmops.models.pixtral import pixtral_rope_positions
from vlmops.transformers.norm_mlp_rules import norm_mlp_rules
from vlmops.transformers.patch import (
    Replacement,
    Rule,
    attention_options_refusal,
    build_refusal,
    heads_of,
    parent_of,
    patch_conv_refusal,
    replace_module,
    rope_refusal,
    varlen_refusal,
)

PIXTRAL = "transformers.models.pixtral.modeling_pixtral"


def _pixtral_forward(self, pixel_values, image_sizes=None, **kwargs):
    """PixtralVisionModel.forward on vlmops ops (same outputs).

    The images' patches are packed with one boolean gather: its length depends on image_sizes, so
    that gather is the forward's only host sync (transformers loops over the images instead)."""
    batch, _, height, width = pixel_values.shape
    P = self.patch_size
    device = pixel_values.device
    if image_sizes is None:
        image_sizes = torch.tensor([[height, width]], device=device).expand(batch, 2)
    grid = torch.as_tensor(image_sizes, device=device).long() // P  # [B, 2] patch rows, columns
    # nn.Conv2d drops a remainder smaller than a patch; a view does the same.
    pixels = pixel_values[..., : height - height % P, : width - width % P].to(self.patch_conv.weight.dtype)
    embeds = self.patch_conv(pixels)  # [B, D, H/P, W/P]
    rows = torch.arange(embeds.shape[2], device=device)
    cols = torch.arange(embeds.shape[3], device=device)
    inside = (rows[None, :, None] < grid[:, 0, None, None]) & (cols[None, None, :] < grid[:, 1, None, None])
    patch_embeds = self.ln_pre(embeds.permute(0, 2, 3, 1)[inside].unsqueeze(0))
    num_tokens = patch_embeds.shape[1]
    positions = pixtral_rope_positions(grid, num_tokens=num_tokens)
    cu_seqlens = F.pad(grid.prod(-1).cumsum(0), (1, 0)).to(torch.int32)
    if isinstance(self.patch_positional_embedding, VisionRotaryEmbedding):
        position_embeddings = self.patch_positional_embedding.rope(positions)
    else:
        position_embeddings = self.patch_positional_embedding(patch_embeds, positions)
    return self.transformer(patch_embeds, attention_mask=None, position_embeddings=position_embeddings,
                            cu_seqlens=cu_seqlens, **kwargs)


# What the tower forward calls in transformers besides the guarded functions.
_DECORATORS = ("transformers.utils.generic:merge_with_config_defaults",
               "transformers.utils.output_capturing:capture_outputs")


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


def _rope_refusal(root, rotary, path):
    """The rotary module against the attention of each layer of the tower that holds it."""
    layers = _layers(parent_of(root, path), path.rpartition(".")[0])
    return rope_refusal(rotary, "pixtral", {p: _attention_shapes(attn)[:2] for p, attn in layers.items()})


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
            replacements.append(Replacement(f"{prefix}transformer.layers.{index}.attention", old,
                                            "vlmops.nn.PackedVisionAttention"))
    tower.forward = types.MethodType(_forward(), tower)
    replacements.append(Replacement(path, "PixtralVisionModel.forward",
                                    "vlmops tower forward (metadata built once on device, varlen attention)"))
    return replacements


def _patch_conv(root, tower, path):
    prefix = f"{path}." if path else ""
    tower.patch_conv = PatchEmbed.from_conv(tower.patch_conv)
    return [Replacement(f"{prefix}patch_conv", "Conv2d", "vlmops.nn.PatchEmbed")]


_TOWER = f"{PIXTRAL}:PixtralVisionModel"

# sha256 of the source in transformers 5.24.0 (see vlmops.transformers.patch.check_guarded).
RULES = [
    Rule(family="Pixtral", kind="patch_embed", target=_TOWER,
         guarded={
             f"{PIXTRAL}:PixtralVisionModel.forward": "52f519f669370edd917ffe25fd0f90e7158264679e65b7e691ea897e122fa862",
             f"{PIXTRAL}:PixtralVisionModel.__init__": "1ebb59ede05b9f8ca51fa8249809d433a59dc5dc1499c31df34bb19b09bd0f70",
         },
         apply=_patch_conv, patched=lambda m: isinstance(getattr(m, "patch_conv", None), PatchEmbed),
         replaces_matched=False, check=_patch_conv_refusal),
    Rule(family="Pixtral", kind="rope", target=f"{PIXTRAL}:PixtralVisionRotaryEmbedding",
         guarded={
             f"{PIXTRAL}:PixtralVisionRotaryEmbedding.forward": "ea8611d2000fe659053baabf4cbe3f275e1517b7b41d6a80b8b1028e4f306ca8",
             f"{PIXTRAL}:PixtralVisionRotaryEmbedding.recomposition_frequencies": "6ff4c7bd25df475da2023c56923fcabd14bcd382d554d0be40b4f49aef36e4f4",
             f"{PIXTRAL}:PixtralVisionRotaryEmbedding.compute_axial_rope_parameters": "0439f878c86ac53d350bfe215796c0e95e9ee742a893908cff43ffe8b1095a5a",
         },
         apply=replace_module(lambda m: VisionRotaryEmbedding.from_module(m, "pixtral"),
                              "vlmops.nn.VisionRotaryEmbedding"),
         patched=lambda m: isinstance(m, VisionRotaryEmbedding) and m.replaces == "PixtralVisionRotaryEmbedding",
         replaces_matched=True, check=_rope_refusal),
    Rule(family="Pixtral", kind="attention", target=_TOWER,
         guarded={
             f"{PIXTRAL}:PixtralVisionModel.forward": "52f519f669370edd917ffe25fd0f90e7158264679e65b7e691ea897e122fa862",
             f"{PIXTRAL}:PixtralVisionModel.__init__": "1ebb59ede05b9f8ca51fa8249809d433a59dc5dc1499c31df34bb19b09bd0f70",
             f"{PIXTRAL}:PixtralTransformer.forward": "539fd434754f0713ff1b8bd23088643bc6ac03bdd2d75f71231a180e35ee3411",
             f"{PIXTRAL}:PixtralAttentionLayer.forward": "c5f18fb1773552c7da709e01dd7041f05f8a0747f9cd935c92a36aad2be4efae",
             f"{PIXTRAL}:PixtralAttention.forward": "8eafcfc54e81f11c635a0038f32adf87abcab1cbd3e65df8f2ecc60d93f621c9",
             f"{PIXTRAL}:PixtralAttention.__init__": "49bb19497cc0d00d52f23bc3eee13e6bf8da7055f593c702e0dcaaccf3f96d31",
             f"{PIXTRAL}:apply_rotary_pos_emb": "14ef8b572d9c0bd1488bf65dfd1e1d4a70008016d097cf1e6ade055e3d1100ef",
         },
         apply=_patch_tower, patched=_tower_patched, replaces_matched=False, check=_tower_refusal,
         requires=_DECORATORS),
    *norm_mlp_rules("Pixtral", PIXTRAL, "PixtralRMSNorm", "PixtralMLP", {
        f"{PIXTRAL}:PixtralRMSNorm.forward": "790fa612e4fa57acfcbea31da45f92ba91f9016f7260ef539f61c5530ba06a5f",
        f"{PIXTRAL}:PixtralRMSNorm.__init__": "f94137b7bbd7ba5ad1481e6fadf79b43e58a3ea47d2beca6b490f84721720480",
        f"{PIXTRAL}:PixtralMLP.forward": "03df2d7685cf8446594448cbd33ef676a2b088779d99d9803abe3bed2ec7ad9b",
        f"{PIXTRAL}:PixtralMLP.__init__": "f8665938acefee57189a70093085547e2dbd73acf5732809c0f6827c9c89ee30",
    }),
]
