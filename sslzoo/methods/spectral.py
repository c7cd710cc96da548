"""Spectral contrastive learning (HaoChen et al., NeurIPS 2021), ported from the official code.

Unnormalised projections z1, z2 of two views, norm-clipped to sqrt(mu), trained with the spectral
contrastive loss (see `sslzoo.losses.spectral`). Defaults: the official CIFAR head (512 -> 2048
BN ReLU -> 1000 BN, no final ReLU) and mu = 1.
"""

from __future__ import annotations

import torch

from ..encoder import Encoder
from ..heads import build_head, spectral_projector
from ..limits import positive, whole
from ..losses import SpectralContrastiveLoss
from .base import HostOutput, Method


class Spectral(Method):
    name = "spectral"

    #: What each keyword of `__init__` may be.
    hparam_limits = {"proj_hidden_dim": whole(1), "proj_output_dim": whole(1), "mu": positive()}

    def __init__(
        self,
        encoder: Encoder,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 1000,
        mu: float = 1.0,
    ):
        super().__init__(encoder)
        self.projector = build_head(
            spectral_projector(encoder.num_features, proj_hidden_dim, proj_output_dim)
        )
        self.loss_fn = SpectralContrastiveLoss(mu)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)
        return features, self.projector(features)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        self._check_views(views)
        features, projections = zip(*(self.embed(view) for view in views))
        loss = self.loss_fn(projections[0], projections[1])
        return HostOutput(
            loss=loss,
            logs={"loss_spectral": loss.detach()},
            features=list(features),
            embeddings=list(projections),
            targets=[projections[1], projections[0]],
            negatives=[None, None],
        )
