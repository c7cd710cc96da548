"""MINC's non-contrastive objective, as interpreted from "Representation Learning via Non-Contrastive
Mutual Information" (Guo et al., 2025; no public code).

Known from the paper: it rewrites the spectral contrastive loss so each sample is compared with a
summary of the other samples instead of with each of them. Interpreted here: the summary is the
uncentred second moment C = E[phi phi^T], since E_{x,x'}[(phi(x)^T phi(x'))^2] = E_x[phi(x)^T C phi(x)].
Per pair (online z, target z+), rows norm-clipped to sqrt(mu) as in the spectral code:

    l(z, z+) = (1/mu) * mean_i [ -2 z_i . sg(z+_i) + z_i^T sg(C) z_i ]

With C the batch second moment of z+, this equals (value and gradient in z) the V-statistic
spectral loss (1/mu)[-(2/B) sum_i z_i.z+_i + (1/B^2) sum_{i,j} (z_i.z+_j)^2], so its fixed points
are the spectral loss's; it needs no B x B pairwise matrix, only a k x k summary.
"""

from __future__ import annotations

import torch
from torch import nn

from ..precision import in_float32
from .spectral import clip_norm


def second_moment(z: torch.Tensor) -> torch.Tensor:
    """Uncentred second moment z^T z / B of a (B, k) batch: the summary MINC compares samples with."""
    return z.T @ z / z.shape[0]


class MINCLoss(nn.Module):
    """See the module docstring; `summary` (k, k) is treated as a constant (stop-gradient)."""

    def __init__(self, mu: float = 1.0):
        super().__init__()
        if mu <= 0:
            raise ValueError(f"mu must be positive, got {mu}.")
        self.mu = float(mu)

    @in_float32
    def forward(self, online: torch.Tensor, target: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        online = clip_norm(online, self.mu)
        target = clip_norm(target.detach(), self.mu)
        attraction = -2.0 * (online * target).sum(dim=1)
        repulsion = ((online @ summary.detach()) * online).sum(dim=1)
        return (attraction + repulsion).mean() / self.mu
