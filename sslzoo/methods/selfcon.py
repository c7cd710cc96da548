"""SelfCon (Bae et al., AAAI 2023): self-contrastive learning between the exits of one network.

A sub-network G leaves the backbone after `exit_layer` (default layer2, the official
`selfcon_pos [False, True, False]`). Its size (`selfcon_size`, the official argument) is
- "fc" (the official CIFAR script): GAP -> Linear(C_exit -> D), the only new layer;
- "same" (the official ImageNet script): an unshared, freshly initialised copy of the backbone's
  stages after the exit (layer3 + layer4 for the layer2 exit), then GAP;
- "small": the same with half the blocks per stage (at least one).
The backbone exit F and the sub-network exit G each have their own projection head (SupCon shape,
512 -> 512 -> 128). The exits are the "views" of one SupCon loss, contrast mode "all", tau = 0.1,
tau_base = 0.07, and gradients flow through both exits into the shared stages.

Variants (`variant`), with the positives P(a) of an exit embedding a:
- "S" (default, the paper's headline): supervised, one augmented view per image; P(a) = the same
  image's other exit and both exits of every same-class image.
- "M": supervised, two views, four embeddings per image; P(a) = every other embedding of the class.
- "MU": unsupervised, two views, the official SelfCon-MU (`main_represent.py` stacks the two views
  along the batch axis and `ConLoss` builds `eye(2B)` without labels): P(a) = the other exit of
  the *same view* only; the image's other view is a negative. The zoo's unsupervised SelfCon. As
  there, both views go through the network in one pass (BatchNorm sees 2B images).
- "MU-image": unsupervised, two views, an alternative reading kept for comparison: P(a) = the
  three other embeddings of the same image (both exits of the other view as well).
The sub-network and both heads are training-only; `export_encoder()` drops them. SelfCon
contrasts exits, not views against per-view targets, so it cannot host MixCo or IE-CL (batch
fusion, which only transforms the views, works).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..encoder import Encoder
from ..errors import ConfigError
from ..heads import build_head, supcon_projector
from ..limits import one_of, positive, whole
from ..losses import SupConLoss
from .base import Method

#: variant -> (supervised, views)
VARIANTS = {"S": (True, 1), "M": (True, 2), "MU": (False, 2), "MU-image": (False, 2)}
SIZES = ("fc", "same", "small")
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _exit_channels(stage: nn.Module) -> int:
    """Channels a ResNet stage outputs: the last conv's (BasicBlock conv2, Bottleneck conv3)."""
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _blocks(stage: nn.Module) -> tuple[type[nn.Module], int]:
    blocks = list(stage.children())
    return type(blocks[0]), len(blocks)


def sub_network(encoder: Encoder, exit_layer: str, size: str) -> nn.Module:
    """The sub-network G from the `exit_layer` feature map to a D-dimensional vector (D = the backbone's)."""
    if size == "fc":
        channels = _exit_channels(getattr(encoder, exit_layer))
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, encoder.num_features))
    later = STAGES[STAGES.index(exit_layer) + 1 :]
    block, _ = _blocks(getattr(encoder, later[0]))
    if block not in (BasicBlock, Bottleneck):
        raise ConfigError(f"selfcon_size={size!r} needs a torchvision ResNet backbone.")
    counts = [_blocks(getattr(encoder, stage))[1] for stage in STAGES]
    if size == "small":
        counts = [max(1, n // 2) for n in counts]
    # A fresh torchvision ResNet with these block counts: its later stages have the backbone's
    # shapes and torchvision's initialisation, and share no parameter with the backbone.
    fresh = ResNet(block, counts)  # type: ignore[arg-type]
    return nn.Sequential(*(getattr(fresh, stage) for stage in later), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class SelfCon(Method):
    name = "selfcon"
    supervised = True
    num_views = 1
    why_no_plugins = "contrasts the exits of one network, not views against per-view targets"

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        "temperature": positive(),
        "base_temperature": positive(),
        "proj_hidden_dim": whole(1),
        "proj_output_dim": whole(1),
        "exit_layer": one_of(("layer1", "layer2", "layer3")),
        "variant": one_of(VARIANTS),
        "selfcon_size": one_of(SIZES),
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
        selfcon_size: str = "fc",
    ):
        super().__init__(encoder)
        if variant not in VARIANTS:
            raise ConfigError(f"Unknown SelfCon variant {variant!r}; choose one of {list(VARIANTS)}.")
        if exit_layer not in STAGES[:-1]:
            raise ConfigError(f"exit_layer must be layer1, layer2 or layer3 (got {exit_layer!r}).")
        if selfcon_size not in SIZES:
            raise ConfigError(f"Unknown selfcon_size {selfcon_size!r}; choose one of {list(SIZES)}.")
        self.variant = variant
        self.supervised, self.num_views = VARIANTS[variant]  # type: ignore[misc]  # per-instance variant
        self.exit_layer = exit_layer
        self.selfcon_size = selfcon_size
        width = encoder.num_features
        self.sub_network = sub_network(encoder, exit_layer, selfcon_size)
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
        if self.variant == "MU":
            # The official layout: views stacked along the batch, exits as the loss's "views", no
            # labels, so each row's only positive is its other exit.
            sub, backbone = self.exit_embeddings(torch.cat(views))
            loss = self.loss_fn(torch.stack([sub, backbone], dim=1))
        else:
            columns = [embedding for view in views for embedding in self.exit_embeddings(view)]
            loss = self.loss_fn(torch.stack(columns, dim=1), labels if self.supervised else None)
        return loss, {"loss_selfcon": loss.detach()}
