"""Drop-in RMSNorm (Qwen2/T5 convention) on one ``vlmops.rms_norm`` pass."""

import torch
from torch import nn

from vlmops.ops.rms_norm import rms_norm


class RMSNorm(nn.Module):
    """Drop-in for ``Qwen2_5_VLRMSNorm`` and ``PixtralRMSNorm`` (and the identical Qwen2 / T5 RMSNorms): same ``weight``
    parameter and ``variance_epsilon``, same outputs.

    Input ``[..., hidden]`` (any float dtype, any strides); output ``[..., hidden]`` in
    ``promote_types(input dtype, weight dtype)``: float32 statistics, the normalized value rounded to
    the input's dtype, then times ``weight``.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight = norm.weight
        self.variance_epsilon = norm.variance_epsilon
        self.replaces = type(norm).__name__

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
