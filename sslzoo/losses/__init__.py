"""Losses: small, pure, separately tested units; each docstring states its equation."""

from __future__ import annotations

from .byol import BYOLLoss
from .entropy import coding_rate_entropy
from .info_nce import InfoNCELoss
from .minc import MINCLoss, second_moment
from .nt_xent import NTXentLoss, SupConLoss, positive_mask
from .soft_ce import SoftTargetCrossEntropy
from .spectral import SpectralContrastiveLoss, clip_norm

__all__ = [
    "BYOLLoss",
    "InfoNCELoss",
    "MINCLoss",
    "NTXentLoss",
    "SoftTargetCrossEntropy",
    "SpectralContrastiveLoss",
    "SupConLoss",
    "clip_norm",
    "coding_rate_entropy",
    "positive_mask",
    "second_moment",
]
