"""MINC, the mutual-information non-contrastive loss (Guo et al., 2025), as sslzoo interprets it.

No code is public and only the abstract and secondary summaries were read, so most of this is an
interpretation (see `sslzoo.losses.minc` for the objective):

- Known: MINC turns the spectral contrastive loss into a non-contrastive one by comparing each
  sample with a *summary* of the other samples, and it uses EMA target parameters.
- Interpreted: the summary is the uncentred second moment C = E[z z^T] of the *target* branch's
  (norm-clipped) projections, kept as an EMA over batches with momentum `summary_momentum` and
  averaged over processes, so every process uses the same C. Per pair:
      l(z, z+) = (1/mu) mean_i [ -2 z_i . sg(z+_i) + z_i^T sg(C) z_i ],
  symmetrised as l(z1, z2') + l(z2, z1') with z' from the EMA target (tau `base_tau` -> `final_tau`).
  With C the batch's own second moment this has the spectral loss's gradient (tested).
- Interpreted: the projector is the spectral one (512 -> 2048 BN ReLU -> 1000 BN) with the
  spectral norm clipping (mu = 1); there is no predictor.
The summary is updated in `forward` (like BatchNorm's running statistics), before the loss uses it,
and starts from the first batch's moment instead of zero. It is kept, updated and used in float32
under bf16 autocast as well (`sslzoo.precision`).
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_mean
from ..encoder import Encoder
from ..heads import build_head, spectral_projector
from ..limits import between, positive, whole
from ..losses import MINCLoss, clip_norm, second_moment
from ..precision import at_least_float32, float32_region
from .base import HostOutput, MomentumMethod


class MINC(MomentumMethod):
    name = "minc"

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        **MomentumMethod.hparam_limits,
        "proj_hidden_dim": whole(1),
        "proj_output_dim": whole(1),
        "mu": positive(),
        "summary_momentum": between(0, 1, high_open=True),
    }

    summary: torch.Tensor
    summary_ready: torch.Tensor

    def __init__(
        self,
        encoder: Encoder,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 1000,
        mu: float = 1.0,
        summary_momentum: float = 0.99,
        base_tau: float = 0.99,
        final_tau: float = 1.0,
    ):
        super().__init__(encoder)
        if not 0.0 <= summary_momentum < 1.0:
            raise ValueError(f"summary_momentum must be in [0, 1), got {summary_momentum}.")
        self.projector = build_head(
            spectral_projector(encoder.num_features, proj_hidden_dim, proj_output_dim)
        )
        self._init_momentum(base_tau, final_tau)
        self.loss_fn = MINCLoss(mu)
        self.mu = float(mu)
        self.summary_momentum = float(summary_momentum)
        self.register_buffer("summary", torch.zeros(proj_output_dim, proj_output_dim))
        self.register_buffer("summary_ready", torch.zeros((), dtype=torch.bool))

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)
        return features, self.projector(features)

    @torch.no_grad()
    def momentum_embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_encoder(images))

    @torch.no_grad()
    def update_summary(self, targets: list[torch.Tensor]) -> None:
        """Fold the batch's target second moment (mean over views and processes) into the EMA summary.

        In float32 with autocast off: under bf16 the moment would lose the small eigenvalues the
        repulsion term penalises, and the float32 buffer could not take a bf16 update.
        """
        with float32_region(self.summary.device):
            moments = [second_moment(clip_norm(at_least_float32(t), self.mu)) for t in targets]
            moment = all_reduce_mean(torch.stack(moments).mean(dim=0))
        if not bool(self.summary_ready):
            self.summary.copy_(moment)
            self.summary_ready.fill_(True)
        else:
            self.summary.lerp_(moment, 1.0 - self.summary_momentum)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        self._check_views(views)
        features, projections = zip(*(self.embed(view) for view in views))
        targets = [self.momentum_embed(view) for view in views]
        if self.training:
            self.update_summary(targets)
        summary = self.summary.clone()  # float32 (MINCLoss computes in float32); the next update is in place
        loss = self.loss_fn(projections[0], targets[1], summary) + self.loss_fn(
            projections[1], targets[0], summary
        )
        return HostOutput(
            loss=loss,
            logs={
                "loss_minc": loss.detach(),
                "tau": torch.tensor(self.tau),
                "summary_trace": summary.trace(),
            },
            features=list(features),
            embeddings=list(projections),
            targets=[targets[1], targets[0]],
            negatives=[None, None],
        )
