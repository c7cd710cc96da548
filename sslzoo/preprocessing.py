"""Turn what users hand us (PIL images, file paths, uint8 tensors) into normalised model input.

The same path serves every input type: everything becomes a uint8 CHW tensor first, then one
torchvision v2 pipeline resizes, crops and normalises it. That is why `Encoder.embed` gives the
same features for a PIL image, its file and its tensor.

Two rules keep one image one embedding, whatever route it takes (a file, a PIL image, an upload
to the demo server): a photo is embedded the way it is displayed (its EXIF orientation applied),
and the work is bounded by what the encoder sees: a file is decoded at no more than twice the
input size where the format allows it (JPEG draft mode, then a box reduce), and an extreme
aspect ratio is centre-cropped before the resize, so a 500000x1 strip costs no more than a
4x1 one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from .errors import ConfigError

ImageLike = Image.Image | str | os.PathLike | torch.Tensor | np.ndarray

#: Images larger than this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
#: The long side is centre-cropped to at most this many times the short side before resizing:
#: the resize then never makes more than `input_size**2 * ratio` pixels. Images within it are
#: untouched; beyond it the crop removes only what the final centre crop would drop anyway.
CROP_ASPECT_RATIO = 4.0
#: With a size hint, decoding stops shrinking at this many times the target side, so the
#: antialiased resize that follows still has enough pixels to average over.
REDUCE_MARGIN = 2

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


def upright(image: Image.Image) -> Image.Image:
    """The image as it is displayed: its EXIF orientation applied (and removed from its EXIF).

    Cameras store a rotated photo as shot plus an orientation tag; viewers rotate it. An
    unreadable tag leaves the image as stored rather than refusing it.
    """
    try:
        orientation = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return image
    if orientation in (None, 1):
        return image
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return image


def decode(image: Image.Image, size_hint: int | None = None) -> Image.Image:
    """Load an image just opened from a file as upright 8-bit RGB, no larger than the model needs.

    `size_hint` is the encoder's input side: a JPEG is then decoded at reduced scale (draft
    mode) and the result box-reduced, see `shrink`.
    """
    if size_hint is not None and image.format == "JPEG":
        side = REDUCE_MARGIN * size_hint
        image.draft("RGB", (side, side))
    image.load()
    return shrink(to_rgb(upright(image)), size_hint)


def shrink(image: Image.Image, size_hint: int | None) -> Image.Image:
    """Box-reduce by an integer factor while the short side stays >= `REDUCE_MARGIN * size_hint`.

    The antialiased resize of the eval transform finishes the job; averaging whole blocks first
    changes its result by far less than JPEG noise and saves a full-size tensor.
    """
    if size_hint is not None:
        factor = min(image.size) // (REDUCE_MARGIN * size_hint)
        if factor >= 2:
            return image.reduce(factor)
    return image


def open_image(path: str | os.PathLike, size_hint: int | None = None) -> Image.Image:
    """Open an image file as upright RGB (see `decode`), with errors that name the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageInputError(
                    f"{path}: {image.width}x{image.height} is larger than {MAX_PIXELS:,} pixels."
                )
            return decode(image, size_hint)
    except FileNotFoundError as error:
        raise ImageInputError(f"{path}: no such file.") from error
    except Image.DecompressionBombError as error:
        raise ImageInputError(f"{path}: too large to decode safely ({error}).") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        if isinstance(error, ImageInputError):
            raise
        raise ImageInputError(f"{path}: not a readable image ({error}).") from error


def to_uint8_chw(image: ImageLike, size_hint: int | None = None) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor, whatever form it came in.

    Files and PIL images are made upright and, with `size_hint`, shrunk alike, so a file and the
    PIL image opened from it give the same tensor (a large JPEG file is also decoded at reduced
    scale, which a PIL image handed over is not). Tensors are taken as they are.
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, size_hint)
    elif isinstance(image, Image.Image):
        try:
            image.load()
            image = shrink(to_rgb(upright(image)), size_hint)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageInputError(f"Cannot read this PIL image ({error}).") from error
    if isinstance(image, Image.Image):
        return v2.functional.pil_to_tensor(image)
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


class CropToAspectRatio(nn.Module):
    """Centre-crop the long side of a (..., H, W) image to at most `max_ratio` times the short side.

    Placed before `Resize(short side)`, it bounds the resize's output: without it, a 500000x1
    strip is stretched to 32 x 16,000,000 pixels only for the centre crop to keep 32 x 32.
    The crop keeps a margin (`max_ratio` >= 2 keeps at least half a side on each flank of the
    final crop), so the result differs from resizing the whole strip only by sub-pixel rounding.
    """

    def __init__(self, max_ratio: float = CROP_ASPECT_RATIO):
        super().__init__()
        if max_ratio < 2:
            raise ConfigError(f"max_ratio must be at least 2 (got {max_ratio}).")
        self.max_ratio = float(max_ratio)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        short = min(height, width)
        keep = max(1, int(self.max_ratio * short))
        if height > keep:
            top = (height - keep) // 2
            image = image[..., top : top + keep, :]
        elif width > keep:
            left = (width - keep) // 2
            image = image[..., left : left + keep]
        return image

    def extra_repr(self) -> str:
        return f"max_ratio={self.max_ratio}"


def eval_transform(
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
) -> v2.Compose:
    """The test-time pipeline: bound the aspect ratio, resize the short side, centre-crop, scale to
    [0, 1], normalise."""
    try:
        mode = InterpolationMode(interpolation)
    except ValueError as error:
        raise ConfigError(f"Unknown interpolation {interpolation!r}.") from error
    return v2.Compose(
        [
            CropToAspectRatio(),
            v2.Resize(input_size, interpolation=mode, antialias=True),
            v2.CenterCrop(input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def as_batch(images: ImageLike | Sequence[ImageLike], size_hint: int | None = None) -> list[torch.Tensor]:
    """Accept one image, a list of images, or a (B, C, H, W) uint8 tensor; return a list of CHW tensors.

    `size_hint` (the encoder's input side) lets files and PIL images be decoded no larger than needed.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return [to_uint8_chw(image) for image in images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [to_uint8_chw(image) for image in images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageInputError("No images given.")
        return [to_uint8_chw(image, size_hint) for image in images]
    return [to_uint8_chw(images, size_hint)]
