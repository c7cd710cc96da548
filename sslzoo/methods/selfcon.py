"""SelfCon (Bae et al., AAAI 2023): self-contrastive learning between the exits of one network.

A sub-network G leaves the backbone after `exit_layer` (default layer2, the official
`selfcon_pos [False, True, False]`); with `selfcon_size fc` it is GAP -> Linear(C_exit -> D), the
only new layer. The backbone exit F and the sub-network exit G each have their own projection head
(SupCon shape, 512 -> 512 -> 128). The exits are the "views" of one SupCon loss, contrast mode
"all", tau = 0.1, tau_base = 0.07, and gradients flow through both exits into the shared stages.

Variants (`variant`):
- "S" (default, the paper's headline): supervised, one augmented view per image; the positives of
  an exit embedding are the same image's other exit and both exits of every same-class image.
- "M": supervised, two views, four embeddings per image (SelfCon-M).
- "MU": unsupervised, two views; the positives are the same image's three other embeddings
  (SelfCon-MU, the zoo's unsupervised SelfCon).
The sub-network and both heads are training-only; `export_encoder()` drops them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder import Encoder
from ..errors import ConfigError
from ..heads import build_head, supcon_projector
from ..limits import one_of, positive, whole
from ..losses import SupConLoss
from .base import Method

VARIANTS = {"S": (True, 1), "M": (True, 2), "MU": (False, 2)}  # variant -> (supervised, views)


def _exit_channels(stage: nn.Module) -> int:
    """Channels a ResNet stage outputs: the last conv's (BasicBlock conv2, Bottleneck conv3)."""
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class SelfCon(Method):
    name = "selfcon"
    supervised = True
    num_views = 1

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        "temperature": positive(),
        "base_temperature": positive(),
        "proj_hidden_dim": whole(1),
        "proj_output_dim": whole(1),
        "exit_layer": one_of(("layer1", "layer2", "layer3")),
        "variant": one_of(VARIANTS),
    }

    def __init__(
        self,
        encoder: Encoder,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        proj_hidden_dim: int = 512,
        proj_output_dim: int = 128,
        exit_layer: str = "layer2",
        variant: str = "S",
    ):
        super().__init__(encoder)
        if variant not in VARIANTS:
            raise ConfigError(f"Unknown SelfCon variant {variant!r}; choose one of {list(VARIANTS)}.")
        if exit_layer not in ("layer1", "layer2", "layer3"):
            raise ConfigError(f"exit_layer must be layer1, layer2 or layer3 (got {exit_layer!r}).")
        self.variant = variant
        self.supervised, self.num_views = VARIANTS[variant]  # type: ignore[misc]  # per-instance variant
        self.exit_layer = exit_layer
        width = encoder.num_features
        self.sub_network = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(_exit_channels(getattr(encoder, exit_layer)), width),
        )
        self.projector = build_head(supcon_projector(width, proj_hidden_dim, proj_output_dim))
        self.sub_projector = build_head(supcon_projector(width, proj_hidden_dim, proj_output_dim))
        self.loss_fn = SupConLoss(temperature, base_temperature)

    def exit_embeddings(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sub-network exit, backbone exit) normalised embeddings of one batch of images."""
        features, maps = self.encoder.forward_with_exits(images, (self.exit_layer,))
        sub = self.sub_network(maps[self.exit_layer])
        return F.normalize(self.sub_projector(sub), dim=1), F.normalize(self.projector(features), dim=1)

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._check_views(views)
        if self.supervised and labels is None:
            raise ConfigError(f"SelfCon-{self.variant} is supervised: pass the batch's class labels.")
        columns = [embedding for view in views for embedding in self.exit_embeddings(view)]
        loss = self.loss_fn(torch.stack(columns, dim=1), labels if self.supervised else None)
        return loss, {"loss_selfcon": loss.detach()}
