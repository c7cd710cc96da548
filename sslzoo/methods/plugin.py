"""Plug-ins wrap a host method instead of copying it.

A `Plugin` holds the host as `self.host`, shares its encoder, passes `after_step` on, and builds
its own term from what the host exposes (`host_forward` -> `HostOutput`, `embed`). So MixCo, batch
fusion and IE-CL work with every host that implements that interface (SimCLR, MoCo-v2, BYOL,
SupCon, spectral, MINC), and plug-ins stack: `Plugin(Plugin(host))`.

Stacks have one meaning because they have one order: each plug-in has a `wrap_rank` and wraps only
plug-ins of a lower rank (MixCo 0, IE-CL 1, batch fusion 2: the transforms of the views wrap the
objective that consumes them). `build_method` sorts the plug-ins; building a stack by hand in
another order is refused.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..encoder import Encoder
from ..errors import ConfigError
from .base import HostOutput, Method


class Plugin(Method):
    """Base class of the wrappers; subclasses add their term in `host_forward`."""

    #: Human name, for messages.
    title: ClassVar[str] = "plug-in"
    #: Position in a stack: a plug-in wraps only plug-ins of a lower rank.
    wrap_rank: ClassVar[int] = 0
    #: Whether it needs the host's `host_forward` / `embed` (MixCo, IE-CL) or only its `forward`.
    needs_host_interface: ClassVar[bool] = True
    #: What it needs from the host, for the message when the host lacks it.
    host_requirement: ClassVar[str] = "builds on the host's per-view embeddings and targets"

    def __init__(self, host: Method):
        nn.Module.__init__(self)  # no encoder of its own: the host's is the one being trained
        inner = host
        while isinstance(inner, Plugin):
            if inner.wrap_rank >= self.wrap_rank:
                raise ConfigError(
                    f"A plug-in stack has one order, each plug-in once (MixCo innermost, then IE-CL, then "
                    f"batch fusion outermost): {self.title} cannot wrap {inner.title}. "
                    "build_method puts them in that order."
                )
            inner = inner.host
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
