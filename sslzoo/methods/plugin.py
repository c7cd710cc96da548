"""Plug-ins wrap a host method instead of copying it.

A `Plugin` holds the host as `self.host`, shares its encoder, passes `after_step` on, and builds
its own term from what the host exposes (`host_forward` -> `HostOutput`, `embed`). So MixCo, batch
fusion and IE-CL work with every host that implements that interface (SimCLR, MoCo-v2, BYOL,
SupCon, spectral, MINC), and plug-ins stack: `Plugin(Plugin(host))`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..encoder import Encoder
from .base import HostOutput, Method


class Plugin(Method):
    """Base class of the wrappers; subclasses add their term in `host_forward`."""

    def __init__(self, host: Method):
        nn.Module.__init__(self)  # no encoder of its own: the host's is the one being trained
        self.host = host
        self.supervised = host.supervised  # type: ignore[misc]  # follows whichever host it wraps
        self.num_views = host.num_views  # type: ignore[misc]

    @property
    def encoder(self) -> Encoder:  # type: ignore[override]
        return self.host.encoder

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.host.embed(images)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        return self.host.host_forward(views, labels)

    def after_step(self, progress: float) -> None:
        self.host.after_step(progress)
