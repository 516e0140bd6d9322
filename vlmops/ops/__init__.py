"""Python faces of the vlmops ops: documented wrappers, fake implementations, autograd, references
for unbuilt checkouts, each op defined once through :mod:`vlmops.ops.registry`.

Owners of torch.ops.vlmops.<op> per device. Exactly one kernel registers for each (op, device), in
C++; it checks the inputs (the op's contract) and runs its kernel. A Triton kernel is reached through
the private op `vlmops::_<op>_triton` that the C++ CUDA entry calls after its checks: always for the
ops whose CUDA owner is Triton, and with VLMOPS_CUDA_BACKEND=triton (default: cuda) for the ops whose
CUDA owner is CUDA C++ and that also have a Triton variant (benchmarks and tests).

| op                                 | CPU (C++)                          | CUDA (C++ entry, then kernel)                     | Triton kernel entry                        |
|------------------------------------|------------------------------------|---------------------------------------------------|--------------------------------------------|
| pixel_shuffle                      | csrc/cpu/pixel_shuffle.cpp         | csrc/cuda/pixel_shuffle.cu (CUDA C++)             | _pixel_shuffle_triton (variant)            |
| pixel_shuffle_backward             | csrc/cpu/pixel_shuffle.cpp         | csrc/cuda/pixel_shuffle.cu (CUDA C++)             | _pixel_shuffle_backward_triton (variant)   |
| pixel_shuffle_layer_norm           | csrc/cpu/pixel_shuffle.cpp         | csrc/cuda/pixel_shuffle.cu (CUDA C++)             | _pixel_shuffle_layer_norm_triton (variant) |
| pixel_shuffle_layer_norm_backward  | csrc/cpu/pixel_shuffle.cpp         | csrc/cuda/pixel_shuffle.cu (CUDA C++)             | _pixel_shuffle_layer_norm_backward_triton (variant) |
| rope (its backward: inverse=True)  | csrc/cpu/rope.cpp                  | csrc/cuda/rope.cu (CUDA C++)                      | _rope_triton (variant)                     |
| rope_ (in place)                   | csrc/cpu/rope.cpp                  | csrc/cuda/rope.cu (CUDA C++)                      | _rope_triton_ (variant)                    |
| patch_embed                        | csrc/cpu/patch_embed.cpp           | csrc/triton/patch_embed.cpp (Triton)              | _patch_embed_triton                        |
| patch_embed_backward               | csrc/cpu/patch_embed.cpp           | csrc/triton/patch_embed.cpp (Triton)              | _patch_embed_backward_triton               |
| varlen_attention                   | csrc/cpu/varlen_attention.cpp      | csrc/triton/varlen_attention.cpp (Triton)         | _varlen_attention_triton                   |
| varlen_attention_backward          | csrc/cpu/varlen_attention.cpp      | csrc/triton/varlen_attention.cpp (Triton)         | _varlen_attention_backward_triton          |
| gated_cross_attention              | csrc/cpu/gated_cross_attention.cpp | csrc/triton/gated_cross_attention.cpp (Triton)    | _gated_cross_attention_triton              |
| gated_cross_attention_backward     | csrc/cpu/gated_cross_attention.cpp | csrc/triton/gated_cross_attention.cpp (Triton)    | _gated_cross_attention_backward_triton     |
| rms_norm                           | csrc/cpu/rms_norm.cpp              | csrc/triton/rms_norm.cpp (Triton)                 | _rms_norm_triton                           |
| rms_norm_backward                  | csrc/cpu/rms_norm.cpp              | csrc/triton/rms_norm.cpp (Triton)                 | _rms_norm_backward_triton                  |
| silu_mul                           | csrc/cpu/silu_mul.cpp              | csrc/triton/silu_mul.cpp (Triton)                 | _silu_mul_triton                           |
| silu_mul_backward                  | csrc/cpu/silu_mul.cpp              | csrc/triton/silu_mul.cpp (Triton)                 | _silu_mul_backward_triton                  |

The Triton launchers live in vlmops/triton/<family>.py (``OpDef.triton`` names each).
"""

import importlib

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

# The CUDA kernel of each public op: "CUDA C++" (its Triton kernel entry, when it has one, is a variant
# chosen with VLMOPS_CUDA_BACKEND=triton) or "Triton" (its C++ CUDA entry always calls the Triton kernel).
CUDA_OWNERS = {
    "pixel_shuffle": "CUDA C++",
    "pixel_shuffle_backward": "CUDA C++",
    "pixel_shuffle_layer_norm": "CUDA C++",
    "pixel_shuffle_layer_norm_backward": "CUDA C++",
    "rope": "CUDA C++",
    "rope_": "CUDA C++",
    "patch_embed": "Triton",
    "patch_embed_backward": "Triton",
    "varlen_attention": "Triton",
    "varlen_attention_backward": "Triton",
    "gated_cross_attention": "Triton",
    "gated_cross_attention_backward": "Triton",
    "rms_norm": "Triton",
    "rms_norm_backward": "Triton",
    "silu_mul": "Triton",
    "silu_mul_backward": "Triton",
}


def register_all() -> None:
    """Define every op (import its family module) and register fakes, autograd and Triton kernels,
    once. ``import vlmops`` calls it."""
    for module in FAMILIES:
        importlib.import_module(module)
    registry.register_all()
