"""Cross-entropy with soft targets (MixCo's mix term).

L = mean_i [ - sum_j t_ij * log softmax(s_i)_j ],   each row t_i summing to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import in_float32


class SoftTargetCrossEntropy(nn.Module):
    """Soft cross-entropy between logits (B, C) and target distributions (B, C); targets get no gradient."""

    @in_float32
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -(targets.detach() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
