"""patch_model's machinery: rules that swap the slow pieces of a transformers VLM for vlmops modules.

A rule matches one transformers class and rewires instances of it. Two kinds of checks guard it:

- The transformers code it relies on. Each rule names the transformers functions whose code it
  relies on (``guarded``, fingerprinted by the sha256 of their source) and the ones it only calls
  (``requires``). A transformers release that changed a guarded function, or lacks one of either
  kind, is refused with :class:`UnsupportedTransformersError` naming the family and the function,
  before anything changes.
- This model's configuration. Before a rule replaces anything in a matched module, its ``check``
  says whether vlmops can run that module: options of the module the replacement does not implement
  (checked by the rule, from the module), and what the vlmops ops say of tensors shaped like the
  module's (:func:`op_refusal`; the op limits live in one place, the C++ op contract). A module that
  fails is left as it is and reported in :attr:`PatchReport.skipped`.
"""

import dataclasses
import hashlib
import importlib
import inspect
from typing import Callable

import torch
from torch import nn

from vlmops import _native

KINDS = ("pixel_shuffle", "rope", "attention", "patch_embed", "cross_attention", "norm", "mlp")


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


@dataclasses.dataclass
class PatchReport:
    families: list[str] = dataclasses.field(default_factory=list)
    replacements: list[Replacement] = dataclasses.field(default_factory=list)
    skipped: list[Skip] = dataclasses.field(default_factory=list)

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
            rows = [f"  {s.family} {s.kind} at {', '.join(p or '<model>' for p in s.paths)}: {s.reason}"
                    for s in self.skipped]
            text += "\nskipped (these modules keep their transformers code):\n" + "\n".join(rows)
        return text


@dataclasses.dataclass(frozen=True)
class Rule:
    family: str
    kind: str
    target: str  # "module:ClassName" of the transformers class this rule matches
    guarded: dict  # "module:qualname" -> sha256 of its source in the transformers versions verified
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


def source_fingerprint(spec: str) -> str:
    return hashlib.sha256(inspect.getsource(_resolve(spec)).encode()).hexdigest()


def refuse_missing(rule: Rule, spec: str) -> UnsupportedTransformersError:
    import transformers

    return UnsupportedTransformersError(
        f"vlmops.patch_model: transformers {transformers.__version__} has no {spec}, which the {rule.family} "
        f"patch ({rule.kind}) relies on; refusing to patch. vlmops verified this patch against transformers 5.24.0."
    )


def check_guarded(rule: Rule) -> None:
    """Raises UnsupportedTransformersError when the installed transformers lacks an object the rule
    names or changed the source of one it guards."""
    import transformers

    for spec in (*rule.guarded, *rule.requires):
        if resolve_or_none(spec) is None:
            raise refuse_missing(rule, spec)
    for spec, expected in rule.guarded.items():
        if source_fingerprint(spec) != expected:
            raise UnsupportedTransformersError(
                f"vlmops.patch_model: transformers {transformers.__version__} changed {spec}, which the "
                f"{rule.family} patch ({rule.kind}) relies on; refusing to patch. vlmops verified this patch "
                "against transformers 5.24.0."
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
    if tuple(conv.kernel_size) != tuple(conv.stride) or not no_padding or any(d != 1 for d in conv.dilation) \
            or conv.groups != 1:
        return (f"the patch conv must have kernel == stride, no padding, dilation 1 and groups 1 (vlmops.patch_embed "
                f"is one GEMM over whole patches), got kernel {tuple(conv.kernel_size)}, stride {tuple(conv.stride)}, "
                f"padding {conv.padding}, dilation {tuple(conv.dilation)}, groups {conv.groups}")
    return None


def patch_conv_refusal(conv: nn.Module, rows: bool = False, pos_embed: torch.Tensor | None = None,
                       cls_token: torch.Tensor | None = None) -> str | None:
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
    return op_refusal("patch_embed", Zeros(x, weight.dtype), Zeros.like(weight),
                      None if conv.bias is None else Zeros.like(conv.bias), None, None, None, positions,
                      None if cls_token is None else Zeros.like(cls_token))


def rope_refusal(rotary: nn.Module, convention: str, consumers: dict) -> str | None:
    """Can ``vlmops.nn.VisionRotaryEmbedding`` (``convention``) stand for this rotary module? Its own
    checks (its tables: e.g. no attention scaling), then what ``rope`` says of one token of the q and
    k (:class:`Zeros` ``[1, H, D]``) of each attention that rotates with it (``consumers``: path ->
    (q, k)), with the tables' pairs."""
    from vlmops.nn.rope import VisionRotaryEmbedding

    try:
        tables = VisionRotaryEmbedding.from_module(rotary, convention).tables()
    except ValueError as error:
        return str(error)
    pairs = tables.axis.shape[0]
    for path, (q, k) in consumers.items():
        reason = op_refusal("rope", Zeros((1, *q.shape), q.dtype), Zeros((1, *k.shape), k.dtype),
                            Zeros((1, 1, 2), torch.int64), Zeros((pairs,), torch.int64),
                            Zeros((pairs,), torch.float32), tables.fp32_math)
        if reason:
            return f"{path}: {reason}"
    return None
