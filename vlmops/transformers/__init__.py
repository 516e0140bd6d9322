"""One-call patching of Hugging Face transformers VLMs: ``vlmops.patch_model(model)``."""

from torch import nn

from vlmops.transformers.attention_interface import register_attention
from vlmops.transformers.clip_rules import RULES as _CLIP_RULES
from vlmops.transformers.mllama_rules import RULES as _MLLAMA_RULES
from vlmops.transformers.patch import (
    KINDS,
    PatchReport,
    Replacement,
    Skip,
    UnsupportedModelError,
    UnsupportedTransformersError,
    Verification,
    check_guarded,
    refuse_missing,
    release_key,
    resolve_or_none,
    select_rules,
    unverified_reason,
    verify_rule,
)
from vlmops.transformers.pixel_shuffle_rules import RULES as _PIXEL_SHUFFLE_RULES
from vlmops.transformers.pixtral_rules import RULES as _PIXTRAL_RULES
from vlmops.transformers.qwen_rules import RULES as _QWEN_RULES
from vlmops.transformers.qwen_text_rules import RULES as _QWEN_TEXT_RULES

# Every rule variant; patch_model uses, per rule key (family, kind, part), the one select_rules picks for the
# installed transformers.
RULES = [*_PIXEL_SHUFFLE_RULES, *_QWEN_RULES, *_QWEN_TEXT_RULES, *_PIXTRAL_RULES, *_CLIP_RULES, *_MLLAMA_RULES]

# family -> the kinds of replacement its rules make (a family may have several rules).
SUPPORTED_FAMILIES = {
    family: tuple(sorted({r.kind for r in RULES if r.family == family}))
    for family in dict.fromkeys(rule.family for rule in RULES)
}

__all__ = [
    "KINDS",
    "PatchReport",
    "Replacement",
    "SUPPORTED_FAMILIES",
    "Skip",
    "UnsupportedModelError",
    "UnsupportedTransformersError",
    "Verification",
    "patch_model",
    "register_attention",
    "supported_transformers",
]


def supported_transformers() -> dict[str, tuple[str, ...]]:
    """The transformers releases on which each family's patches passed the parity tests (outputs,
    the vlmops ops running, save/load), oldest first: ``{family: (release, ...)}``.

    On other releases ``patch_model`` accepts a family where the transformers code its rules rely on
    is identical to one of these releases' (the same source fingerprints), and refuses it otherwise
    unless called with ``verify=True``.
    """
    from vlmops.transformers import verified

    return {family: tuple(sorted(verified.RELEASES.get(family, ()), key=release_key)) for family in SUPPORTED_FAMILIES}


def patch_model(model: nn.Module, *, ops=None, verify: bool = False) -> PatchReport:
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

    Each rule relies on transformers code that vlmops verified on the releases listed by
    :func:`supported_transformers` (the source of that code, fingerprinted). Where the installed
    transformers changed it, the rule is refused; with ``verify=True`` it is tried on the model
    instead: before anything is replaced, the rule's replacement is built beside the original (sharing
    its weights) and both run on a small input derived from the model's configuration and weights (a
    few patches of one small image, a few rows of hidden states); the rule is applied only where their
    outputs agree within the parity tests' tolerance. ``report.verifications`` holds every such
    measurement; rules that disagreed are in ``report.skipped`` with the measured error.

    Args:
        model: a transformers model, or a submodule of one.
        ops: optional iterable of kinds to replace, among ``vlmops.transformers.KINDS``
            (default: every kind).
        verify: verify rules whose transformers code vlmops has not verified on this model, rather
            than refusing them.

    Returns:
        A :class:`PatchReport`: ``families`` found, ``replacements`` made (module path, old, new),
        ``skipped`` rules (family, kind, module paths, reason) and ``verifications`` (verify=True);
        ``str(report)`` shows them.

    Raises:
        UnsupportedModelError: nothing in ``model`` belongs to a supported family
            (``vlmops.transformers.SUPPORTED_FAMILIES``).
        UnsupportedTransformersError: the installed transformers lacks code that the patch of a family
            present in ``model`` relies on, or (``verify=False``) changed it (the error names the family,
            the function and the verified releases). Nothing is changed then. Families the model does
            not contain are never consulted.
        ValueError: ``ops`` names an unknown kind, or ``model`` itself is a module a rule replaces.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"vlmops.patch_model: model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = set(KINDS if ops is None else ops)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"vlmops.patch_model: unknown ops {sorted(unknown)}; choose from {list(KINDS)}")
    # A rule whose transformers class is missing matches nothing: the other families patch as usual.
    rules = [(rule, resolve_or_none(rule.target)) for rule in select_rules(RULES)]
    unverified = _refuse_before_changes(model, kinds, rules, verify)
    report = PatchReport()
    verdicts = _verify(model, kinds, rules, unverified, report)
    for rule, cls in rules:
        if cls is None:
            continue
        for path, module in list(model.named_modules()):
            if rule.patched(module):
                report.add_family(rule.family)
                continue
            if not _matches(rule, cls, module):
                continue
            report.add_family(rule.family)
            if rule.kind not in kinds:
                continue
            if rule.key in unverified:
                reason, raised = _checked(rule, model, module, path)
                verdict = verdicts.get(rule.key)
                if raised:
                    reason = f"{unverified[rule.key]}; verify: {reason}"
                elif reason is None and verdict is not None and not verdict.agreed:
                    reason = f"{unverified[rule.key]}; {verdict}"
            else:
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


def _matches(rule, cls, module) -> bool:
    return isinstance(module, cls) and (rule.matches is None or rule.matches(module))


def _refuse_before_changes(model: nn.Module, kinds: set, rules: list, verify: bool) -> dict:
    """Every refusal of patch_model, raised before anything changes (a refusal half-way through would
    leave the model half-patched): the transformers code of each rule that has a module to patch, and
    the transformers class of each rule of a family the model contains. Returns {rule key: what
    changed} for the rules whose code changed, which verify=True verifies instead of refusing."""
    modules = [module for _, module in model.named_modules()]
    present = set()
    unverified = {}
    for rule, cls in rules:
        if cls is None:
            continue
        matched = [m for m in modules if isinstance(m, cls)]
        if matched or any(rule.patched(m) for m in modules):
            present.add(rule.family)
        pending = [m for m in matched if not rule.patched(m)]
        if rule.kind not in kinds or not pending:
            continue
        if verify:
            reason = unverified_reason(rule)
            if reason is not None:
                unverified[rule.key] = reason
        else:
            check_guarded(rule)
        if rule.replaces_matched and any(m is model and (rule.matches is None or rule.matches(m)) for m in pending):
            raise ValueError(
                f"vlmops.patch_model: {type(model).__name__} is replaced as a whole; patch a module that contains it"
            )
    for rule, cls in rules:
        if cls is None and rule.family in present and rule.kind in kinds:
            raise refuse_missing(rule, rule.target)
    return unverified


def _verify(model: nn.Module, kinds: set, rules: list, unverified: dict, report: PatchReport) -> dict:
    """verify=True, before any replacement: each rule whose code changed is verified once, on the first
    module it would patch (the modules a rule matches run the same transformers code). Returns
    {rule key: Verification}."""
    verdicts = {}
    for rule, cls in rules:
        if rule.key not in unverified or cls is None or rule.kind not in kinds:
            continue
        for path, module in model.named_modules():
            if rule.patched(module) or not _matches(rule, cls, module):
                continue
            reason, raised = _checked(rule, model, module, path)
            if reason is not None and not raised:
                continue
            verdicts[rule.key] = (
                Verification(rule.family, rule.kind, path, False, None, None, reason)
                if raised
                else verify_rule(rule, model, module, path)
            )
            report.verifications.append(verdicts[rule.key])
            break
    return verdicts


def _checked(rule, model, module, path) -> tuple[str | None, bool]:
    """(rule.check's reason, whether it raised) for a rule whose transformers code changed
    (verify=True): code the check reads may be gone, so an error is a reason to skip, not a crash."""
    if rule.check is None:
        return None, False
    try:
        return rule.check(model, module, path), False
    except Exception as error:  # changed transformers code: reported, the module keeps its code
        return f"the rule's check failed on this transformers ({type(error).__name__}: {error})", True
