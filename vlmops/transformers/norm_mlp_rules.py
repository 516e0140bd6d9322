"""Patch rules for the RMSNorm and SiLU gated-MLP modules that several families define alike
(Qwen2.5-VL's ``Qwen2_5_VLRMSNorm`` / ``Qwen2_5_VLMLP``, Pixtral's ``PixtralRMSNorm`` / ``PixtralMLP``).

- "norm": the family's RMSNorm -> ``vlmops.nn.RMSNorm`` (``rms_norm``), where the op takes the norm's
  width, dtype and eps.
- "mlp": the family's gated MLP -> ``vlmops.nn.GatedMLP`` (``silu_mul``; gate/up GEMMs with
  64-byte-aligned output rows on CPU), where its ``act_fn`` is SiLU and the op takes its width and
  dtype. An MLP with another activation is left as it is (and reported as skipped).
"""

import torch

from vlmops.nn.mlp import GatedMLP
from vlmops.nn.norm import RMSNorm
from vlmops.transformers.patch import Rule, Sample, Zeros, build_refusal, op_refusal, replace_module


def _norm_refusal(root, norm, path):
    """rms_norm on one row ``[1, C]`` in the weight's dtype, with the norm's weight and eps."""
    weight = norm.weight
    return op_refusal(
        "rms_norm", Zeros((1, weight.shape[-1]), weight.dtype), Zeros.like(weight), float(norm.variance_epsilon)
    )


def _mlp_refusal(root, mlp, path):
    """GatedMLP's own checks (a SiLU act_fn), then silu_mul on one row of the gate and up projections."""
    reason = build_refusal(GatedMLP, mlp)
    if reason:
        return reason
    gate, up = mlp.gate_proj, mlp.up_proj
    return op_refusal(
        "silu_mul", Zeros((1, gate.out_features), gate.weight.dtype), Zeros((1, up.out_features), up.weight.dtype)
    )


def _rows_sample(width):
    """verify=True on the module itself: a few rows [1, 4, width(module)] in its weight's dtype."""

    def sample(root, module, path):
        weight = next(module.parameters())
        generator = torch.Generator().manual_seed(0)
        rows = torch.randn(1, 4, width(module), generator=generator).to(weight.device, weight.dtype)
        return Sample(path, lambda m: m(rows), f"4 rows of width {rows.shape[-1]}")

    return sample


def norm_mlp_rules(family: str, module: str, norm: str, mlp: str) -> list:
    """The "norm" and "mlp" rules of ``family`` for ``module:norm`` and ``module:mlp``; each relies on
    its class's ``__init__`` and ``forward``."""

    def own(name):
        return (f"{module}:{name}.forward", f"{module}:{name}.__init__")

    return [
        Rule(
            family=family,
            kind="norm",
            target=f"{module}:{norm}",
            guarded=own(norm),
            apply=replace_module(RMSNorm, "vlmops.nn.RMSNorm"),
            patched=lambda m: isinstance(m, RMSNorm) and m.replaces == norm,
            replaces_matched=True,
            check=_norm_refusal,
            sample=_rows_sample(lambda m: m.weight.shape[-1]),
        ),
        Rule(
            family=family,
            kind="mlp",
            target=f"{module}:{mlp}",
            guarded=own(mlp),
            apply=replace_module(GatedMLP, "vlmops.nn.GatedMLP"),
            patched=lambda m: isinstance(m, GatedMLP) and m.replaces == mlp,
            replaces_matched=True,
            check=_mlp_refusal,
            sample=_rows_sample(lambda m: m.gate_proj.in_features),
        ),
    ]
