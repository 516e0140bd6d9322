"""Drop-in patch merger of the Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision towers."""

import torch
from torch import nn


class PatchMerger(nn.Module):
    """Norm -> concatenate each ``spatial_merge_size**2`` block of patches -> Linear -> GELU -> Linear.

    Keeps the submodules of the merger it replaces: ``ln_q`` + ``mlp`` (``PatchMerger`` of Qwen2-VL,
    ``Qwen2_5_VLPatchMerger``) or ``norm`` + ``linear_fc1`` + ``act_fn`` + ``linear_fc2``
    (``Qwen3VLVisionPatchMerger``, whose norm runs after the concatenation when
    ``use_postshuffle_norm``). ``forward(x [N, C]) -> [N / m^2, out]``; with ``reverse_index`` (the
    Qwen2.5-VL window permutation's inverse, ``[N / m^2]``) the merged rows come back in image order.
    """

    def __init__(self, merger: nn.Module):
        super().__init__()
        self.hidden_size = merger.hidden_size
        self.replaces = type(merger).__name__
        if hasattr(merger, "ln_q"):
            self.ln_q, self.mlp = merger.ln_q, merger.mlp
            self.use_postshuffle_norm = False
        else:
            self.norm, self.linear_fc1, self.act_fn, self.linear_fc2 = (
                merger.norm,
                merger.linear_fc1,
                merger.act_fn,
                merger.linear_fc2,
            )
            self.use_postshuffle_norm = merger.use_postshuffle_norm

    def forward(self, x: torch.Tensor, reverse_index: torch.Tensor | None = None) -> torch.Tensor:
        if hasattr(self, "ln_q"):
            merged = self.mlp(self.ln_q(x).view(-1, self.hidden_size))
        else:
            blocks = x.view(-1, self.hidden_size)
            normed = self.norm(blocks) if self.use_postshuffle_norm else self.norm(x).view(-1, self.hidden_size)
            merged = self.linear_fc2(self.act_fn(self.linear_fc1(normed)))
        return merged if reverse_index is None else merged[reverse_index]
