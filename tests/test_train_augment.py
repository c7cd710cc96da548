"""On-device view augmentation: shapes, normalisation, per-image randomness, per-view settings."""

from __future__ import annotations

import torch
from sslzoo.train.augment import MultiViewAugmentation, ViewAugmentation, build_augmentation
from sslzoo.train.recipes import AUGMENT_DEFAULTS, resolve_config

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


def _images(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_identity_settings_only_normalise():
    images = _images()
    view = MultiViewAugmentation(16, MEAN, STD, [OFF])(images)[0]
    expected = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(view, expected, atol=1e-4, rtol=1e-4)


def test_solarise_inverts_pixels_above_one_half():
    images = _images()
    view = ViewAugmentation(16, (0, 0, 0), (1, 1, 1), {**OFF, "solarize": 1.0})(images.float() / 255)
    pixels = images.float() / 255
    torch.testing.assert_close(view, torch.where(pixels >= 0.5, 1 - pixels, pixels), atol=1e-5, rtol=0)


def test_each_image_gets_its_own_random_parameters():
    same = _images(1).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    settings = resolve_config("simclr", "cifar10").view_augment(0)
    views = MultiViewAugmentation(16, MEAN, STD, [settings])(same)[0]
    distinct = {tuple(v.flatten()[:64].tolist()) for v in views}
    assert len(distinct) > 12


def test_views_have_the_recipes_count_size_and_memory_format():
    config = resolve_config("byol", "fake", options={"input_size": 24})
    augmentation = build_augmentation(config, num_views=2)
    views = augmentation(_images(4, 32))
    assert [v.shape for v in views] == [(4, 3, 24, 24)] * 2
    assert all(v.dtype == torch.float32 for v in views)
    stacks = [[type(op).__name__ for op in view.ops] for view in augmentation.views]
    assert "RandomSolarize" not in stacks[0] and "RandomSolarize" in stacks[1]
    assert "RandomGaussianBlur" not in stacks[0]


def test_channels_last_when_asked():
    augmentation = MultiViewAugmentation(16, MEAN, STD, [OFF], channels_last=True)
    assert augmentation(_images())[0].is_contiguous(memory_format=torch.channels_last)


def test_same_seed_same_views():
    settings = resolve_config("simclr", "cifar10").view_augment(0)
    augmentation = MultiViewAugmentation(16, MEAN, STD, [settings, settings])
    torch.manual_seed(3)
    first = augmentation(_images())
    torch.manual_seed(3)
    second = augmentation(_images())
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])


def test_refuses_float_input():
    augmentation = MultiViewAugmentation(16, MEAN, STD, [OFF])
    try:
        augmentation(torch.zeros(1, 3, 16, 16))
    except TypeError as error:
        assert "uint8" in str(error)
    else:
        raise AssertionError("float input was accepted")
