"""One-call patching of Hugging Face transformers VLMs: ``vlmops.patch_model(model)``."""

from torch import nn

from vlmops.transformers.patch import (
    KINDS,
    PatchReport,
    UnsupportedModelError,
    UnsupportedTransformersError,
    _resolve,
    check_guarded,
)
from vlmops.transformers.attention_interface import register_attention
from vlmops.transformers.clip_rules import RULES as _CLIP_RULES
from vlmops.transformers.mllama_rules import RULES as _MLLAMA_RULES
from vlmops.transformers.pixel_shuffle_rules import RULES as _PIXEL_SHUFFLE_RULES
from vlmops.transformers.pixtral_rules import RULES as _PIXTRAL_RULES
from vlmops.transformers.qwen_rules import RULES as _QWEN_RULES

RULES = [*_PIXEL_SHUFFLE_RULES, *_QWEN_RULES, *_PIXTRAL_RULES, *_CLIP_RULES, *_MLLAMA_RULES]

# family -> the kinds of replacement its rules make (a family may have several rules).
SUPPORTED_FAMILIES = {family: tuple(sorted({r.kind for r in RULES if r.family == family}))
                      for family in dict.fromkeys(rule.family for rule in RULES)}

__all__ = [
    "KINDS",
    "PatchReport",
    "SUPPORTED_FAMILIES",
    "UnsupportedModelError",
    "UnsupportedTransformersError",
    "patch_model",
    "register_attention",
]


def patch_model(model: nn.Module, *, ops=None) -> PatchReport:
    """Replace, in place, the pieces of a transformers model that vlmops makes faster.

    Works on a whole model or any submodule of one. Parameters, buffers and ``state_dict()`` keys
    are unchanged (the new modules hold the original submodules), so ``save_pretrained`` /
    ``from_pretrained`` keep working. Patching twice is a no-op.

    Args:
        model: a transformers model, or a submodule of one.
        ops: optional iterable of kinds to replace, among ``vlmops.transformers.KINDS``
            (default: every kind).

    Returns:
        A :class:`PatchReport` listing each replacement (module path, old, new).

    Raises:
        UnsupportedModelError: nothing in ``model`` belongs to a supported family
            (``vlmops.transformers.SUPPORTED_FAMILIES``).
        UnsupportedTransformersError: the installed transformers changed code a patch relies on.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"vlmops.patch_model: model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = set(KINDS if ops is None else ops)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"vlmops.patch_model: unknown ops {sorted(unknown)}; choose from {list(KINDS)}")
    # Every fingerprint is checked before anything changes: a rule refused half-way through would
    # leave the model half-patched.
    modules = [module for _, module in model.named_modules()]
    for rule in RULES:
        cls = _resolve(rule.target)
        if rule.kind in kinds and any(isinstance(m, cls) and not rule.patched(m) for m in modules):
            check_guarded(rule)
    report = PatchReport()
    for rule in RULES:
        cls = _resolve(rule.target)
        for path, module in list(model.named_modules()):
            if rule.patched(module):
                report.add_family(rule.family)
                continue
            if not isinstance(module, cls) or (rule.matches is not None and not rule.matches(module)):
                continue
            report.add_family(rule.family)
            if rule.kind not in kinds:
                continue
            if rule.replaces_matched and module is model:
                raise ValueError(
                    f"vlmops.patch_model: {type(model).__name__} is replaced as a whole; patch a module that contains it"
                )
            report.replacements.extend(rule.apply(model, module, path))
    if not report.families:
        raise UnsupportedModelError(
            f"vlmops.patch_model: {type(model).__name__} contains no module of a supported family; "
            f"supported: {', '.join(sorted(SUPPORTED_FAMILIES))}"
        )
    return report

