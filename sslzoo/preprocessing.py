"""Turn what users hand us (PIL images, file paths, uint8 tensors) into normalised model input.

The same path serves every input type: everything becomes a uint8 CHW tensor first, then one
torchvision v2 pipeline resizes, crops and normalises it. That is why `Encoder.embed` gives the
same features for a PIL image, its file and its tensor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode, v2

from .errors import ConfigError

ImageLike = Image.Image | str | os.PathLike | torch.Tensor | np.ndarray

#: Images larger than this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageInputError(ConfigError):
    """An input that is not a usable image (unreadable, corrupt, wrong shape or type)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: grayscale, palette, RGBA (on white), 16-bit, float."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(array / high * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, with errors that name the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageInputError(
                    f"{path}: {image.width}x{image.height} is larger than {MAX_PIXELS:,} pixels."
                )
            image.load()
            return to_rgb(image)
    except FileNotFoundError as error:
        raise ImageInputError(f"{path}: no such file.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageInputError):
            raise
        raise ImageInputError(f"{path}: not a readable image ({error}).") from error


def to_uint8_chw(image: ImageLike) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor, whatever form it came in."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        return v2.functional.pil_to_tensor(to_rgb(image))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3, 4):
            image = image.permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ImageInputError(f"Image tensors must be uint8 (got {image.dtype}); pass 0-255 pixels.")
        if image.ndim == 2:
            image = image.unsqueeze(0)
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ImageInputError(f"Expected a (C, H, W) image tensor with C in 1, 3, 4; got {tuple(image.shape)}.")
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return image[:3].contiguous()
    raise ImageInputError(f"Cannot use {type(image).__name__} as an image; pass a PIL image, path or uint8 tensor.")


def eval_transform(
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
) -> v2.Compose:
    """The test-time pipeline: resize the short side, centre-crop, scale to [0, 1], normalise."""
    try:
        mode = InterpolationMode(interpolation)
    except ValueError as error:
        raise ConfigError(f"Unknown interpolation {interpolation!r}.") from error
    return v2.Compose(
        [
            v2.Resize(input_size, interpolation=mode, antialias=True),
            v2.CenterCrop(input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def as_batch(images: ImageLike | Sequence[ImageLike]) -> list[torch.Tensor]:
    """Accept one image, a list of images, or a (B, C, H, W) uint8 tensor; return a list of CHW tensors."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return [to_uint8_chw(image) for image in images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [to_uint8_chw(image) for image in images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageInputError("No images given.")
        return [to_uint8_chw(image) for image in images]
    return [to_uint8_chw(images)]
