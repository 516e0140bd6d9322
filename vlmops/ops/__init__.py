"""Python faces of the vlmops ops: documented wrappers, fake implementations, autograd, references
for unbuilt checkouts, each op defined once through :mod:`vlmops.ops.registry`.

Owners of torch.ops.vlmops.<op> per device. Exactly one kernel registers for each (op, device), in
C++; it checks the inputs (the op's contract) and runs its kernel. A Triton kernel is reached through
the private op `vlmops::_<op>_triton` that the C++ CUDA entry calls after its checks: always for the
ops whose CUDA owner is Triton, and with VLMOPS_CUDA_BACKEND=triton (default: cuda) for the ops whose
CUDA owner is CUDA C++ and that also have a Triton variant (benchmarks and tests).

| op                                 | CPU                       | CUDA (public op)              | Triton variant                               |
|------------------------------------|---------------------------|-------------------------------|----------------------------------------------|
| pixel_shuffle                      | csrc/cpu/pixel_shuffle.cpp | csrc/cuda/pixel_shuffle.cu    | _pixel_shuffle_triton                        |
| pixel_shuffle_backward             | csrc/cpu/pixel_shuffle.cpp | csrc/cuda/pixel_shuffle.cu    | _pixel_shuffle_backward_triton               |
| pixel_shuffle_layer_norm           | csrc/cpu/pixel_shuffle.cpp | csrc/cuda/pixel_shuffle.cu    | _pixel_shuffle_layer_norm_triton             |
| pixel_shuffle_layer_norm_backward  | csrc/cpu/pixel_shuffle.cpp | csrc/cuda/pixel_shuffle.cu    | _pixel_shuffle_layer_norm_backward_triton    |
| patch_embed                        | csrc/cpu/patch_embed.cpp  | vlmops/triton/patch_embed.py  | (Triton owns the public op)                  |
| patch_embed_backward               | csrc/cpu/patch_embed.cpp  | vlmops/triton/patch_embed.py  | (Triton owns the public op)                  |
| rope (its backward: inverse=True)  | csrc/cpu/rope.cpp         | csrc/cuda/rope.cu             | _rope_triton                                 |
| rope_ (in place)                   | csrc/cpu/rope.cpp         | csrc/cuda/rope.cu             | _rope_triton_                                |
| varlen_attention                   | csrc/cpu/varlen_attention.cpp | vlmops/triton/varlen_attention.py (Triton) | none                    |
| varlen_attention_backward          | csrc/cpu/varlen_attention.cpp | vlmops/triton/varlen_attention.py (Triton) | none                    |
| gated_cross_attention              | csrc/cpu/gated_cross_attention.cpp | vlmops/triton/gated_cross_attention.py (Triton) | none          |
| gated_cross_attention_backward     | csrc/cpu/gated_cross_attention.cpp | vlmops/triton/gated_cross_attention.py (Triton) | none          |
| rms_norm                           | csrc/cpu/rms_norm.cpp     | vlmops/triton/rms_norm.py (Triton) | none                                  |
| rms_norm_backward                  | csrc/cpu/rms_norm.cpp     | vlmops/triton/rms_norm.py (Triton) | none                                  |
| silu_mul                           | csrc/cpu/silu_mul.cpp     | vlmops/triton/silu_mul.py (Triton) | none                                  |
| silu_mul_backward                  | csrc/cpu/silu_mul.cpp     | vlmops/triton/silu_mul.py (Triton) | none                                  |
"""

import importlib
import os

from vlmops.ops import registry

# The op family modules: importing one defines its ops (registry.define).
FAMILIES = (
    "vlmops.ops.gated_cross_attention",
    "vlmops.ops.patch_embed",
    "vlmops.ops.pixel_shuffle",
    "vlmops.ops.rms_norm",
    "vlmops.ops.rope",
    "vlmops.ops.silu_mul",
    "vlmops.ops.varlen_attention",
)

KERNEL_OWNERS = {
    "pixel_shuffle": {"cpu": "C++", "cuda": "CUDA C++", "triton": "_pixel_shuffle_triton"},
    "pixel_shuffle_backward": {"cpu": "C++", "cuda": "CUDA C++", "triton": "_pixel_shuffle_backward_triton"},
    "pixel_shuffle_layer_norm": {"cpu": "C++", "cuda": "CUDA C++", "triton": "_pixel_shuffle_layer_norm_triton"},
    "pixel_shuffle_layer_norm_backward": {
        "cpu": "C++",
        "cuda": "CUDA C++",
        "triton": "_pixel_shuffle_layer_norm_backward_triton",
    },
    "patch_embed": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "patch_embed_backward": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "rope": {"cpu": "C++", "cuda": "CUDA C++", "triton": "_rope_triton"},
    "rope_": {"cpu": "C++", "cuda": "CUDA C++", "triton": "_rope_triton_"},
    # Attention's CUDA owner is Triton (registered on the public op); there is no CUDA C++ variant.
    "varlen_attention": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "varlen_attention_backward": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "gated_cross_attention": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "gated_cross_attention_backward": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "rms_norm": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "rms_norm_backward": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "silu_mul": {"cpu": "C++", "cuda": "Triton", "triton": None},
    "silu_mul_backward": {"cpu": "C++", "cuda": "Triton", "triton": None},
}

_BACKENDS = ("cuda", "triton")


def register_all() -> None:
    """Define every op (import its family module) and register fakes, autograd and Triton kernels,
    once. ``import vlmops`` calls it."""
    for module in FAMILIES:
        importlib.import_module(module)
    registry.register_all()


def cuda_backend() -> str:
    """The CUDA kernel family the wrappers call: VLMOPS_CUDA_BACKEND=cuda (default) or triton."""
    value = os.environ.get("VLMOPS_CUDA_BACKEND", "cuda").strip().lower()
    if value not in _BACKENDS:
        raise ValueError(f"VLMOPS_CUDA_BACKEND must be one of {_BACKENDS}, got {value!r}")
    return value
