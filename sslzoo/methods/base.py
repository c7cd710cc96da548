"""The contract between a self-supervised method and the training engine.

A `Method` owns the encoder and its training-only parts (projector, predictor, momentum copies,
queues, plug-in modules). The engine makes the views, calls `forward`, steps the optimiser, then
calls `after_step`. Only `export_encoder()` leaves training: it holds no training-only parameter.

Methods that can host a plug-in (MixCo, batch fusion, IE-CL) also implement `host_forward` and
`embed`: the plug-in reads the host's per-view embeddings and targets instead of copying its code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..encoder import Encoder
from ..errors import ConfigError
from ..limits import Limit, between
from ..momentum import cosine_tau, momentum_copy, update_momentum


@dataclass
class HostOutput:
    """What a host method computed for one batch, for the plug-ins that wrap it.

    For view v (a list index), `embeddings[v]` are the online embeddings the loss contrasts (with
    gradient), `features[v]` the encoder's pooled features, `targets[v]` (B, D) the embedding each
    sample of view v must match (SimCLR: the other view's online embedding; MoCo: the other view's
    momentum key; BYOL: the other view's target projection), and `negatives[v]` extra negatives
    beyond the batch (MoCo's queue) or None.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]
    features: list[torch.Tensor]
    embeddings: list[torch.Tensor]
    targets: list[torch.Tensor]
    negatives: list[torch.Tensor | None] = field(default_factory=list)


class Method(nn.Module):
    """Base class of every objective and plug-in wrapper.

    Subclasses set `name`, `supervised` (needs labels) and `num_views` (augmented views per image
    the engine must produce; SelfCon-S uses 1), and implement `forward` (or `host_forward`).
    `hparam_limits` says what each constructor keyword may be (`sslzoo.limits`); recipes are
    checked against it before anything is built.
    """

    hparam_limits: ClassVar[dict[str, Limit]] = {}
    name: ClassVar[str] = "method"
    supervised: ClassVar[bool] = False
    num_views: ClassVar[int] = 2
    #: Why MixCo and IE-CL cannot wrap this method, for methods without `host_forward`.
    why_no_plugins: ClassVar[str] = "exposes no per-view embeddings and targets (no host_forward)"

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one batch of views (each (B, 3, H, W), normalised), and scalars to log."""
        out = self.host_forward(views, labels)
        return out.loss, out.logs

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        """The loss plus the per-view embeddings and targets that plug-ins build on."""
        raise ConfigError(f"Method {self.name!r} cannot host plug-ins (MixCo, batch fusion, IE-CL).")

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online branch on a batch of images: (encoder features, embedding the loss uses)."""
        raise ConfigError(f"Method {self.name!r} cannot host plug-ins (MixCo, batch fusion, IE-CL).")

    def after_step(self, progress: float) -> None:
        """Hook after each optimiser step (EMA updates, queues). `progress` = step / total steps, in [0, 1]."""

    def param_groups(self, weight_decay: float, exclude_bias_norm: bool = False) -> list[dict]:
        """Optimiser parameter groups of the trainable parameters (momentum copies are not).

        By default every parameter decays, as the SGD references do (SupContrast and SelfCon build
        SGD on `model.parameters()`; solo-learn's `exclude_bias_n_norm_wd` is off). With
        `exclude_bias_norm` the biases and norm parameters (every 1-d parameter) get no weight
        decay and are flagged `lars_exclude`, so LARS skips its trust ratio for them: solo-learn's
        LARS `exclude_bias_n_norm`, which its SimCLR and BYOL recipes turn on.
        """
        trainable = [param for param in self.parameters() if param.requires_grad]
        if not exclude_bias_norm:
            return [{"params": trainable, "weight_decay": weight_decay, "lars_exclude": False}]
        return [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay, "lars_exclude": False},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "lars_exclude": True},
        ]

    def export_encoder(self) -> Encoder:
        """A detached copy of the online encoder, in eval mode, with nothing training-only attached."""
        return copy.deepcopy(self.encoder).cpu().eval()

    def _check_views(self, views: list[torch.Tensor], expected: int | None = None) -> None:
        expected = self.num_views if expected is None else expected
        if len(views) != expected:
            raise ConfigError(
                f"{type(self).__name__} needs {expected} view(s) per image, got {len(views)}; "
                f"make the data pipeline produce `method.num_views` views."
            )


class MomentumMethod(Method):
    """A method whose targets come from EMA copies of its encoder and `projector` (MoCo-v2, BYOL, MINC).

    The copies move by EMA after every optimiser step, with tau rising from `base_tau` to
    `final_tau` on a cosine of training progress (solo-learn's schedule). The current tau is part
    of the method's `state_dict` (its extra state), so a resumed run continues the schedule.
    """

    hparam_limits: ClassVar[dict[str, Limit]] = {"base_tau": between(0, 1), "final_tau": between(0, 1)}

    def _init_momentum(self, base_tau: float, final_tau: float) -> None:
        """Make the EMA copies of `self.encoder` and `self.projector`; call once `projector` exists."""
        self.momentum_encoder = momentum_copy(self.encoder)
        self.momentum_projector = momentum_copy(self.projector)
        self.base_tau, self.final_tau = float(base_tau), float(final_tau)
        self.tau = self.base_tau

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        update_momentum(self.encoder, self.momentum_encoder, self.tau)
        update_momentum(self.projector, self.momentum_projector, self.tau)
        self.tau = cosine_tau(progress, self.base_tau, self.final_tau)

    def get_extra_state(self) -> dict[str, float]:
        """The current EMA rate: a plain float `state_dict` would otherwise leave behind."""
        return {"tau": self.tau}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.tau = float(state["tau"])
