"""patch_model's machinery: rules that swap the slow pieces of a transformers VLM for vlmops modules.

A rule matches one transformers class and rewires instances of it. Two kinds of checks guard it:

- The transformers code it relies on. Each rule names the transformers functions whose code it
  relies on (``guarded``) and the ones it only calls (``requires``). The sha256 of the guarded
  functions' source, taken together, is the rule's fingerprint; ``vlmops.transformers.verified``
  lists the fingerprints whose patch passed the parity tests, with the transformers releases they
  were taken from (``tools/compat_matrix.py`` writes it). A transformers release whose code gives
  another fingerprint is refused with :class:`UnsupportedTransformersError` naming the family and
  the functions, before anything changes, unless the caller asks to verify the rule on the model
  (``patch_model(..., verify=True)``, :func:`verify_rule`). A release that lacks an object of either
  kind is refused the same way.
- This model's configuration. Before a rule replaces anything in a matched module, its ``check``
  says whether vlmops can run that module: options of the module the replacement does not implement
  (checked by the rule, from the module), and what the vlmops ops say of tensors shaped like the
  module's (:func:`op_refusal`; the op limits live in one place, the C++ op contract). A module that
  fails is left as it is and reported in :attr:`PatchReport.skipped`.

Where transformers reorganised the code a rule serves (a rotary module with another interface,
a renamed class), the rule has variants: one :class:`Rule` per code generation, told apart by its
``serves`` test, with the same family and kind (see :func:`select_rules`).
"""

import copy
import dataclasses
import hashlib
import importlib
import inspect
import itertools
from collections.abc import Callable

import torch
from torch import nn

from vlmops import _native

KINDS = ("pixel_shuffle", "rope", "attention", "patch_embed", "cross_attention", "cross_attention_mask", "norm", "mlp")


class UnsupportedModelError(ValueError):
    """The model contains nothing vlmops knows how to patch."""


class UnsupportedTransformersError(RuntimeError):
    """The installed transformers changed, or lacks, code that a patch relies on."""


@dataclasses.dataclass(frozen=True)
class Replacement:
    path: str  # module path in the patched model ("" is the model itself)
    old: str  # what was there (class or function name)
    new: str  # what is there now


@dataclasses.dataclass(frozen=True)
class Skip:
    family: str
    kind: str  # the rule (family, kind) that was not applied
    paths: tuple[str, ...]  # the modules it matched and left as they are ("" is the model itself)
    reason: str  # why vlmops cannot run them


@dataclasses.dataclass(frozen=True)
class Verification:
    """What ``patch_model(..., verify=True)`` measured for a rule whose transformers code has a
    fingerprint vlmops has not verified: the rule's replacement against the original module on a
    small input derived from the model (:func:`verify_rule`)."""

    family: str
    kind: str
    path: str  # the module it was measured on ("" is the model itself)
    agreed: bool  # within the tolerance: the rule is applied
    error: float | None  # max |patched - original| over the outputs; None where nothing could be compared
    ratio: float | None  # max |patched - original| / (atol + rtol * |original|), elementwise: agreed when <= 1
    detail: str  # the input and tolerance, or why the comparison could not run

    def __str__(self) -> str:
        if self.error is None:
            return f"verify: {self.detail}"
        verdict = "agrees with" if self.agreed else "differs from"
        return (
            f"verify: the patched module {verdict} transformers' on this model: max abs error {self.error:.3g} "
            f"({self.ratio:.3g}x the tolerance; {self.detail})"
        )


@dataclasses.dataclass
class PatchReport:
    families: list[str] = dataclasses.field(default_factory=list)
    replacements: list[Replacement] = dataclasses.field(default_factory=list)
    skipped: list[Skip] = dataclasses.field(default_factory=list)
    # verify=True: one entry per rule whose transformers code vlmops had not verified.
    verifications: list[Verification] = dataclasses.field(default_factory=list)

    def add_family(self, family: str) -> None:
        if family not in self.families:
            self.families.append(family)

    def add_skip(self, family: str, kind: str, path: str, reason: str) -> None:
        """Record that rule (family, kind) left the module at ``path`` as it is; modules skipped by one
        rule for one reason share an entry."""
        for index, skip in enumerate(self.skipped):
            if (skip.family, skip.kind, skip.reason) == (family, kind, reason):
                self.skipped[index] = dataclasses.replace(skip, paths=(*skip.paths, path))
                return
        self.skipped.append(Skip(family, kind, (path,), reason))

    def __str__(self) -> str:
        families = ", ".join(self.families) or "none"
        if self.replacements:
            rows = [f"  {r.path or '<model>'}: {r.old} -> {r.new}" for r in self.replacements]
            text = f"vlmops.patch_model ({families}):\n" + "\n".join(rows)
        elif self.skipped:
            text = f"vlmops.patch_model: nothing replaced (families: {families})"
        else:
            text = f"vlmops.patch_model: nothing to replace (families: {families}; already patched?)"
        if self.skipped:
            rows = [
                f"  {s.family} {s.kind} at {', '.join(p or '<model>' for p in s.paths)}: {s.reason}"
                for s in self.skipped
            ]
            text += "\nskipped (these modules keep their transformers code):\n" + "\n".join(rows)
        if self.verifications:
            rows = [f"  {v.family} {v.kind} at {v.path or '<model>'}: {v}" for v in self.verifications]
            text += "\nverified on this model (transformers code vlmops had not verified):\n" + "\n".join(rows)
        return text


@dataclasses.dataclass(frozen=True)
class Sample:
    """How :func:`verify_rule` compares a rule with transformers: ``run(scope)`` on the module at path
    ``scope`` (the matched module or one that contains it) returns its outputs, on inputs built once
    from the model's configuration and weights; ``inputs`` says what they are."""

    scope: str
    run: Callable[[nn.Module], object]
    inputs: str


@dataclasses.dataclass(frozen=True)
class Rule:
    family: str
    kind: str
    target: str  # "module:ClassName" of the transformers class this rule matches
    # "module:qualname" of the transformers functions whose source the rule relies on; their sha256,
    # taken together in this order, is the rule's fingerprint (fingerprint()).
    guarded: tuple[str, ...]
    apply: Callable[[nn.Module, nn.Module, str], list]  # (root, matched module, its path) -> [Replacement]
    patched: Callable[[nn.Module], bool]  # is this module already the product of this rule?
    replaces_matched: bool  # the matched module itself is swapped (so it cannot be the root)
    # Optional further test of a module of the target class (e.g. a vision tower not claimed by the
    # rules of the VLM that contains it).
    matches: Callable[[nn.Module], bool] | None = None
    # (root, matched module, its path) -> None when vlmops can run what apply would install for this
    # module, else why not. Runs before apply, which then cannot fail half-way.
    check: Callable[[nn.Module, nn.Module, str], str | None] | None = None
    # "module:qualname" of transformers objects the replacement calls without relying on their code.
    requires: tuple[str, ...] = ()
    # (root, matched module, its path) -> the Sample verify_rule runs; None: the rule cannot be verified
    # on a model, only by its fingerprint.
    sample: Callable[[nn.Module, nn.Module, str], Sample] | None = None
    # Variants of one (family, kind) for successive generations of the transformers code: ``serves()``
    # says whether the installed transformers has the generation this variant serves (``api`` names
    # it). A variant without ``serves`` is the one used where no other variant serves.
    serves: Callable[[], bool] | None = None
    api: str = ""
    # Which part of the model the rule serves where a family has several rules of one kind ("text": the
    # language model's, beside the vision tower's); "" for the family's only rule of its kind.
    part: str = ""

    @property
    def key(self) -> str:
        """The rule's name in ``vlmops.transformers.verified``: its variants share it."""
        return f"{self.family}/{self.kind}" + (f"/{self.part}" if self.part else "")


def select_rules(rules: list) -> list:
    """One rule per key (family, kind and part), in ``rules``' order: the first variant whose ``serves()``
    is true for the installed transformers, else the first variant without ``serves``."""
    chosen = {}
    for rule in rules:
        if rule.serves is not None and rule.key not in chosen and rule.serves():
            chosen[rule.key] = rule
    for rule in rules:
        if rule.serves is None:
            chosen.setdefault(rule.key, rule)
    return [rule for rule in rules if chosen.get(rule.key) is rule]


def _resolve(spec: str):
    module_name, qualname = spec.split(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_or_none(spec: str):
    """The object ``spec`` names, or None when the installed transformers lacks it."""
    try:
        return _resolve(spec)
    except (ImportError, AttributeError):
        return None


def _written(obj, name: str, module: str):
    """The function or class that the source of ``module`` defines as ``name``, below the wrappers
    that decorators put around it: ``functools.wraps`` wrappers (``__wrapped__``), wrappers that keep
    it in a closure (``kernels.use_kernelized_func``'s ``__init__``), and callable ``nn.Module``
    instances made from a function (``kernels.use_kernel_forward_from_hub`` on a function)."""
    obj = inspect.unwrap(obj)
    if inspect.isclass(obj) or (inspect.isroutine(obj) and getattr(obj, "__module__", None) == module):
        return obj
    function = getattr(obj, "__func__", obj)
    if not inspect.isfunction(function):  # a callable instance: look into its class's forward
        function = inspect.unwrap(getattr(type(obj), "forward", None) or type(obj).__call__)
    for cell in function.__closure__ or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if inspect.isfunction(inner) and inner.__name__ == name and inner.__module__ == module:
            return _written(inner, name, module)
    return obj


def source_of(spec: str) -> str:
    """The source text of the object ``spec`` names, as its module writes it (decorators included)."""
    module_name, qualname = spec.split(":")
    try:
        return inspect.getsource(_written(_resolve(spec), qualname.rpartition(".")[2], module_name))
    except (OSError, TypeError) as error:
        raise UnsupportedTransformersError(f"vlmops.patch_model: cannot read the source of {spec}: {error}") from error


def source_fingerprint(spec: str) -> str:
    """sha256 of the source of the object ``spec`` names."""
    return hashlib.sha256(source_of(spec).encode()).hexdigest()


def fingerprint(rule: Rule) -> tuple[str, dict]:
    """(the rule's fingerprint, {guarded spec: its source_fingerprint}) for the installed transformers.
    Raises UnsupportedTransformersError when it lacks a guarded object."""
    for spec in rule.guarded:
        if resolve_or_none(spec) is None:
            raise refuse_missing(rule, spec)
    sources = {spec: source_fingerprint(spec) for spec in rule.guarded}
    combined = hashlib.sha256("".join(f"{spec} {sha}\n" for spec, sha in sources.items()).encode()).hexdigest()
    return combined, sources


def verified_releases(rule: Rule) -> tuple[str, ...]:
    """The transformers releases on which a variant of ``rule`` passed the parity tests."""
    from vlmops.transformers import verified

    releases = set(itertools.chain.from_iterable(verified.FINGERPRINTS.get(rule.key, {}).values()))
    return tuple(sorted(releases, key=release_key))


def release_key(release: str) -> tuple:
    """Sort key of a release string such as "5.24.0" (numeric parts compared as numbers, before others)."""
    parts = release.replace("-", ".").split(".")
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts)


def _verified_text(rule: Rule) -> str:
    releases = verified_releases(rule)
    return f"transformers {', '.join(releases)}" if releases else "no transformers release"


def refuse_missing(rule: Rule, spec: str) -> UnsupportedTransformersError:
    import transformers

    return UnsupportedTransformersError(
        f"vlmops.patch_model: transformers {transformers.__version__} has no {spec}, which the {rule.family} "
        f"patch ({rule.kind}) relies on; refusing to patch. vlmops verified this patch on {_verified_text(rule)}."
    )


def unverified_reason(rule: Rule) -> str | None:
    """None when the installed transformers has every object the rule names and its guarded code has
    a verified fingerprint; else what differs, naming the functions. Raises UnsupportedTransformersError
    when an object is missing (nothing can be verified then)."""
    import transformers

    from vlmops.transformers import verified

    for spec in rule.requires:
        if resolve_or_none(spec) is None:
            raise refuse_missing(rule, spec)
    combined, sources = fingerprint(rule)
    if combined in verified.FINGERPRINTS.get(rule.key, {}):
        return None
    changed = [spec for spec, sha in sources.items() if sha not in verified.SOURCES.get(spec, {})]
    what = (
        f"changed {', '.join(changed)}"
        if changed
        else f"combines versions of {', '.join(rule.guarded)} that were never verified together"
    )
    return f"transformers {transformers.__version__} {what}, which the {rule.family} patch ({rule.kind}) relies on"


def check_guarded(rule: Rule) -> None:
    """Raises UnsupportedTransformersError when the installed transformers lacks an object the rule
    names or its guarded code has no verified fingerprint."""
    reason = unverified_reason(rule)
    if reason is not None:
        raise UnsupportedTransformersError(
            f"vlmops.patch_model: {reason}; refusing to patch. vlmops verified this patch on {_verified_text(rule)}; "
            "patch_model(model, verify=True) compares it with transformers on your model and applies it where "
            "they agree."
        )


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, name, module)


def parent_of(root: nn.Module, path: str) -> nn.Module:
    """The module that holds the submodule at ``path`` (a non-empty path)."""
    return root.get_submodule(path.rpartition(".")[0])


def replace_module(factory: Callable[[nn.Module], nn.Module], new_name: str):
    """A Rule.apply that puts factory(matched module) at its path and reports it as new_name."""

    def apply(root, module, path):
        set_submodule(root, path, factory(module))
        return [Replacement(path, type(module).__name__, new_name)]

    return apply


# What a rule's check asks: can vlmops build the replacement, and can the ops take its tensors?


def build_refusal(factory: Callable, *args) -> str | None:
    """None when ``factory(*args)`` builds (the vlmops.nn constructors check the module options they
    implement: a patch-embedding conv, a SiLU MLP, a rotary convention...), else their message."""
    try:
        factory(*args)
    except (ValueError, TypeError) as error:
        return str(error)
    return None


@dataclasses.dataclass(frozen=True)
class Zeros:
    """An argument of :func:`op_refusal`: a zero-filled CPU tensor of this shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def like(cls, tensor: torch.Tensor) -> "Zeros":
        return cls(tuple(tensor.shape), tensor.dtype)

    def tensor(self) -> torch.Tensor:
        return torch.zeros(self.shape, dtype=self.dtype, device="cpu")


@dataclasses.dataclass(frozen=True)
class CuSeqlens:
    """An argument of :func:`op_refusal`: int32 segment boundaries [0, tokens] of one segment."""

    tokens: int

    def tensor(self) -> torch.Tensor:
        return torch.tensor([0, self.tokens], dtype=torch.int32, device="cpu")


_PROBES: dict[tuple, str | None] = {}


def op_refusal(op: str, *args) -> str | None:
    """What ``torch.ops.vlmops.<op>`` says of arguments like ``args``: None when it takes them, else the
    message of the ValueError or RuntimeError it raises (its contract, ``csrc/include/vlmops/<op>_checks.h``).

    ``args`` are the op's arguments with :class:`Zeros` / :class:`CuSeqlens` standing for tensors:
    tiny CPU tensors shaped by a model's configuration (one token, its head dim, heads and dtype).
    The C++ checks are shared by every device's entry point, so a CPU call answers for all of them.
    Each (op, arguments) is asked once per process. Without the native library the ops run their
    pure-PyTorch references, which take every configuration: nothing is asked then.
    """
    key = (op, args)
    if key not in _PROBES:
        _PROBES[key] = _probe(op, args) if _native.available() else None
    return _PROBES[key]


def _probe(op: str, args: tuple) -> str | None:
    from vlmops.ops import registry

    tensors = [a.tensor() if isinstance(a, (Zeros, CuSeqlens)) else a for a in args]
    try:
        with torch.no_grad():
            # The raw op; an argument of the wrong type is a TypeError (a bug here, not a refusal).
            registry.op(op)(*tensors)
    except (ValueError, RuntimeError) as error:
        return str(error).split("\n")[0]
    return None


def attention_options_refusal(attention: nn.Module, dropout_attribute: str) -> str | None:
    """Options of a transformers attention module that vlmops' attention does not implement: dropout
    (``dropout_attribute`` names the module's probability), causal masking."""
    p = getattr(attention, dropout_attribute, 0.0)
    if p:
        return f"attention dropout ({dropout_attribute}={p}) is not implemented by vlmops' attention"
    if getattr(attention, "is_causal", False):
        return "the module is causal; vlmops' attention here is bidirectional"
    return None


def heads_of(projection: nn.Linear, heads: int, parts: int = 1) -> Zeros:
    """One token of ``heads`` heads from ``projection``'s output (``parts`` of them fused, e.g. 3 for
    qkv), as the attention views it: ``[1, heads, out_features / (parts * heads)]`` in its dtype."""
    return Zeros((1, heads, projection.out_features // (parts * heads)), projection.weight.dtype)


def varlen_refusal(q: Zeros, k: Zeros, v: Zeros, scale: float) -> str | None:
    """What vlmops.varlen_attention says of one token of q ``[1, H, D]``, k/v ``[1, Hk, D]`` with this
    softmax scale."""
    return op_refusal("varlen_attention", q, k, v, CuSeqlens(1), CuSeqlens(1), None, None, float(scale))


def patch_conv_options_refusal(conv: nn.Module) -> str | None:
    """Is ``conv`` a patch embedding, which ``vlmops.patch_embed`` computes as one GEMM: an nn.Conv2d or
    nn.Conv3d with kernel == stride, no padding ("valid" or zeros), dilation 1, groups 1?"""
    if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
        return f"the patch embedding must be an nn.Conv2d or nn.Conv3d, got {type(conv).__name__}"
    no_padding = conv.padding == "valid" or (not isinstance(conv.padding, str) and not any(conv.padding))
    if (
        tuple(conv.kernel_size) != tuple(conv.stride)
        or not no_padding
        or any(d != 1 for d in conv.dilation)
        or conv.groups != 1
    ):
        return (
            f"the patch conv must have kernel == stride, no padding, dilation 1 and groups 1 (vlmops.patch_embed "
            f"is one GEMM over whole patches), got kernel {tuple(conv.kernel_size)}, stride {tuple(conv.stride)}, "
            f"padding {conv.padding}, dilation {tuple(conv.dilation)}, groups {conv.groups}"
        )
    return None


def patch_conv_refusal(
    conv: nn.Module, rows: bool = False, pos_embed: torch.Tensor | None = None, cls_token: torch.Tensor | None = None
) -> str | None:
    """Can ``vlmops.patch_embed`` stand for this patch conv? Its options, then what the op says of one
    patch in the weight's dtype: pixel rows ``[1, C*T*P*P]`` (``rows``) or an image/video of one patch,
    with the position table of one patch and the CLS token when given."""
    reason = patch_conv_options_refusal(conv)
    if reason:
        return reason
    weight = conv.weight
    x = (1, weight[0].numel()) if rows else (1, *weight.shape[1:])
    positions = None
    if pos_embed is not None:
        positions = Zeros((1 + int(cls_token is not None), pos_embed.shape[-1]), pos_embed.dtype)
    return op_refusal(
        "patch_embed",
        Zeros(x, weight.dtype),
        Zeros.like(weight),
        None if conv.bias is None else Zeros.like(conv.bias),
        None,
        None,
        None,
        positions,
        None if cls_token is None else Zeros.like(cls_token),
    )


def rope_refusal(factory: Callable, rotary: nn.Module, consumers: dict) -> str | None:
    """Can the vlmops rotary module (``vlmops.nn.VisionRotaryEmbedding``, ``MRotaryEmbedding``) that
    ``factory(rotary)`` builds stand for this rotary module? Its own checks (its tables: e.g. no attention
    scaling), then what ``rope`` says of one token of the q and k (:class:`Zeros` ``[1, H, D]``) of each
    attention that rotates with it (``consumers``: path -> (q, k)), with the tables' pairs."""
    try:
        tables = factory(rotary).tables()
    except ValueError as error:
        return str(error)
    pairs = tables.axis.shape[0]
    for path, (q, k) in consumers.items():
        reason = op_refusal(
            "rope",
            Zeros((1, *q.shape), q.dtype),
            Zeros((1, *k.shape), k.dtype),
            Zeros((1, 1, 2), torch.int64),
            Zeros((pairs,), torch.int64),
            Zeros((pairs,), torch.float32),
            tables.fp32_math,
        )
        if reason:
            return f"{path}: {reason}"
    return None


# verify=True: a rule's replacement against the original, on the model itself.

# (rtol, atol) of the comparison per output dtype: float32 and float64 as the parity tests compare;
# float16 and bfloat16 as torch.testing.assert_close does. atol is relative to the largest |output|
# (at least 1): towers of real checkpoints have activations far from 1.
TOLERANCES = {
    torch.float64: (1e-5, 1e-5),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


def structural_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module``'s module tree that shares its parameters and buffers (no tensor memory):
    the replacement is built on it, beside the original."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def output_tensors(outputs) -> list:
    """The floating-point tensors of a module's outputs (a tensor, a tuple or list, a ModelOutput), in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs] if outputs.is_floating_point() else []
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [t for item in outputs for t in output_tensors(item)]
    return []


def compare(got, expected) -> tuple[float, float, str]:
    """(max |got - expected|, its ratio to the tolerance (TOLERANCES), what was compared) over the
    floating-point tensors of two outputs. Raises ValueError when their structure or shapes differ."""
    got, expected = output_tensors(got), output_tensors(expected)
    if len(got) != len(expected) or not expected:
        raise ValueError(f"the outputs differ in structure: {len(got)} tensors vs transformers' {len(expected)}")
    error = ratio = 0.0
    for a, b in zip(got, expected):
        if a.shape != b.shape:
            raise ValueError(f"an output has shape {tuple(a.shape)}, transformers' {tuple(b.shape)}")
        rtol, atol = TOLERANCES.get(b.dtype, TOLERANCES[torch.float32])
        a, b = a.detach().double(), b.detach().double()
        if not torch.isfinite(b).all():
            raise ValueError("transformers' output is not finite on the sample input")
        diff = (a - b).abs()
        allowed = atol * max(1.0, b.abs().max().item()) + rtol * b.abs()
        error = max(error, diff.max().item() if diff.numel() else 0.0)
        ratio = max(ratio, (diff / allowed).max().item() if diff.numel() else 0.0)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in expected})
    return error, ratio, f"{len(expected)} output tensors in {'/'.join(dtypes)}"


def verify_rule(rule: Rule, root: nn.Module, module: nn.Module, path: str) -> Verification:
    """Applies ``rule`` to a structural copy of the module its sample names (the matched module or one
    that contains it), runs the original and the copy on the sample input, and compares their
    outputs within TOLERANCES. Nothing of ``root`` changes. Any failure to build, run or compare is a
    disagreement, reported with its error."""

    def verdict(agreed, error=None, ratio=None, detail=""):
        return Verification(rule.family, rule.kind, path, agreed, error, ratio, detail)

    if rule.sample is None:
        return verdict(False, detail="this rule has no sample input to verify it on")
    try:
        sample = rule.sample(root, module, path)
        scope = root.get_submodule(sample.scope)
        inner = path[len(sample.scope) :].lstrip(".") if sample.scope else path
        holder = nn.Module()
        holder.scope = structural_copy(scope)
        target = "scope" + (f".{inner}" if inner else "")
        with torch.no_grad():
            expected = sample.run(scope)
            rule.apply(holder, holder.get_submodule(target), target)
            got = sample.run(holder.scope)
        error, ratio, compared = compare(got, expected)
    except Exception as error:  # a verification that cannot run is a failed one, reported with its cause
        return verdict(False, detail=f"could not compare ({type(error).__name__}: {error})")
    return verdict(ratio <= 1.0, error, ratio, f"{sample.inputs}; {compared}")
