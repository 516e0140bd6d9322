"""Drop-in patch embedding: a Conv2d/Conv3d (kernel == stride) run as one GEMM by ``vlmops.patch_embed``."""

import math

import torch
from torch import nn

from vlmops.ops.patch_embed import patch_embed


def _check_conv(conv) -> None:
    if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
        raise TypeError(f"vlmops.nn.PatchEmbed: expected an nn.Conv2d or nn.Conv3d, got {type(conv).__name__}")
    if (
        tuple(conv.kernel_size) != tuple(conv.stride)
        or any(p != 0 for p in conv.padding)
        or any(d != 1 for d in conv.dilation)
        or conv.groups != 1
    ):
        raise ValueError(
            "vlmops.nn.PatchEmbed: the conv must be a patch embedding (kernel == stride, no padding, dilation 1, "
            f"groups 1), got kernel {conv.kernel_size}, stride {conv.stride}, padding {conv.padding}"
        )


class PatchEmbed(nn.Module):
    """Patch embedding as one GEMM, in two drop-in forms that keep the replaced module's state_dict keys.

    - :meth:`from_qwen` replaces Qwen2-VL's ``PatchEmbed`` / ``Qwen2_5_VisionPatchEmbed`` /
      ``Qwen3VLVisionPatchEmbed``: it holds their ``proj`` Conv3d and maps pre-patchified rows
      ``[N, C*T*P*P]`` to ``[N, embed_dim]``.
    - :meth:`from_conv` replaces a bare ``nn.Conv2d``/``nn.Conv3d`` patch conv (Pixtral's
      ``patch_conv``): it holds the conv's ``weight``/``bias`` and returns the conv's output
      ``[B, D, H/P, W/P]`` (a transposed view of the GEMM's ``[B, L, D]``).
    """

    def __init__(self, proj: nn.Module | None = None, conv: nn.Module | None = None):
        super().__init__()
        if (proj is None) == (conv is None):
            raise ValueError("vlmops.nn.PatchEmbed: give exactly one of proj (Qwen form) or conv (bare conv form)")
        _check_conv(proj if conv is None else conv)
        if proj is not None:
            self.proj = proj
            self.embed_dim = proj.out_channels
        else:
            self.weight = conv.weight
            self.bias = conv.bias
            self.kernel_size = tuple(conv.kernel_size)
            self.out_channels = conv.out_channels
        self.replaces = ""  # class name of the transformers module this stands for

    @classmethod
    def from_qwen(cls, module: nn.Module) -> "PatchEmbed":
        """Wraps the ``proj`` Conv3d of a Qwen2/2.5/3-VL vision patch embedding (shared, not copied)."""
        patch = cls(proj=module.proj)
        patch.replaces = type(module).__name__
        return patch

    @classmethod
    def from_conv(cls, conv: nn.Module) -> "PatchEmbed":
        """Takes over the parameters of a patch-embedding ``nn.Conv2d``/``nn.Conv3d`` (shared, not copied)."""
        patch = cls(conv=conv)
        patch.replaces = type(conv).__name__
        return patch

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "proj"):
            # Qwen: rows in (C, T, P, P) order, the Conv3d's weight flattened the same way. A weight
            # without columns goes to the op as it is: its contract names what is wrong with it.
            columns = math.prod(self.proj.weight.shape[1:])
            if columns and hidden_states.numel() % columns:
                raise ValueError(
                    f"vlmops.nn.PatchEmbed: hidden_states of shape {tuple(hidden_states.shape)} is not rows of "
                    f"C*T*P*P = {columns} pixels for the weight of shape {tuple(self.proj.weight.shape)}"
                )
            rows = hidden_states.view(-1, columns) if columns else hidden_states
            return patch_embed(rows, self.proj.weight, self.proj.bias)
        embedded = patch_embed(hidden_states, self.weight, self.bias)  # cast to weight's dtype on load
        grid = [size // k for size, k in zip(hidden_states.shape[2:], self.kernel_size)]
        return embedded.transpose(1, 2).unflatten(2, grid)
