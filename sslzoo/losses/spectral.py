"""The spectral contrastive loss (HaoChen et al., NeurIPS 2021), the official mini-batch estimator.

Rows are first norm-clipped to sqrt(mu) (rows shorter than sqrt(mu) are left alone). Then, with B
pairs (z1_i, z2_i):

    L = (1/mu) * [ -(2/B) sum_i z1_i . z2_i  +  1/(B(B-1)) sum_{i != j} (z1_i . z2_j)^2 ]

No softmax, no temperature, no L2 normalisation; the diagonal is excluded from the squared term
(`D` in jhaochenz96/spectral_contrastive_learning `models/spectral.py`). Under torch.distributed
the squared term runs over the gathered global batch, so the mean of per-process losses equals
the single-process loss on the global batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..distributed import gather_with_grad, local_offset
from ..precision import in_float32


def clip_norm(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Rescale every row with norm >= sqrt(mu) to norm sqrt(mu); shorter rows are unchanged."""
    radius = math.sqrt(mu)
    norms = z.norm(dim=-1, keepdim=True)
    return torch.where(norms < radius, z, z / norms.clamp(min=1e-12) * radius)


class SpectralContrastiveLoss(nn.Module):
    """See the module docstring; `mu` is 1 on CIFAR and 10 on ImageNet in the official configs."""

    def __init__(self, mu: float = 1.0):
        super().__init__()
        if mu <= 0:
            raise ValueError(f"mu must be positive, got {mu}.")
        self.mu = float(mu)

    @in_float32
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1, z2 = clip_norm(z1, self.mu), clip_norm(z2, self.mu)
        batch = z1.shape[0]
        attraction = -2.0 * (z1 * z2).sum(dim=1).mean()
        everyone = gather_with_grad(z2)
        total = everyone.shape[0]
        if total < 2:
            raise ValueError("The spectral loss needs at least 2 samples in the (global) batch.")
        rows = torch.arange(batch, device=z1.device)
        own_pair = torch.zeros(batch, total, dtype=torch.bool, device=z1.device)
        own_pair[rows, rows + local_offset(batch)] = True  # the diagonal of the global B x B matrix
        squares = (z1 @ everyone.T).square().masked_fill(own_pair, 0.0)
        repulsion = squares.sum() / (batch * (total - 1))
        return (attraction + repulsion) / self.mu
