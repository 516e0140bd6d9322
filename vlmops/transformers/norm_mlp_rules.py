"""Patch rules for the RMSNorm and SiLU gated-MLP modules that several families define alike
(Qwen2.5-VL's ``Qwen2_5_VLRMSNorm`` / ``Qwen2_5_VLMLP``, Pixtral's ``PixtralRMSNorm`` / ``PixtralMLP``).

- "norm": the family's RMSNorm -> ``vlmops.nn.RMSNorm`` (``rms_norm``).
- "mlp": the family's gated MLP, when its ``act_fn`` is SiLU -> ``vlmops.nn.GatedMLP`` (``silu_mul``;
  gate/up GEMMs with 64-byte-aligned output rows on CPU). An MLP with another activation is left as
  it is.
"""

from vlmops.nn.mlp import GatedMLP, is_silu
from vlmops.nn.norm import RMSNorm
from vlmops.transformers.patch import Rule, replace_module

def norm_mlp_rules(family: str, module: str, norm: str, mlp: str, guarded: dict) -> list:
    """The "norm" and "mlp" rules of ``family`` for ``module:norm`` and ``module:mlp``; ``guarded``
    holds the fingerprints of both classes' ``__init__`` and ``forward``."""

    def only(name):
        return {k: v for k, v in guarded.items() if k.startswith(f"{module}:{name}.")}

    return [
        Rule(family=family, kind="norm", target=f"{module}:{norm}", guarded=only(norm),
             apply=replace_module(RMSNorm, "vlmops.nn.RMSNorm"),
             patched=lambda m: isinstance(m, RMSNorm) and m.replaces == norm, replaces_matched=True),
        Rule(family=family, kind="mlp", target=f"{module}:{mlp}", guarded=only(mlp),
             apply=replace_module(GatedMLP, "vlmops.nn.GatedMLP"),
             patched=lambda m: isinstance(m, GatedMLP) and m.replaces == mlp, replaces_matched=True,
             matches=lambda m: is_silu(m.act_fn)),
    ]
