"""ResNet backbones from torchvision, with the CIFAR stem the SSL literature uses for small images.

Parameter names stay torchvision's, so a state dict saved by sslzoo loads into a torchvision
ResNet once its stem is swapped the same way (see `torchvision_resnet`).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet50

from .errors import ConfigError

BACKBONES = {"resnet18": (resnet18, 512), "resnet50": (resnet50, 2048)}
STEMS = ("cifar", "imagenet")

#: Module names, in order, that make up a headless ResNet.
RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")


def num_features(backbone: str) -> int:
    """Width of the pooled feature of `backbone`."""
    _check(backbone, "cifar")
    return BACKBONES[backbone][1]


def torchvision_resnet(backbone: str = "resnet18", stem: str = "cifar") -> nn.Module:
    """A plain torchvision ResNet with `fc` removed and, for `stem="cifar"`, the small-image stem.

    The CIFAR stem (MoCo CIFAR demo, SelfCon, spectral) is a 3x3 stride-1 conv with padding 1 and
    no max-pool: a 32 px input keeps 32x32 maps in layer1. sslzoo's weights load into this module
    with `strict=True`.
    """
    _check(backbone, stem)
    net = BACKBONES[backbone][0](weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _check(backbone: str, stem: str) -> None:
    if backbone not in BACKBONES:
        raise ConfigError(f"Unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
    if stem not in STEMS:
        raise ConfigError(f"Unknown stem {stem!r}; choose one of {list(STEMS)}.")
