"""One-call patching of Hugging Face transformers VLMs: ``vlmops.patch_model(model)``."""

from torch import nn

from vlmops.transformers.patch import (
    KINDS,
    PatchReport,
    Replacement,
    Skip,
    UnsupportedModelError,
    UnsupportedTransformersError,
    check_guarded,
    refuse_missing,
    resolve_or_none,
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
    "Replacement",
    "SUPPORTED_FAMILIES",
    "Skip",
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

    A model that runs before patching runs after it. Before a rule replaces anything in a module, it
    checks that vlmops can run that module with this model's configuration: the module's options
    (activation, dropout, causal attention, patch-conv padding/dilation/groups, pixel-shuffle ratio,
    rotary scaling...) and what the vlmops ops say of tensors shaped like the module's (head dim,
    heads and key/value heads, dtype, eps...; the ops' own checks answer, once per configuration).
    Where a check fails, that rule leaves the module as it is, so the module keeps running
    transformers' code, and the report lists it in ``skipped`` with the reason; the other rules still
    apply. A rule's replacements in a module are made only after all its checks of that module passed.

    Args:
        model: a transformers model, or a submodule of one.
        ops: optional iterable of kinds to replace, among ``vlmops.transformers.KINDS``
            (default: every kind).

    Returns:
        A :class:`PatchReport`: ``families`` found, ``replacements`` made (module path, old, new) and
        ``skipped`` rules (family, kind, module paths, reason); ``str(report)`` shows all three.

    Raises:
        UnsupportedModelError: nothing in ``model`` belongs to a supported family
            (``vlmops.transformers.SUPPORTED_FAMILIES``).
        UnsupportedTransformersError: the installed transformers changed or lacks code that the patch of
            a family present in ``model`` relies on (the error names the family and the function).
            Nothing is changed then. Families the model does not contain are never consulted.
        ValueError: ``ops`` names an unknown kind, or ``model`` itself is a module a rule replaces.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"vlmops.patch_model: model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = set(KINDS if ops is None else ops)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"vlmops.patch_model: unknown ops {sorted(unknown)}; choose from {list(KINDS)}")
    # A rule whose transformers class is missing matches nothing: the other families patch as usual.
    rules = [(rule, resolve_or_none(rule.target)) for rule in RULES]
    _refuse_before_changes(model, kinds, rules)
    report = PatchReport()
    for rule, cls in rules:
        if cls is None:
            continue
        for path, module in list(model.named_modules()):
            if rule.patched(module):
                report.add_family(rule.family)
                continue
            if not isinstance(module, cls) or (rule.matches is not None and not rule.matches(module)):
                continue
            report.add_family(rule.family)
            if rule.kind not in kinds:
                continue
            reason = rule.check(model, module, path) if rule.check is not None else None
            if reason is not None:
                report.add_skip(rule.family, rule.kind, path, reason)
                continue
            report.replacements.extend(rule.apply(model, module, path))
    if not report.families:
        raise UnsupportedModelError(
            f"vlmops.patch_model: {type(model).__name__} contains no module of a supported family; "
            f"supported: {', '.join(sorted(SUPPORTED_FAMILIES))}"
        )
    return report


def _refuse_before_changes(model: nn.Module, kinds: set, rules: list) -> None:
    """Every refusal of patch_model, raised before anything changes (a refusal half-way through would
    leave the model half-patched): the transformers code of each rule that has a module to patch, and
    the transformers class of each rule of a family the model contains."""
    modules = [module for _, module in model.named_modules()]
    present = set()
    for rule, cls in rules:
        if cls is None:
            continue
        matched = [m for m in modules if isinstance(m, cls)]
        if matched or any(rule.patched(m) for m in modules):
            present.add(rule.family)
        pending = [m for m in matched if not rule.patched(m)]
        if rule.kind not in kinds or not pending:
            continue
        check_guarded(rule)
        if rule.replaces_matched and any(m is model and (rule.matches is None or rule.matches(m)) for m in pending):
            raise ValueError(
                f"vlmops.patch_model: {type(model).__name__} is replaced as a whole; patch a module that contains it"
            )
    for rule, cls in rules:
        if cls is None and rule.family in present and rule.kind in kinds:
            raise refuse_missing(rule, rule.target)
