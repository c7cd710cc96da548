"""The contract between a self-supervised method and the training engine.

A `Method` owns the encoder and its training-only parts (projector, predictor, momentum copies,
queues, plug-in modules). The engine makes the views, calls `forward`, steps the optimiser, then
calls `after_step`. Only `export_encoder()` leaves training: it holds no training-only parameter.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from ..encoder import Encoder


class Method(nn.Module):
    """Base class of every objective and plug-in wrapper.

    Subclasses set `name`, `supervised` (needs labels) and `num_views` (augmented views per image
    the engine must produce; SelfCon-S uses 1), and implement `forward`.
    """

    name: ClassVar[str] = "method"
    supervised: ClassVar[bool] = False
    num_views: ClassVar[int] = 2

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one batch of views (each (B, 3, H, W), normalised), and scalars to log."""
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Hook after each optimiser step (EMA updates, queues). `progress` = step / total steps, in [0, 1]."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser parameter groups. Biases and norm parameters get no weight decay and are
        flagged `lars_exclude` so LARS skips its trust ratio for them (as solo-learn does)."""
        decay, no_decay = [], []
        for _, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim <= 1 else decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
        ]

    def export_encoder(self) -> Encoder:
        """A detached copy of the online encoder, in eval mode, with nothing training-only attached."""
        return copy.deepcopy(self.encoder).cpu().eval()
