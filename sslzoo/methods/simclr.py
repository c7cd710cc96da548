"""SimCLR (Chen et al., 2020): two views, a projector, NT-Xent over the (global) batch.

Defaults follow solo-learn's CIFAR recipe: projector 512 -> 2048 -> 256 (ReLU, no BN), tau = 0.2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..encoder import Encoder
from ..heads import build_head, simclr_projector
from ..limits import positive, whole
from ..losses import NTXentLoss
from .base import HostOutput, Method


class SimCLR(Method):
    name = "simclr"

    #: What each keyword of `__init__` may be.
    hparam_limits = {"temperature": positive(), "proj_hidden_dim": whole(1), "proj_output_dim": whole(1)}

    def __init__(
        self,
        encoder: Encoder,
        temperature: float = 0.2,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 256,
    ):
        super().__init__(encoder)
        self.projector = build_head(simclr_projector(encoder.num_features, proj_hidden_dim, proj_output_dim))
        self.loss_fn = NTXentLoss(temperature)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)
        return features, F.normalize(self.projector(features), dim=1)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        self._check_views(views)
        features, embeddings = zip(*(self.embed(view) for view in views))
        loss = self.loss_fn(torch.stack(embeddings, dim=1))
        return HostOutput(
            loss=loss,
            logs={"loss_nt_xent": loss.detach()},
            features=list(features),
            embeddings=list(embeddings),
            targets=[embeddings[1], embeddings[0]],  # not detached: SimCLR's positives carry gradient
            negatives=[None, None],
        )
