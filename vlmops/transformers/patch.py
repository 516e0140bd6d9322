"""patch_model: swap the slow pieces of a transformers VLM for vlmops modules, in place.

A rule matches one transformers class and rewires instances of it. Each rule names the transformers
functions whose code it relies on; their source is fingerprinted, and a transformers release that
changed any of them is refused with a clear error instead of being patched silently wrong.
"""

import dataclasses
import hashlib
import importlib
import inspect
from typing import Callable

from torch import nn

KINDS = ("pixel_shuffle", "rope", "attention", "patch_embed", "cross_attention", "norm", "mlp")


class UnsupportedModelError(ValueError):
    """The model contains nothing vlmops knows how to patch."""


class UnsupportedTransformersError(RuntimeError):
    """The installed transformers changed code that a patch relies on."""


@dataclasses.dataclass(frozen=True)
class Replacement:
    path: str  # module path in the patched model ("" is the model itself)
    old: str  # what was there (class or function name)
    new: str  # what is there now


@dataclasses.dataclass
class PatchReport:
    families: list[str] = dataclasses.field(default_factory=list)
    replacements: list[Replacement] = dataclasses.field(default_factory=list)

    def add_family(self, family: str) -> None:
        if family not in self.families:
            self.families.append(family)

    def __str__(self) -> str:
        if not self.replacements:
            return f"vlmops.patch_model: nothing to replace (families: {', '.join(self.families) or 'none'}; already patched?)"
        rows = [f"  {r.path or '<model>'}: {r.old} -> {r.new}" for r in self.replacements]
        return f"vlmops.patch_model ({', '.join(self.families)}):\n" + "\n".join(rows)


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


def _resolve(spec: str):
    module_name, qualname = spec.split(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def source_fingerprint(spec: str) -> str:
    return hashlib.sha256(inspect.getsource(_resolve(spec)).encode()).hexdigest()


def check_guarded(rule: Rule) -> None:
    import transformers

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


def replace_module(factory: Callable[[nn.Module], nn.Module], new_name: str):
    """A Rule.apply that puts factory(matched module) at its path and reports it as new_name."""
    def apply(root, module, path):
        set_submodule(root, path, factory(module))
        return [Replacement(path, type(module).__name__, new_name)]

    return apply
