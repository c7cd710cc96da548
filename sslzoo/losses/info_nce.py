"""InfoNCE against a queue of negatives (MoCo).

For a query q, its positive key k+ and the queue Q = {k_1..k_K} (all L2-normalised):

    L = mean_q [ -log( exp(q . k+ / tau) / (exp(q . k+ / tau) + sum_m exp(q . k_m / tau)) ) ]

i.e. cross-entropy over the logits [q . k+, q . Q] / tau with target index 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import in_float32


class InfoNCELoss(nn.Module):
    """MoCo's contrastive loss; keys and queue are targets (no gradient flows into them)."""

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = float(temperature)

    @in_float32
    def forward(self, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """`query`, `key` (B, D); `queue` (K, D)."""
        query = F.normalize(query, dim=1)
        key = F.normalize(key.detach(), dim=1)
        positive = (query * key).sum(dim=1, keepdim=True)
        negatives = query @ F.normalize(queue.detach(), dim=1).T
        logits = torch.cat([positive, negatives], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))
