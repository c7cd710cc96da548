"""BYOL's normalised regression: the online prediction regresses onto the stop-gradient target.

l(p, z) = || p/||p|| - sg(z)/||sg(z)|| ||^2 = 2 - 2 * cos(p, sg(z)),   averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import in_float32


class BYOLLoss(nn.Module):
    """Mean of 2 - 2 cos(prediction, target); the target is detached here, so no gradient reaches it."""

    @in_float32
    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cosine = F.cosine_similarity(prediction, target.detach(), dim=-1)
        return (2.0 - 2.0 * cosine).mean()
