"""MoCo-v2, symmetric as solo-learn's "MoCo V2+": a momentum encoder + projector make the keys, one
queue of earlier keys per view supplies the negatives.

    L = ( InfoNCE(q1, k2, Q2) + InfoNCE(q2, k1, Q1) ) / 2

q = normalize(g(f(v))) online; k = normalize(g_m(f_m(v))) momentum, no gradient. After each
optimiser step (`after_step`) the momentum networks move by EMA with tau rising 0.99 -> 0.999 on a
cosine of training progress, and the batch's keys (gathered over processes) enter the queues.
Defaults: solo-learn CIFAR (projector 512 -> 2048 -> 256, tau = 0.2, queue 32768). No ShuffleBN
(solo-learn has none either).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..encoder import Encoder
from ..heads import build_head, simclr_projector
from ..limits import positive, whole
from ..losses import InfoNCELoss
from ..queue import KeyQueue
from .base import HostOutput, MomentumMethod


class MoCoV2(MomentumMethod):
    name = "mocov2"

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        **MomentumMethod.hparam_limits,
        "temperature": positive(),
        "proj_hidden_dim": whole(1),
        "proj_output_dim": whole(1),
        "queue_size": whole(1),
    }

    def __init__(
        self,
        encoder: Encoder,
        temperature: float = 0.2,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 256,
        queue_size: int = 32768,
        base_tau: float = 0.99,
        final_tau: float = 0.999,
    ):
        super().__init__(encoder)
        self.projector = build_head(simclr_projector(encoder.num_features, proj_hidden_dim, proj_output_dim))
        self._init_momentum(base_tau, final_tau)
        self.queues = torch.nn.ModuleList([KeyQueue(queue_size, proj_output_dim) for _ in range(2)])
        self.loss_fn = InfoNCELoss(temperature)
        self._pending_keys: list[list[torch.Tensor]] = []

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)
        return features, F.normalize(self.projector(features), dim=1)

    @torch.no_grad()
    def momentum_embed(self, images: torch.Tensor) -> torch.Tensor:
        """Keys: the momentum branch's normalised projection, without gradient."""
        return F.normalize(self.momentum_projector(self.momentum_encoder(images)), dim=1)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        self._check_views(views)
        features, queries = zip(*(self.embed(view) for view in views))
        keys = [self.momentum_embed(view) for view in views]
        queues = [queue.keys for queue in self.queues]  # keys enter them only in `after_step`
        loss = (
            self.loss_fn(queries[0], keys[1], queues[1]) + self.loss_fn(queries[1], keys[0], queues[0])
        ) / 2
        if self.training:
            self._pending_keys.append(keys)
        return HostOutput(
            loss=loss,
            logs={"loss_info_nce": loss.detach(), "tau": torch.tensor(self.tau)},
            features=list(features),
            embeddings=list(queries),
            targets=[keys[1], keys[0]],
            negatives=[queues[1], queues[0]],
        )

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        super().after_step(progress)
        for keys in self._pending_keys:
            for queue, view_keys in zip(self.queues, keys):
                queue.enqueue(view_keys)
        self._pending_keys.clear()
