"""Batched view augmentation on the training device: a handful of tensor ops for every image at once.

A uint8 batch goes in; each view comes out normalised (float32 or bfloat16, channels_last where
asked), with its own random parameters per image: resized crop and horizontal flip, colour jitter
in a random order per image, grayscale, Gaussian blur, solarisation. Each view has its own
settings (the keys of `train.recipes.AUGMENT_DEFAULTS`): BYOL solarises view 2 only.

Why not a library. The views used to be kornia's. Its tracker records why that cannot keep a
GPU busy: a `RandomCrop` is about a hundred tiny kernel launches (kornia #4531), its random
parameters are drawn on the CPU and copied per op (PR #3825: 187 -> 40 ms/iter, torchvision v2
at 20), `RandomResizedCrop` fails under `torch.compile` (#3912) and ran at 2 images/s compiled
(PR #4647), and its `ColorJitter` draws one order of the four colour ops per batch where
torchvision draws one per image. Counted on a CPU for the two SimCLR views of a batch: kornia's
pipeline runs about 990 tensor ops, this module about 600 eager and, compiled, about 125 (fused
loops around 22 batched matmuls), with no host synchronisation. torchvision's own transforms work on one image at a time, in
DataLoader workers. `benchmarks/augment_throughput.py` measures all three against each other.

How it works, in three separable steps so that fixed parameters can be tested:

1. `MultiViewAugmentation.draw`: one `torch.rand` call on the device, from a `torch.Generator`
   the caller owns (and checkpoints), gives every uniform number every image of every view needs.
   This is the only step `torch.compile` cannot trace (it takes no Generator).
2. `ViewAugmentation.sample`: uniforms -> `ViewParams` (crop boxes, flips, factors, op order...)
   with tensor ops only: no host synchronisation, no Python loop over images.
3. `ViewAugmentation.apply`: the ops themselves, as torchvision's functional ops define them:
   - crop + resize + flip are one resampling pass: each image's crop box becomes two small
     matrices (rows and columns) holding the interpolation kernel (bilinear or bicubic, the
     recipe's `interpolation`) stretched by the downscale factor, i.e. torchvision's antialiased
     resize (`antialias=True`) exactly, flipped by reversing the column matrix; the view is
     `rows @ image @ columns.T`, two batched matmuls. (`grid_sample` cannot antialias.)
   - brightness, contrast, saturation and grayscale (ITU-R 601-2 luma, as torchvision) are
     per-image 3 x 3 colour maps, one batched matmul each (plus a clamp); hue is the HSV
     rotation. The four jitter ops run in an order drawn per image: the blends that precede the
     hue step run first (a factor of 1 is an exact identity for the others), then hue, then the
     rest, so hue is computed once instead of once per position.
   - blur as two 1-D convolutions (rows, then columns) with each image's own sigma,
     reflect-padded, written as banded matrices so that they too are two batched matmuls;
     solarise at 0.5.

On CUDA with TF32 matmuls allowed (the engine's `float32_matmul_precision("high")`) the matmuls
round their inputs to TF32: errors of about 1e-3 of the pixel range, a quarter of a uint8 level.

`torch.compile(view_batch, fullgraph=True)` (what `MultiViewAugmentation.compile()` does, and
the engine on CUDA) compiles steps 2 and 3 into fused kernels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from sslzoo.errors import ConfigError

from .recipes import AUGMENT_DEFAULTS, AUGMENT_LIMITS

logger = logging.getLogger("sslzoo.train")

#: Resampling kernels of the crop, by `interpolation` name (the values of the recipes and the zoo).
INTERPOLATIONS = ("bilinear", "bicubic")
#: ITU-R 601-2 luma weights, as torchvision's `rgb_to_grayscale`.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: torchvision's RandomResizedCrop tries this many (area, ratio) draws before its centre-crop fallback.
CROP_TRIES = 10

# Column layout of one image's uniforms (one row of `MultiViewAugmentation.draw` per image and view).
_AREA = slice(0, CROP_TRIES)
_RATIO = slice(CROP_TRIES, 2 * CROP_TRIES)
_TOP, _LEFT, _FLIP, _JITTER = range(2 * CROP_TRIES, 2 * CROP_TRIES + 4)
_FACTORS = slice(2 * CROP_TRIES + 4, 2 * CROP_TRIES + 8)  # brightness, contrast, saturation, hue
_ORDER = slice(2 * CROP_TRIES + 8, 2 * CROP_TRIES + 12)
_GRAY, _BLUR, _SIGMA, _SOLARIZE = range(2 * CROP_TRIES + 12, 2 * CROP_TRIES + 16)
#: Uniform numbers one image needs for one view.
UNIFORMS_PER_IMAGE = 2 * CROP_TRIES + 16

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


class ViewParams(NamedTuple):
    """Every random choice of one view, one row per image (what `sample` draws, what `apply` uses)."""

    box: torch.Tensor  # (B, 4) float: top, left, height, width of the crop, in whole input pixels
    flip: torch.Tensor  # (B,) bool: mirror left-right
    jitter: torch.Tensor  # (B,) bool: colour jitter applies
    factors: torch.Tensor  # (B, 4): brightness, contrast, saturation factors and the hue shift
    order: torch.Tensor  # (B, 4) long: the colour ops in the order they run (BRIGHTNESS... HUE)
    grayscale: torch.Tensor  # (B,) bool
    blur: torch.Tensor  # (B,) bool
    sigma: torch.Tensor  # (B,) float: the blur's standard deviation in pixels
    solarize: torch.Tensor  # (B,) bool


def view_generator(device: str | torch.device, *keys: int) -> torch.Generator:
    """A generator on `device` seeded from `keys` (e.g. run seed and process rank).

    The seed goes through NumPy's `SeedSequence`, so the stream is unrelated to the one
    `torch.manual_seed(seed)` starts (which initialises the weights and the methods' own draws).
    """
    seed = int(np.random.SeedSequence([0x5EED, *keys]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device).manual_seed(seed)


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The view settings checked against the recipes' `AUGMENT_LIMITS` (the key to fix named), normalised."""
    missing = sorted(set(AUGMENT_DEFAULTS) - set(settings))
    unknown = sorted(set(settings) - set(AUGMENT_DEFAULTS))
    if missing or unknown:
        raise ConfigError(
            f"View settings need exactly the keys of AUGMENT_DEFAULTS ({', '.join(AUGMENT_DEFAULTS)}); "
            f"missing {missing}, unknown {unknown}. Start from {{**AUGMENT_DEFAULTS, ...}} and switch "
            f"ops off with probability 0."
        )
    return {key: AUGMENT_LIMITS[key].check(f"augment.{key}", value) for key, value in settings.items()}


class ViewAugmentation(nn.Module):
    """One view: crop + flip, colour jitter, grayscale, blur, solarise, normalise.

    `settings` holds the keys of `train.recipes.AUGMENT_DEFAULTS`. Ops whose probability (or
    every jitter strength) is 0 are left out of the computation altogether, so a crop + flip
    view costs one resampling pass and the normalisation.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        settings: dict[str, Any],
        interpolation: str = "bilinear",
    ):
        super().__init__()
        settings = check_settings(settings)
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation={interpolation!r}: the augmentation resamples with one of "
                f"{', '.join(INTERPOLATIONS)}."
            )
        self.size = size
        self.settings = dict(settings)
        self.interpolation = interpolation
        strengths = settings["jitter"]
        self.jitter_on = settings["jitter_p"] > 0 and any(strengths)
        self.hue_on = self.jitter_on and strengths[HUE] > 0
        self.blur_on = settings["blur"] > 0
        # Odd, at most the image (reflect padding needs less than the image on each side); 3 sigma each side.
        self.blur_kernel = min(2 * math.ceil(3 * settings["blur_sigma"][1]) + 1, size - 1 + size % 2)
        mean_, std_ = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (mean, std))
        self.register_buffer("scale", 1.0 / std_, persistent=False)
        self.register_buffer("shift", -mean_ / std_, persistent=False)

    # --------------------------------------------------------------------------- parameters
    def sample(self, uniforms: torch.Tensor, height: int, width: int) -> ViewParams:
        """The view's parameters for images of `height` x `width` from (B, UNIFORMS_PER_IMAGE) uniforms."""
        s = self.settings
        box = crop_boxes(uniforms, height, width, s["crop_scale"], s["crop_ratio"])
        brightness, contrast, saturation, hue = s["jitter"]
        factors = torch.stack(
            [
                _uniform(uniforms[:, _FACTORS][:, 0], max(0.0, 1 - brightness), 1 + brightness),
                _uniform(uniforms[:, _FACTORS][:, 1], max(0.0, 1 - contrast), 1 + contrast),
                _uniform(uniforms[:, _FACTORS][:, 2], max(0.0, 1 - saturation), 1 + saturation),
                _uniform(uniforms[:, _FACTORS][:, 3], -hue, hue),
            ],
            dim=1,
        )
        return ViewParams(
            box=box,
            flip=uniforms[:, _FLIP] < s["hflip"],
            jitter=uniforms[:, _JITTER] < s["jitter_p"],
            factors=factors,
            # The ranks of four i.i.d. uniforms: a uniformly random permutation, per image.
            order=uniforms[:, _ORDER].argsort(dim=1),
            grayscale=uniforms[:, _GRAY] < s["grayscale"],
            blur=uniforms[:, _BLUR] < s["blur"],
            sigma=_uniform(uniforms[:, _SIGMA], *s["blur_sigma"]),
            solarize=uniforms[:, _SOLARIZE] < s["solarize"],
        )

    # ---------------------------------------------------------------------------------- ops
    def apply(self, pixels: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """`pixels`: float (B, 3, H, W) in [0, 1]. Returns the normalised float32 view (B, 3, size, size)."""
        s = self.settings
        x = resized_crop(pixels, params.box, params.flip, self.size, self.interpolation)
        if self.jitter_on:
            x = color_jitter(x, params.jitter, params.factors, params.order, hue=self.hue_on)
        if s["grayscale"] > 0:
            x = grayscale(x, where=params.grayscale)
        if self.blur_on:
            x = gaussian_blur(x, params.sigma, self.blur_kernel, where=params.blur)
        if s["solarize"] > 0:
            x = solarize(x, where=params.solarize)
        return torch.addcmul(self.shift, x, self.scale)  # (x - mean) / std in one pass

    def forward(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw, sample and apply in one call (float pixels in [0, 1])."""
        uniforms = torch.rand(len(pixels), UNIFORMS_PER_IMAGE, generator=generator, device=pixels.device)
        return self.apply(pixels, self.sample(uniforms, *pixels.shape[-2:]))


class MultiViewAugmentation(nn.Module):
    """All views of a batch: `forward(uint8 images) -> [view_1, ..., view_V]`.

    `generator` (a `torch.Generator` on the images' device, owned and checkpointed by the caller)
    makes the views reproducible; without one the global generator of the device is used.
    `dtype` is the views' dtype (float32 or bfloat16). `compile()` compiles everything but the
    one random draw.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        view_settings: Sequence[dict[str, Any]],
        channels_last: bool = False,
        *,
        interpolation: str = "bilinear",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not view_settings:
            raise ConfigError("An augmentation needs the settings of at least one view.")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConfigError(f"Views are float32, bfloat16 or float16, not {dtype}.")
        self.views = nn.ModuleList(
            ViewAugmentation(size, mean, std, settings, interpolation) for settings in view_settings
        )
        self.channels_last = channels_last
        self.dtype = dtype
        self.generator = generator
        self._compiled: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None = None

    def draw(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Every uniform number the views of `batch_size` images need, in one call: (V, B, N)."""
        if self.generator is not None and self.generator.device.type != device.type:
            raise ValueError(
                f"The augmentation's generator is on {self.generator.device}, the images on {device}; "
                f"create it with torch.Generator({str(device)!r})."
            )
        return torch.rand(
            len(self.views), batch_size, UNIFORMS_PER_IMAGE, generator=self.generator, device=device
        )

    def view_batch(self, images: torch.Tensor, uniforms: torch.Tensor) -> list[torch.Tensor]:
        """The views of uint8 `images` (B, 3, H, W) for the given uniforms: no randomness of its own."""
        # Laid out (B, H, C, W) in memory, so that the resampling matmuls need no copy (see _rows_and_columns).
        pixels = images.transpose(1, 2).contiguous().float().div_(255.0).transpose(1, 2)
        height, width = images.shape[-2:]
        views = []
        for view, view_uniforms in zip(self.views, uniforms.unbind(0)):
            out = view.apply(pixels, view.sample(view_uniforms, height, width)).to(self.dtype)
            if self.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
            views.append(out)
        return views

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"Augmentation expects uint8 images, got {images.dtype}.")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Augmentation expects RGB images (B, 3, H, W), got shape {tuple(images.shape)}."
            )
        uniforms = self.draw(len(images), images.device)
        if self._compiled is not None:
            try:
                return self._compiled(images, uniforms)
            except Exception as error:  # the compiler failed (no Triton, an old GPU...): same views, eager
                logger.warning(
                    "torch.compile failed on the augmentation, making the views eagerly: %s", error
                )
                self._compiled = None
        return self.view_batch(images, uniforms)

    def compile(self, **kwargs: Any) -> None:
        """Compile `view_batch` (all but the random draw, which takes a Generator) in place.

        If the compiler fails, `forward` says so in the log and makes the same views eagerly.
        """
        self._compiled = torch.compile(self.view_batch, **{"fullgraph": True, **kwargs})


def build_augmentation(
    config: Any,
    num_views: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> MultiViewAugmentation:
    """The augmentation a `TrainConfig` describes, for a method that needs `num_views` views."""
    return MultiViewAugmentation(
        config.input_size,
        config.mean,
        config.std,
        [config.view_augment(view) for view in range(num_views)],
        channels_last=config.channels_last,
        interpolation=config.interpolation,
        dtype=dtype,
        generator=generator,
    )


# ------------------------------------------------------------------------------ sampling
def crop_boxes(
    uniforms: torch.Tensor,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
) -> torch.Tensor:
    """RandomResizedCrop's boxes (top, left, height, width), drawn as torchvision draws them.

    torchvision tries up to ten (area, log-ratio) pairs per image and takes the first whose box
    fits, else a centre crop at the nearest allowed ratio. Here all ten tries of every image are
    drawn at once and the first that fits is picked with an argmax, so the distribution is
    torchvision's (fallback included) without a loop or a host synchronisation.
    """
    area = height * width * _uniform(uniforms[:, _AREA], scale[0], scale[1])
    log_ratio = _uniform(uniforms[:, _RATIO], math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    misses = (~fits).int().cumprod(dim=1).sum(dim=1, keepdim=True)  # tries before the first that fits
    found = misses.squeeze(1) < CROP_TRIES
    first = misses.clamp(max=CROP_TRIES - 1)
    fallback_h, fallback_w = _centre_crop_size(height, width, ratio)
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fallback_h))
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fallback_w))
    top = torch.minimum(torch.floor(uniforms[:, _TOP] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(uniforms[:, _LEFT] * (width - w + 1)), width - w)
    top = torch.where(found, top, float((height - fallback_h) // 2))
    left = torch.where(found, left, float((width - fallback_w) // 2))
    return torch.stack([top, left, h, w], dim=1)


def _centre_crop_size(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int]:
    """torchvision's fallback box: the whole image, cut to the nearest ratio in range."""
    image_ratio = width / height
    if image_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if image_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def _per_image(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------ geometry
def resized_crop(
    pixels: torch.Tensor, box: torch.Tensor, flip: torch.Tensor, size: int, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Crop each image to its box, resize it to `size` x `size` (antialiased) and mirror it where `flip`.

    Equals torchvision's `resized_crop(..., antialias=True)` then `hflip`, image by image.
    """
    top, left, h, w = box.unbind(dim=1)
    rows = resampling_weights(top, h, pixels.shape[-2], size, interpolation)  # (B, size, H)
    cols = resampling_weights(left, w, pixels.shape[-1], size, interpolation, flip)  # (B, size, W)
    out = _rows_and_columns(pixels, rows, cols.transpose(1, 2)).contiguous()  # the colour maps' layout
    if interpolation == "bicubic":
        out = out.clamp(0.0, 1.0)  # cubic weights overshoot; torchvision clamps uint8 images likewise
    return out


def _rows_and_columns(x: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """rows @ x[:, c] @ columns for every channel c, as two plain batched matmuls.

    Both run on x laid out (B, H, C, W) in memory: rows then multiplies (H, C * W) and columns
    (H' * C, W), with no broadcast over channels (a broadcast matmul is 3-4x slower on a CPU).
    The result keeps that layout (logically (B, C, H', W') as always).
    """
    batch, channels, height, width = x.shape
    out = torch.bmm(rows, x.transpose(1, 2).reshape(batch, height, channels * width))
    out = torch.bmm(out.view(batch, -1, width), columns)
    return out.view(batch, rows.shape[1], channels, columns.shape[2]).transpose(1, 2)


def resampling_weights(
    start: torch.Tensor,
    length: torch.Tensor,
    in_size: int,
    out_size: int,
    interpolation: str,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, out_size, in_size) weights that resample [start, start + length) of each row to `out_size`.

    torch's antialiased interpolation (`F.interpolate(..., antialias=True)`): output pixel i
    samples the crop at its centre, start + (i + 0.5) * scale, with the kernel stretched by the
    downscale factor (scale = length / out_size when above 1), over the crop's pixels only, and
    normalised to sum to 1. Where `flip`, output pixel i samples where pixel size - 1 - i would:
    the mirrored row.
    """
    scale = (length / out_size).unsqueeze(1)  # (B, 1)
    positions = torch.arange(out_size, device=start.device, dtype=torch.float32) + 0.5
    if flip is not None:
        positions = torch.where(flip.unsqueeze(1), out_size - positions, positions)  # (B, out)
    stretch = scale.clamp(min=1.0)
    centres = (start.unsqueeze(1) + scale * positions) / stretch  # (B, out), in stretched pixels
    pixel_centres = torch.arange(in_size, device=start.device, dtype=torch.float32) + 0.5
    distance = (pixel_centres / stretch).unsqueeze(1) - centres.unsqueeze(2)  # (B, out, in)
    weights = _triangle(distance) if interpolation == "bilinear" else _cubic(distance)
    inside = (pixel_centres >= start.view(-1, 1)) & (pixel_centres < (start + length).view(-1, 1))
    weights = weights.mul_(inside.unsqueeze(1))
    return weights.div_(weights.sum(dim=2, keepdim=True))


def _triangle(x: torch.Tensor) -> torch.Tensor:
    """The bilinear kernel max(0, 1 - |x|), in place on a temporary."""
    return x.abs_().neg_().add_(1.0).clamp_(min=0.0)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic with a = -0.5, the kernel of torch's (and PIL's) antialiased bicubic resize."""
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    # Masks as factors: torch.where over a full tensor is several times slower on a CPU.
    return near * (x < 1.0) + far * ((x >= 1.0) & (x < 2.0))


# -------------------------------------------------------------------------------- colour
def colour_transform(x: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Each pixel's RGB through its image's (3, 3) `matrix` (plus `bias`, (B, 3)): one batched matmul.

    Brightness, contrast, saturation and grayscale are all such maps. One `baddbmm` over the
    (B, 3, H * W) batch reads and writes the images once; the same map as separate elementwise
    ops (luma, then a fused multiply-add) took twice as long on a CPU. An identity matrix is an
    exact identity (x * 1 + y * 0 + z * 0).
    """
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)
    out = torch.bmm(matrix, flat) if bias is None else torch.baddbmm(bias.unsqueeze(2), matrix, flat)
    return out.view(batch, channels, height, width)


def _luma_rows(x: torch.Tensor) -> torch.Tensor:
    """(3, 3): every row the luma weights, the matrix that turns RGB into gray RGB."""
    return torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).expand(3, 3)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) ITU-R 601-2 luma of RGB images in [0, 1], as torchvision's `rgb_to_grayscale`."""
    r, g, b = x.unbind(dim=1)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def grayscale(x: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision's `rgb_to_grayscale(x, num_output_channels=3)`, of the images `where` selects (all by default)."""
    eye = torch.eye(3, device=x.device, dtype=x.dtype)
    where = torch.ones(len(x), dtype=torch.bool, device=x.device) if where is None else where
    return colour_transform(x, torch.where(where.view(-1, 1, 1), _luma_rows(x), eye))


def solarize(x: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision's `solarize(x, 0.5)` of the images `where` selects (all by default).

    On [0, 1], 1 - x is the smaller of the two exactly when x >= 0.5, so solarising is
    min(x, 1 - x); min(x, 2 - x) = x leaves the other images as they are.
    """
    if where is None:
        return torch.minimum(x, 1.0 - x)
    return torch.minimum(x, (2.0 - where.to(x.dtype)).view(-1, 1, 1, 1) - x)


def color_jitter(
    x: torch.Tensor,
    apply: torch.Tensor,
    factors: torch.Tensor,
    order: torch.Tensor,
    hue: bool = True,
) -> torch.Tensor:
    """torchvision's ColorJitter with per-image factors and a per-image order of its four ops.

    Image b runs `order[b]` (a permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE) where
    `apply[b]`, and is left as it is elsewhere. The hue step runs once for the whole batch: each
    image first runs the blends that precede its hue step (the others blend with factor 1, an
    exact identity), then hue, then the blends that follow it. `hue=False` leaves hue out
    (strength 0: torchvision skips it).
    """
    positions = torch.arange(4, device=order.device)
    hue_position = ((order == HUE).long() * positions).sum(dim=1)  # (B,): where hue runs
    ops, blend_factors = [], []
    for slot in range(3):  # the three blends in each image's order, skipping over the hue step
        index = slot + (slot >= hue_position).long()
        op = order.gather(1, index.unsqueeze(1)).squeeze(1)
        ops.append(op)
        blend_factors.append(torch.where(apply, factors.gather(1, op.unsqueeze(1)).squeeze(1), 1.0))
    if not hue:
        for slot in range(3):
            x = _blend(x, ops[slot], blend_factors[slot])
        return x
    for slot in range(3):
        x = _blend(x, ops[slot], torch.where(slot < hue_position, blend_factors[slot], 1.0))
    x = _select(apply, adjust_hue(x, factors[:, HUE]), x)
    for slot in range(3):
        x = _blend(x, ops[slot], torch.where(slot >= hue_position, blend_factors[slot], 1.0))
    return x


def _blend(x: torch.Tensor, op: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's brightness, contrast or saturation, chosen per image by `op`, as one colour map.

    All three are clamp(f * x + (1 - f) * reference, 0, 1), the reference being 0 (brightness),
    the mean luma (contrast) or the luma (saturation): the matrix f * I (+ (1 - f) * luma rows
    for saturation) and the bias (1 - f) * mean luma for contrast.
    """
    rest = 1.0 - factor
    eye = torch.eye(3, device=x.device, dtype=x.dtype)
    saturation = torch.where(op == SATURATION, rest, 0.0).view(-1, 1, 1)
    matrix = factor.view(-1, 1, 1) * eye + saturation * _luma_rows(x)
    mean_luma = x.mean(dim=(2, 3)) @ _luma_rows(x)[0]  # (B,): the mean of the luma plane
    bias = torch.where(op == CONTRAST, rest * mean_luma, 0.0).unsqueeze(1).expand(-1, 3)
    return colour_transform(x, matrix, bias).clamp_(0.0, 1.0)


def _select(where: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """Per image, `if_true` where `where` else `if_false`, exactly.

    A lerp with weights 0 or 1 returns either end exactly, and is faster on a CPU than
    `torch.where` with a broadcast mask.
    """
    return torch.lerp(if_false, if_true, _per_image(where.to(if_true.dtype)))


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `adjust_brightness` with a per-image factor."""
    return _blend(x, torch.full_like(factor, BRIGHTNESS, dtype=torch.long), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `adjust_contrast` with a per-image factor."""
    return _blend(x, torch.full_like(factor, CONTRAST, dtype=torch.long), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `adjust_saturation` with a per-image factor."""
    return _blend(x, torch.full_like(factor, SATURATION, dtype=torch.long), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's `adjust_hue` with a per-image shift (a fraction of a turn) of the HSV hue.

    The hue h in sixths of a turn from the RGB hexcone (the largest channel decides the sector,
    red before green before blue, as torchvision), shifted, then back to RGB in closed form:
    min + (max - min) * pure(h), where pure(h) is the fully saturated colour of hue h. Value and
    saturation stay as they were, as with torchvision's HSV round trip. Masks are float factors:
    `torch.where` and bool factors are several times slower on a CPU.
    """
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    delta = maxc - minc
    red, green = (maxc == r).to(x.dtype), (maxc == g).to(x.dtype)
    # Sector of the largest channel (0, 2 or 4 sixths) plus the signed distance to its neighbours;
    # lerp with a 0/1 weight picks one end exactly: red if red is the largest, else green, else blue.
    numerator = torch.lerp(torch.add(r - g, delta, alpha=4.0), torch.add(b - r, delta, alpha=2.0), green)
    numerator = torch.lerp(numerator, g - b, red)
    # Where max == min the numerator is 0 too; any error from the floor is scaled by delta below.
    sixths = numerator.div_(delta.clamp(min=1e-12)).add_(6.0 * shift.view(-1, 1, 1))
    sixths = sixths.sub_(torch.floor(sixths / 6.0).mul_(6.0))  # in [0, 6)
    channels = []  # the pure hue's red |h - 3| - 1, green 2 - |h - 2|, blue 2 - |h - 4|, in [0, 1]
    for centre, rising in ((3.0, True), (2.0, False), (4.0, False)):
        pure = (sixths - centre).abs_()
        pure = pure.sub_(1.0) if rising else pure.neg_().add_(2.0)
        channels.append(torch.addcmul(minc, delta, pure.clamp_(0.0, 1.0)))
    return torch.stack(channels, dim=1)


# ---------------------------------------------------------------------------------- blur
def gaussian_blur(
    x: torch.Tensor, sigma: torch.Tensor, kernel_size: int, where: torch.Tensor | None = None
) -> torch.Tensor:
    """torchvision's `gaussian_blur(x, kernel_size, sigma)` with a per-image sigma, reflect-padded.

    Separable: each image's 1-D kernel, reflect padding included, becomes a banded (S, S) matrix
    K, and the blur is K @ x @ K.T, two batched matmuls (faster than a depthwise convolution with
    one group per image and channel: 8 ms against 25 ms for 512 CIFAR images on one CPU core).
    Images that `where` leaves out get K = I, an exact identity.
    """
    batch, channels, height, width = x.shape
    if height != width:
        raise ValueError(f"The blur runs on square views, got {height} x {width}.")
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device)
    logits = -0.5 * (offsets / sigma.unsqueeze(1)) ** 2
    # Taps below e^-60 (1e-26 of the centre) become exact zeros: their exponentials would be
    # subnormal floats, which slow a CPU's matmul down several times over.
    logits = logits.masked_fill(logits < -60.0, float("-inf"))
    if where is not None:  # the unit kernel: all weight on the centre tap
        logits = logits.masked_fill(~where.unsqueeze(1) & (offsets != 0), float("-inf"))
    kernel = torch.softmax(logits, dim=1)  # (B, K), normalised
    source = (torch.arange(height, device=x.device).view(-1, 1) + offsets).abs()  # reflect at 0...
    source = torch.where(source > height - 1, 2 * (height - 1) - source, source)  # ...and at the end
    taps = (source.unsqueeze(-1) == torch.arange(height, device=x.device)).to(x.dtype)  # (S, K, S)
    band = (kernel @ taps.transpose(0, 1).reshape(kernel_size, height * height)).view(batch, height, height)
    return _rows_and_columns(x, band, band.transpose(1, 2))
