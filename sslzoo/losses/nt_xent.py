"""NT-Xent (SimCLR) and its supervised generalisation SupCon ("L_out"), one loss with optional labels.

Views are columns: `features` is (N, V, D), V views (or exits) of N images. With 2N = N*V anchors
i, A(i) = every embedding but i, and P(i) the positives of i:

    L = (tau / tau_base) * mean_{i : |P(i)| > 0} [ -1/|P(i)| * sum_{p in P(i)}
            log( exp(z_i . z_p / tau) / sum_{a in A(i)} exp(z_i . z_a / tau) ) ]

- no labels: P(i) = the other views of the same image (NT-Xent; with V = 2 exactly SimCLR's loss);
- labels y: P(i) = every other embedding with y_p = y_i (SupCon, SupContrast/SelfCon `ConLoss`).
`base_temperature=None` means tau_base = tau (no rescaling), the NT-Xent convention.

Under torch.distributed each process's anchors are contrasted against the gathered global batch;
the mean of the per-process losses equals the single-process loss on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import gather, gather_with_grad, local_offset
from ..precision import in_float32


def positive_mask(labels: torch.Tensor, num_views: int) -> torch.Tensor:
    """(N*V, N*V) positives of SupCon for `labels` (N,), embeddings ordered view-major (view, image).

    The diagonal (an anchor with itself) is never a positive.
    """
    ids = labels.repeat(num_views)
    mask = ids[:, None] == ids[None, :]
    mask.fill_diagonal_(False)
    return mask


class NTXentLoss(nn.Module):
    """Normalised-temperature cross-entropy over V views; with labels it is SupCon (see module doc)."""

    def __init__(self, temperature: float = 0.2, base_temperature: float | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature) if base_temperature is not None else self.temperature

    @in_float32
    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """`features` (N, V, D), L2-normalised here; `labels` (N,) integer classes or None."""
        if features.ndim != 3 or features.shape[1] < 1:
            raise ValueError(f"features must be (N, V, D), got shape {tuple(features.shape)}.")
        n, views, _ = features.shape
        features = F.normalize(features, dim=-1)
        offset = local_offset(n)
        ids = (
            labels.to(features.device)
            if labels is not None
            else torch.arange(n, device=features.device) + offset
        )

        everyone = gather_with_grad(features)  # (W*N, V, D)
        everyone_ids = gather(ids)
        total = everyone.shape[0]
        anchors = features.transpose(0, 1).reshape(views * n, -1)
        contrast = everyone.transpose(0, 1).reshape(views * total, -1)

        anchor_ids = ids.repeat(views)
        contrast_ids = everyone_ids.repeat(views)
        rows = torch.arange(views * n, device=features.device)
        self_column = (rows // n) * total + offset + rows % n  # where each anchor sits in `contrast`
        is_self = torch.zeros(views * n, views * total, dtype=torch.bool, device=features.device)
        is_self[rows, self_column] = True
        positives = (anchor_ids[:, None] == contrast_ids[None, :]) & ~is_self

        logits = (anchors @ contrast.T / self.temperature).masked_fill(is_self, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        num_positives = positives.sum(dim=1)
        has_positive = num_positives > 0
        mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1) / num_positives.clamp(min=1)
        scale = self.temperature / self.base_temperature
        return -scale * mean_log_prob[has_positive].mean()


class SupConLoss(NTXentLoss):
    """SupCon with the official defaults: tau = 0.1, tau_base = 0.07 (labels=None gives scaled NT-Xent)."""

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = 0.07):
        super().__init__(temperature, base_temperature)
