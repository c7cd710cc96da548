"""SupCon (Khosla et al., 2020): SimCLR's architecture with labels deciding the positives ("L_out").

Every other embedding of the same class is a positive; the loss is scaled by tau / tau_base.
Defaults: SupContrast (tau = 0.1, tau_base = 0.07, head 512 -> 512 -> 128), the baseline SelfCon
compares against.
"""

from __future__ import annotations

import torch

from ..encoder import Encoder
from ..errors import ConfigError
from ..heads import build_head, supcon_projector
from ..limits import positive
from ..losses import SupConLoss
from .base import HostOutput
from .simclr import SimCLR


class SupCon(SimCLR):
    name = "supcon"
    supervised = True

    #: What each keyword of `__init__` may be.
    hparam_limits = {**SimCLR.hparam_limits, "base_temperature": positive()}

    def __init__(
        self,
        encoder: Encoder,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        proj_hidden_dim: int = 512,
        proj_output_dim: int = 128,
    ):
        super().__init__(encoder, temperature, proj_hidden_dim, proj_output_dim)
        self.projector = build_head(supcon_projector(encoder.num_features, proj_hidden_dim, proj_output_dim))
        self.loss_fn = SupConLoss(temperature, base_temperature)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        if labels is None:
            raise ConfigError(
                "SupCon is supervised: pass the batch's class labels (method.supervised is True)."
            )
        self._check_views(views)
        features, embeddings = zip(*(self.embed(view) for view in views))
        loss = self.loss_fn(torch.stack(embeddings, dim=1), labels)
        return HostOutput(
            loss=loss,
            logs={"loss_supcon": loss.detach()},
            features=list(features),
            embeddings=list(embeddings),
            targets=[embeddings[1], embeddings[0]],
            negatives=[None, None],
        )
