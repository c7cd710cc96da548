"""Batched view augmentation on the training device, with independent random parameters per image.

A uint8 batch goes in; each view comes out as a normalised float batch (channels_last where
asked). The ops are kornia's (resized crop, flip, colour jitter, grayscale, Gaussian blur,
solarise), so no per-image Python work and no CPU worker is needed even for 100k images/s.
Each view has its own settings: BYOL's solarisation is on view 2 only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn


class ViewAugmentation(nn.Module):
    """One view's pipeline: crop, flip, jitter, grayscale, blur, solarise, normalise.

    `settings` are the keys of `train.recipes.AUGMENT_DEFAULTS`. Ops with probability 0 are left
    out. The crop warps all images in one batched call (kornia's "resample" mode) instead of
    one resize per image.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], settings: dict[str, Any]):
        super().__init__()
        ops: list[nn.Module] = [
            K.RandomResizedCrop(
                (size, size),
                scale=tuple(settings["crop_scale"]),
                ratio=tuple(settings["crop_ratio"]),
                cropping_mode="resample",
            )
        ]
        if settings["hflip"] > 0:
            ops.append(K.RandomHorizontalFlip(p=settings["hflip"]))
        if settings["jitter_p"] > 0 and any(settings["jitter"]):
            brightness, contrast, saturation, hue = settings["jitter"]
            ops.append(K.ColorJitter(brightness, contrast, saturation, hue, p=settings["jitter_p"]))
        if settings["grayscale"] > 0:
            ops.append(K.RandomGrayscale(p=settings["grayscale"]))
        if settings["blur"] > 0:
            sigma = tuple(settings["blur_sigma"])
            kernel = min(2 * math.ceil(3 * sigma[1]) + 1, size - 1 + size % 2)  # odd, at most the image
            ops.append(K.RandomGaussianBlur(kernel, sigma, p=settings["blur"]))
        if settings["solarize"] > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=settings["solarize"]))  # at 0.5
        self.ops = nn.Sequential(*ops)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`images`: float (B, 3, H, W) in [0, 1]. Returns the normalised view (B, 3, size, size)."""
        return (self.ops(images) - self.mean) / self.std


class MultiViewAugmentation(nn.Module):
    """All views of a batch: `forward(uint8 images) -> [view_1, ..., view_V]`.

    The uint8 -> float conversion happens once and is shared by the views.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        view_settings: Sequence[dict[str, Any]],
        channels_last: bool = False,
    ):
        super().__init__()
        self.views = nn.ModuleList(ViewAugmentation(size, mean, std, settings) for settings in view_settings)
        self.channels_last = channels_last

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"Augmentation expects uint8 images, got {images.dtype}.")
        pixels = images.float().div_(255.0)
        views = [view(pixels) for view in self.views]
        if self.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        return views


def build_augmentation(config: Any, num_views: int) -> MultiViewAugmentation:
    """The augmentation a `TrainConfig` describes, for a method that needs `num_views` views."""
    return MultiViewAugmentation(
        config.input_size,
        config.mean,
        config.std,
        [config.view_augment(view) for view in range(num_views)],
        channels_last=config.channels_last,
    )
