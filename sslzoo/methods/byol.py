"""BYOL (Grill et al., 2020): the online projector + predictor regress onto an EMA target network.

    L = l(p1, z2') + l(p2, z1'),   l(p, z) = 2 - 2 cos(p, sg(z))

p = q(g(f(v))) online; z' = g_t(f_t(v')) target (EMA, no predictor). tau rises from `base_tau` to
`final_tau` on a cosine of training progress. Defaults: solo-learn CIFAR (projector and predictor
Linear -> BN -> ReLU -> Linear, hidden 4096, output 256; tau 0.99 -> 1.0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..encoder import Encoder
from ..heads import build_head, byol_predictor, byol_projector
from ..limits import whole
from ..losses import BYOLLoss
from .base import HostOutput, MomentumMethod


class BYOL(MomentumMethod):
    name = "byol"

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        **MomentumMethod.hparam_limits,
        "proj_hidden_dim": whole(1),
        "proj_output_dim": whole(1),
        "pred_hidden_dim": whole(1),
    }

    def __init__(
        self,
        encoder: Encoder,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        base_tau: float = 0.99,
        final_tau: float = 1.0,
    ):
        super().__init__(encoder)
        self.projector = build_head(byol_projector(encoder.num_features, proj_hidden_dim, proj_output_dim))
        self.predictor = build_head(byol_predictor(proj_output_dim, pred_hidden_dim, proj_output_dim))
        self._init_momentum(base_tau, final_tau)
        self.loss_fn = BYOLLoss()

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, normalised prediction): the online side of the regression."""
        features = self.encoder(images)
        return features, F.normalize(self.predictor(self.projector(features)), dim=1)

    @torch.no_grad()
    def momentum_embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.momentum_projector(self.momentum_encoder(images)), dim=1)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        self._check_views(views)
        features, predictions = zip(*(self.embed(view) for view in views))
        targets = [self.momentum_embed(view) for view in views]
        loss = self.loss_fn(predictions[0], targets[1]) + self.loss_fn(predictions[1], targets[0])
        return HostOutput(
            loss=loss,
            logs={"loss_byol": loss.detach(), "tau": torch.tensor(self.tau)},
            features=list(features),
            embeddings=list(predictions),
            targets=[targets[1], targets[0]],
            negatives=[None, None],
        )
