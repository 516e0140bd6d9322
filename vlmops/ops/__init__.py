"""Python faces of the vlmops ops: documented wrappers, fake implementations, autograd, references
for unbuilt checkouts, each op defined once through :mod:`vlmops.ops.registry`.

Owners of torch.ops.vlmops.<op> per device. Exactly one kernel registers for each (op, device), in
C++; it checks the inputs (the op's contract) and runs its kernel. A Triton kernel is reached through
the private op `vlmops::_<op>_triton` that the C++ CUDA entry calls after its checks: always for the
ops whose CUDA owner is Triton, and with VLMOPS_CUDA_BACKEND=triton (default: cuda) for the ops whose
CUDA owner is CUDA C++ and that also have a Triton variant (benchmarks and tests).

Per op family: the CPU kernels are csrc/cpu/<family>.cpp; a CUDA C++ kernel is csrc/cuda/<family>.cu;
the C++ CUDA entry of a Triton-owned op is csrc/triton/<family>.cpp; the Triton kernel entry of op
``x`` is ``vlmops::_x_triton`` (``registry.triton_kernel_name``). ``CUDA_OWNERS`` below says which
kernel each op's CUDA entry runs.

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
