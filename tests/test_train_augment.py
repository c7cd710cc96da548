"""On-device view augmentation, pinned to torchvision: each op for fixed parameters, the parameters'
distributions over many draws, and the module's behaviour (views, generator, dtype, layout).

Tolerances: the ops are compared on float images in [0, 1]; they agree with torchvision's
functional ops to 2e-5 (float32 rounding: the crop is a matmul where torch's resize is a
gather-and-sum, the hue a closed form where torchvision goes through a sector table).
"""

from __future__ import annotations

import ast
import itertools
import math
import tomllib
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
from sslzoo.train import augment as A
from sslzoo.train.augment import (
    MultiViewAugmentation,
    ViewAugmentation,
    ViewParams,
    build_augmentation,
    view_generator,
)
from sslzoo.train.recipes import AUGMENT_DEFAULTS, resolve_config
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from sslzoo.errors import ConfigError

ATOL = 2e-5
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
OFF = {
    **AUGMENT_DEFAULTS,
    "crop_scale": [1.0, 1.0],
    "crop_ratio": [1.0, 1.0],
    "hflip": 0.0,
    "jitter_p": 0.0,
    "grayscale": 0.0,
    "blur": 0.0,
    "solarize": 0.0,
}
ALL_ON = {**AUGMENT_DEFAULTS, "blur": 0.5, "solarize": 0.2, "jitter": [0.4, 0.4, 0.4, 0.1]}


def _images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _pixels(n: int, height: int, width: int | None = None, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width or height, generator=torch.Generator().manual_seed(seed))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def _params(n: int, **fields) -> ViewParams:
    """Fixed parameters for `n` images: identity everywhere unless given."""
    off = torch.zeros(n, dtype=torch.bool)
    defaults = {
        "box": torch.tensor([[0.0, 0.0, 16.0, 16.0]]).repeat(n, 1),
        "flip": off,
        "jitter": off,
        "factors": torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1),
        "order": torch.arange(4).repeat(n, 1),
        "grayscale": off,
        "blur": off,
        "sigma": torch.ones(n),
        "solarize": off,
    }
    return ViewParams(**{**defaults, **fields})


def _sample(settings: dict, n: int, height: int = 32, width: int = 32, seed: int = 0) -> ViewParams:
    view = ViewAugmentation(32, MEAN, STD, settings)
    uniforms = torch.rand(n, A.UNIFORMS_PER_IMAGE, generator=torch.Generator().manual_seed(seed))
    return view.sample(uniforms, height, width)


def _ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def _ks_bound(n: int, m: int) -> float:
    """The KS distance two samples of one distribution exceed with probability 1e-4."""
    return 2.15 * math.sqrt((n + m) / (n * m))


# ----------------------------------------------------------------- ops against torchvision
CROPS = [(0, 0, 40, 37), (3, 5, 20, 11), (10, 2, 7, 30), (1, 1, 39, 36), (0, 20, 40, 17), (39, 36, 1, 1)]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [8, 16, 37, 50])  # downscaled (antialiased), both ways, upscaled
def test_crop_resize_and_flip_equal_torchvision(interpolation, size):
    pixels = _pixels(len(CROPS), 40, 37)
    box = torch.tensor(CROPS, dtype=torch.float32)
    flip = torch.tensor([False, True] * (len(CROPS) // 2))
    views = A.resized_crop(pixels, box, flip, size, interpolation)
    for image, (top, left, height, width), flipped, view in zip(pixels, CROPS, flip, views):
        expected = TF.resized_crop(
            image, top, left, height, width, [size, size], InterpolationMode(interpolation), antialias=True
        )
        if interpolation == "bicubic":
            expected = expected.clamp(0, 1)  # as torchvision rounds uint8 images back into range
        _close(view, TF.hflip(expected) if flipped else expected)


def test_brightness_contrast_saturation_and_hue_equal_torchvision():
    pixels = _pixels(6, 12)
    factors = torch.tensor([0.0, 0.3, 0.9, 1.0, 1.4, 1.8])
    for name, ours in (
        ("brightness", A.adjust_brightness),
        ("contrast", A.adjust_contrast),
        ("saturation", A.adjust_saturation),
    ):
        adjust = getattr(TF, f"adjust_{name}")
        out = ours(pixels, factors)
        for image, factor, view in zip(pixels, factors.tolist(), out):
            _close(view, adjust(image, factor))
    shifts = torch.tensor([-0.5, -0.25, -0.01, 0.0, 0.2, 0.49])
    out = A.adjust_hue(pixels, shifts)
    for image, shift, view in zip(pixels, shifts.tolist(), out):
        _close(view, TF.adjust_hue(image, shift))


def test_hue_handles_gray_pixels_and_ties_between_channels():
    levels = torch.tensor([0.0, 0.25, 0.5, 1.0])
    ties = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, 8, 8)
    pixels = torch.stack([ties, ties.flip(0)])
    for shift in (-0.3, 0.1, 0.5):
        out = A.adjust_hue(pixels, torch.full((2,), shift))
        for image, view in zip(pixels, out):
            _close(view, TF.adjust_hue(image, shift))


def test_grayscale_and_solarize_equal_torchvision():
    pixels = _pixels(4, 10)
    pixels[0, :, 0, :3] = torch.tensor([0.5, 0.5 - 1e-7, 0.5 + 1e-7])  # the threshold itself
    for image, gray, solar in zip(pixels, A.grayscale(pixels), A.solarize(pixels)):
        _close(gray, TF.rgb_to_grayscale(image, num_output_channels=3))
        torch.testing.assert_close(solar, TF.solarize(image, 0.5), atol=0, rtol=0)


@pytest.mark.parametrize("size,kernel", [(32, 13), (16, 13), (7, 7), (5, 5)])
def test_blur_equals_torchvision_per_image_sigma(size, kernel):
    pixels = _pixels(4, size)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = A.gaussian_blur(pixels, sigma, kernel)
    for image, s, view in zip(pixels, sigma.tolist(), out):
        _close(view, TF.gaussian_blur(image, [kernel, kernel], [s, s]))


def _torchvision_jitter(image: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op in order:
        image = ops[op](image, factors[op])
    return image


def test_colour_jitter_runs_every_image_in_its_own_order():
    orders = list(itertools.permutations(range(4)))  # all 24 orders, one image each
    pixels = _pixels(len(orders), 8)
    factors = torch.tensor([[0.6, 1.5, 0.3, 0.2], [1.4, 0.5, 1.8, -0.3]]).repeat(12, 1)
    apply = torch.ones(len(orders), dtype=torch.bool)
    apply[::5] = False  # these are left as they are
    out = A.color_jitter(pixels, apply, factors, torch.tensor(orders))
    for image, f, order, applied, view in zip(pixels, factors.tolist(), orders, apply, out):
        _close(view, _torchvision_jitter(image, f, list(order)) if applied else image)
    # The order matters for these factors: the first two orders' results differ.
    assert not torch.allclose(out[1], _torchvision_jitter(pixels[1], factors[1].tolist(), list(orders[0])))


def test_colour_jitter_without_hue_keeps_the_order_of_the_blends():
    orders = torch.tensor([[3, 0, 1, 2], [1, 3, 2, 0], [2, 1, 0, 3]])
    pixels = _pixels(3, 8)
    factors = torch.tensor([[0.6, 1.5, 0.3, 0.0]]).repeat(3, 1)
    out = A.color_jitter(pixels, torch.ones(3, dtype=torch.bool), factors, orders, hue=False)
    for image, order, view in zip(pixels, orders.tolist(), out):
        _close(view, _torchvision_jitter(image, factors[0].tolist(), [op for op in order if op != 3]))


def test_whole_view_equals_the_torchvision_pipeline_image_by_image():
    """Crop+resize, flip, jitter, grayscale, blur, solarise, normalise for fixed parameters."""
    n = 6
    pixels = _pixels(n, 20)
    params = _params(
        n,
        box=torch.tensor(
            [[0, 0, 20, 20], [2, 3, 10, 14], [5, 0, 15, 12], [0, 4, 16, 16], [1, 1, 6, 9], [3, 7, 17, 13]],
            dtype=torch.float32,
        ),
        flip=torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.bool),
        jitter=torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool),
        factors=torch.tensor([[0.7, 1.3, 0.5, 0.05], [1.2, 0.8, 1.6, -0.08]]).repeat(3, 1),
        order=torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(n)]),
        grayscale=torch.tensor([0, 0, 1, 0, 1, 0], dtype=torch.bool),
        blur=torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool),
        sigma=torch.tensor([0.3, 1.0, 1.9, 0.8, 1.2, 0.1]),
        solarize=torch.tensor([0, 1, 1, 0, 0, 1], dtype=torch.bool),
    )
    view = ViewAugmentation(16, MEAN, STD, {**ALL_ON, "blur_sigma": [0.1, 2.0]})
    out = view.apply(pixels, params)
    for b in range(n):
        top, left, height, width = (int(v) for v in params.box[b])
        image = TF.resized_crop(pixels[b], top, left, height, width, [16, 16], antialias=True)
        if params.flip[b]:
            image = TF.hflip(image)
        if params.jitter[b]:
            image = _torchvision_jitter(image, params.factors[b].tolist(), params.order[b].tolist())
        if params.grayscale[b]:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if params.blur[b]:
            image = TF.gaussian_blur(image, [view.blur_kernel] * 2, [float(params.sigma[b])] * 2)
        if params.solarize[b]:
            image = TF.solarize(image, 0.5)
        torch.testing.assert_close(out[b], TF.normalize(image, MEAN, STD), atol=1e-4, rtol=0)  # /std <= 5x


# --------------------------------------------------------------------- parameter sampling
@pytest.mark.parametrize("height,width", [(32, 32), (24, 40), (96, 64)])
def test_crop_boxes_are_distributed_as_torchvisions(height, width):
    """Area fractions, log ratios and positions of the boxes, against torchvision's own sampler."""
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    n = 4000
    ours = _sample(
        {**AUGMENT_DEFAULTS, "crop_scale": list(scale), "crop_ratio": list(ratio)}, n, height, width
    )
    torch.manual_seed(1)
    image = torch.zeros(3, height, width)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)],
        dtype=torch.float32,
    )  # (top, left, height, width), as ours
    for box in (ours.box, theirs):
        top, left, h, w = box.unbind(1)
        assert bool(((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)).all())
        assert bool(((h >= 1) & (w >= 1)).all())

    def area_and_log_ratio(box):
        return box[:, 2] * box[:, 3] / (height * width), torch.log(box[:, 3] / box[:, 2])

    for ours_stat, their_stat in zip(area_and_log_ratio(ours.box), area_and_log_ratio(theirs)):
        assert _ks_distance(ours_stat, their_stat) < _ks_bound(n, n)
    # Where the box sits: uniform over the room left, as torchvision's randint.
    room = (height - ours.box[:, 2]).clamp(min=1)
    assert _ks_distance(
        ours.box[:, 0] / room, theirs[:, 0] / (height - theirs[:, 2]).clamp(min=1)
    ) < _ks_bound(n, n)


def test_crop_areas_and_ratios_stay_in_range_and_uniform_before_rejection():
    """On a large image (rounding negligible) with scale <= 0.25 every first try fits: the law is uniform."""
    n = 20000
    params = _sample(
        {**AUGMENT_DEFAULTS, "crop_scale": [0.05, 0.25], "crop_ratio": [0.5, 2.0]}, n, 2000, 2000
    )
    area = params.box[:, 2] * params.box[:, 3] / 2000**2
    log_ratio = torch.log(params.box[:, 3] / params.box[:, 2])
    assert 0.05 * 0.995 < float(area.min()) and float(area.max()) < 0.25 * 1.005
    assert -math.log(2) - 0.01 < float(log_ratio.min()) and float(log_ratio.max()) < math.log(2) + 0.01
    uniform = torch.linspace(0, 1, n)
    assert _ks_distance((area - 0.05) / 0.2, uniform) < 0.02
    assert _ks_distance((log_ratio + math.log(2)) / (2 * math.log(2)), uniform) < 0.02


def test_crop_falls_back_to_torchvisions_centre_crop_when_no_try_fits():
    # A 10 x 100 strip and ratios near 1: nearly every try is too tall.
    params = _sample({**AUGMENT_DEFAULTS, "crop_scale": [0.9, 1.0], "crop_ratio": [0.9, 1.1]}, 500, 10, 100)
    fallback = params.box[(params.box[:, 2] == 10) & (params.box[:, 3] == 11)]
    assert len(fallback) > 400  # (1 - P(fit))^10 of the images
    torch.testing.assert_close(fallback[0], torch.tensor([0.0, 44.0, 10.0, 11.0]))  # (100 - 11) // 2
    assert bool((fallback == fallback[0]).all())


def test_each_op_fires_at_its_probability():
    n = 20000
    settings = {
        **AUGMENT_DEFAULTS,
        "hflip": 0.5,
        "jitter_p": 0.8,
        "grayscale": 0.2,
        "blur": 0.3,
        "solarize": 0.1,
    }
    params = _sample(settings, n)
    for field, p in (("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2), ("blur", 0.3), ("solarize", 0.1)):
        rate = float(getattr(params, field).float().mean())
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n), (field, rate)
    # Independent of each other: flip and grayscale co-occur at the product of their rates.
    both = float((params.flip & params.grayscale).float().mean())
    assert abs(both - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)
    off = _sample(OFF, 1000)
    assert not any(bool(getattr(off, f).any()) for f in ("flip", "jitter", "grayscale", "blur", "solarize"))


def test_jitter_factors_and_blur_sigma_span_torchvisions_ranges():
    n = 20000
    params = _sample({**AUGMENT_DEFAULTS, "jitter": [0.8, 0.4, 1.2, 0.2], "blur_sigma": [0.1, 2.0]}, n)
    uniform = torch.linspace(0, 1, n)
    for column, (low, high) in enumerate([(0.2, 1.8), (0.6, 1.4), (0.0, 2.2), (-0.2, 0.2)]):
        values = params.factors[:, column]
        assert low <= float(values.min()) and float(values.max()) <= high
        assert _ks_distance((values - low) / (high - low), uniform) < 0.02
    assert _ks_distance((params.sigma - 0.1) / 1.9, uniform) < 0.02


def test_colour_op_order_is_uniform_and_independent_per_image():
    n = 24000
    order = _sample(AUGMENT_DEFAULTS, n).order
    assert bool((order.sort(dim=1).values == torch.arange(4)).all())  # each row a permutation
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[torch.bincount(codes, minlength=256) > 0]
    assert len(counts) == 24
    chi2 = float(((counts - n / 24) ** 2 / (n / 24)).sum())
    assert chi2 < 60  # 23 degrees of freedom: P(chi2 > 60) < 1e-4
    # Independent between images: neighbours share an order 1/24 of the time, not always.
    same = float((codes[1:] == codes[:-1]).float().mean())
    assert abs(same - 1 / 24) < 0.01


# ------------------------------------------------------------------------ module behaviour
def test_identity_settings_only_normalise():
    images = _images()
    view = MultiViewAugmentation(16, MEAN, STD, [OFF])(images)[0]
    expected = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(view, expected, atol=1e-5, rtol=0)


def test_crop_and_flip_only_views_equal_torchvision():
    """A linear probe's views: every op but the crop and the flip switched off."""
    settings = {**OFF, "crop_scale": [0.08, 1.0], "crop_ratio": [3 / 4, 4 / 3], "hflip": 0.5}
    augmentation = MultiViewAugmentation(
        24, MEAN, STD, [settings], generator=torch.Generator().manual_seed(5)
    )
    view = augmentation.views[0]
    assert not (view.jitter_on or view.blur_on)
    images = _images(16, 32)
    uniforms = augmentation.draw(16, images.device)
    out = augmentation.view_batch(images, uniforms)[0]
    params = view.sample(uniforms[0], 32, 32)
    assert 0 < int(params.flip.sum()) < 16
    for image, box, flip, actual in zip(images.float() / 255, params.box, params.flip, out):
        top, left, height, width = (int(v) for v in box)
        expected = TF.resized_crop(image, top, left, height, width, [24, 24], antialias=True)
        expected = TF.normalize(TF.hflip(expected) if flip else expected, MEAN, STD)
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_each_image_gets_its_own_random_parameters():
    same = _images(1).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    settings = resolve_config("simclr", "cifar10").view_augment(0)
    views = MultiViewAugmentation(16, MEAN, STD, [settings])(same)[0]
    distinct = {tuple(v.flatten()[:64].tolist()) for v in views}
    assert len(distinct) > 12


def test_views_have_the_recipes_count_size_dtype_and_interpolation():
    config = resolve_config("byol", "fake", options={"input_size": 24})
    augmentation = build_augmentation(config, num_views=2)
    views = augmentation(_images(4, 32))
    assert [v.shape for v in views] == [(4, 3, 24, 24)] * 2
    assert all(v.dtype == torch.float32 for v in views)
    assert [view.interpolation for view in augmentation.views] == [config.interpolation] * 2
    stl = build_augmentation(resolve_config("simclr", "stl10"), num_views=2)
    assert stl.views[0].interpolation == resolve_config("simclr", "stl10").interpolation


def test_byol_solarises_view_two_only():
    config = resolve_config("byol", "cifar10")
    augmentation = build_augmentation(config, num_views=2)
    first, second = augmentation.views
    n = 20000
    uniforms = torch.rand(2, n, A.UNIFORMS_PER_IMAGE, generator=torch.Generator().manual_seed(0))
    assert not bool(first.sample(uniforms[0], 32, 32).solarize.any())
    rate = float(second.sample(uniforms[1], 32, 32).solarize.float().mean())
    assert abs(rate - 0.2) < 0.012
    assert not (first.blur_on or second.blur_on)  # the recipe blurs neither view at 32 px
    # And the solarised images of view 2 are what solarisation makes of the rest of its ops.
    forced = ViewAugmentation(32, MEAN, STD, {**second.settings, "solarize": 1.0})
    pixels = _pixels(8, 32)
    params = forced.sample(uniforms[1, :8], 32, 32)
    unsolarised = ViewAugmentation(32, (0, 0, 0), (1, 1, 1), {**second.settings, "solarize": 0.0})
    expected = TF.normalize(A.solarize(unsolarised.apply(pixels, params)), MEAN, STD)
    torch.testing.assert_close(forced.apply(pixels, params), expected, atol=1e-5, rtol=0)


def test_channels_last_and_bfloat16_views():
    augmentation = MultiViewAugmentation(
        16, MEAN, STD, [ALL_ON, OFF], channels_last=True, dtype=torch.bfloat16
    )
    views = augmentation(_images())
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in views)
    assert all(v.dtype == torch.bfloat16 for v in views)
    full = MultiViewAugmentation(16, MEAN, STD, [OFF])(_images())[0]
    torch.testing.assert_close(views[1].float(), full, atol=0.02, rtol=0.01)


def test_same_generator_state_same_views_as_a_resumed_run_needs():
    settings = resolve_config("simclr", "cifar10").view_augment(0)
    generator = view_generator("cpu", 3, 0)
    augmentation = MultiViewAugmentation(16, MEAN, STD, [settings, settings], generator=generator)
    augmentation(_images())  # a step before the checkpoint
    saved = generator.get_state()
    expected = augmentation(_images())
    torch.manual_seed(123)  # the global generator plays no part
    generator.manual_seed(99)
    generator.set_state(saved)
    resumed = augmentation(_images())
    assert all(torch.equal(a, b) for a, b in zip(expected, resumed))
    assert not torch.equal(expected[0], expected[1])  # two views, two draws
    fresh = MultiViewAugmentation(16, MEAN, STD, [settings], generator=view_generator("cpu", 3, 0))
    other_rank = MultiViewAugmentation(16, MEAN, STD, [settings], generator=view_generator("cpu", 3, 1))
    assert not torch.equal(fresh(_images())[0], other_rank(_images())[0])


def test_view_generator_is_not_the_global_stream_of_the_same_seed():
    torch.manual_seed(0)
    assert not torch.equal(torch.rand(8), torch.rand(8, generator=view_generator("cpu", 0)))


def test_view_batch_is_a_function_of_the_uniforms():
    augmentation = MultiViewAugmentation(16, MEAN, STD, [ALL_ON, ALL_ON])
    images = _images()
    uniforms = augmentation.draw(len(images), images.device)
    first, second = augmentation.view_batch(images, uniforms), augmentation.view_batch(images, uniforms)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_refuses_float_input_and_bad_settings():
    augmentation = MultiViewAugmentation(16, MEAN, STD, [OFF])
    with pytest.raises(TypeError, match="uint8"):
        augmentation(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="RGB"):
        augmentation(torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    for bad, key in (
        ({"hflip": 1.5}, "hflip"),
        ({"crop_scale": [0.5, 0.1]}, "crop_scale"),
        ({"crop_ratio": [0.0, 1.0]}, "crop_ratio"),
        ({"blur_sigma": [0.0, 2.0]}, "blur_sigma"),
        ({"jitter": [0.4, 0.4, 0.4, 0.7]}, "jitter"),
    ):
        with pytest.raises(ConfigError, match=key):
            MultiViewAugmentation(16, MEAN, STD, [{**OFF, **bad}])
    with pytest.raises(ConfigError, match="missing"):
        MultiViewAugmentation(16, MEAN, STD, [{"hflip": 0.5}])
    with pytest.raises(ConfigError, match="interpolation"):
        MultiViewAugmentation(16, MEAN, STD, [OFF], interpolation="lanczos")


def test_a_failing_compiler_falls_back_to_the_same_eager_views(monkeypatch, caplog):
    def broken_compiler(function, **options):
        def compiled(*args):
            raise RuntimeError("no backend here")

        return compiled

    generator = torch.Generator().manual_seed(0)
    augmentation = MultiViewAugmentation(8, MEAN, STD, [ALL_ON], generator=generator)
    expected = augmentation(_images())
    monkeypatch.setattr(torch, "compile", broken_compiler)
    augmentation.compile()
    generator.manual_seed(0)
    with caplog.at_level("WARNING", logger="sslzoo.train"):
        views = augmentation(_images())
    assert "no backend here" in caplog.text
    assert torch.equal(views[0], expected[0])


@pytest.mark.slow
def test_compiles_with_fullgraph_and_matches_eager():
    generator = torch.Generator().manual_seed(0)
    augmentation = MultiViewAugmentation(8, MEAN, STD, [ALL_ON], generator=generator)  # every op
    images = _images(4, 12)
    eager = augmentation(images)
    augmentation.compile()  # torch.compile(view_batch, fullgraph=True): fails on any graph break
    generator.manual_seed(0)
    compiled = augmentation(images)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_nothing_installed_imports_kornia_and_the_install_does_not_need_it():
    root = Path(__file__).resolve().parents[1]
    for package in ("sslzoo", "train", "export", "serve"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                assert not any(name.split(".")[0] == "kornia" for name in names), path
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("kornia") for dep in project["dependencies"])
    assert any(dep.startswith("kornia") for dep in project["optional-dependencies"]["benchmark"])
