"""The Encoder: shapes, save/load round trip, torchvision compatibility, and `embed` on every input type."""

from __future__ import annotations

import numpy as np
import pytest
import rss
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision.models import resnet18

import sslzoo
from sslzoo.backbones import torchvision_resnet


@pytest.fixture(scope="module")
def encoder() -> sslzoo.Encoder:
    torch.manual_seed(0)
    return sslzoo.Encoder(backbone="resnet18", stem="cifar", provenance={"method": "test"}).eval()


def test_forward_gives_pooled_features_of_the_documented_width(encoder):
    features = encoder(torch.randn(3, 3, 32, 32))
    assert features.shape == (3, 512) == (3, encoder.num_features)


def test_cifar_stem_keeps_resolution_and_imagenet_stem_downsamples():
    cifar = sslzoo.Encoder(stem="cifar")
    imagenet = sslzoo.Encoder(stem="imagenet", input_size=224)
    _, cifar_maps = cifar.forward_with_exits(torch.randn(1, 3, 32, 32), exits=("layer1", "layer2"))
    _, imagenet_maps = imagenet.forward_with_exits(torch.randn(1, 3, 64, 64), exits=("layer1",))
    assert cifar_maps["layer1"].shape[-2:] == (32, 32)
    assert cifar_maps["layer2"].shape[1:] == (128, 16, 16)
    assert imagenet_maps["layer1"].shape[-2:] == (16, 16)  # 7x7 stride-2 conv + max-pool
    assert isinstance(cifar.maxpool, nn.Identity) and cifar.conv1.kernel_size == (3, 3)


def test_resnet50_has_2048_features():
    assert sslzoo.Encoder(backbone="resnet50", stem="imagenet", input_size=224).num_features == 2048


def test_unknown_backbone_or_stem_is_a_config_error():
    with pytest.raises(sslzoo.ConfigError, match="resnet18"):
        sslzoo.Encoder(backbone="vgg11")
    with pytest.raises(sslzoo.ConfigError, match="cifar"):
        sslzoo.Encoder(stem="tiny")


def test_save_and_load_round_trip_is_bit_exact(encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = sslzoo.load(tmp_path / "model")
    assert not loaded.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(encoder(x), loaded(x))
    assert loaded.provenance == {"method": "test"}
    assert loaded.config == encoder.config


@pytest.mark.parametrize("max_shard_size", [None, "5MB"])
def test_saved_weights_are_as_readable_as_the_other_files(encoder, tmp_path, max_shard_size):
    import os
    import stat

    old = os.umask(0o022)
    try:
        encoder.save_pretrained(tmp_path / "model", max_shard_size=max_shard_size)
    finally:
        os.umask(old)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "model").iterdir()}
    assert len(modes) > 3 if max_shard_size else len(modes) == 3
    assert set(modes.values()) == {0o644}, modes  # safetensors alone would leave the weights 0600


def test_from_pretrained_of_the_hub_mixin_reads_the_same_folder(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    loaded = sslzoo.Encoder.from_pretrained(tmp_path, strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(encoder(x), loaded(x))


def test_weights_load_into_a_torchvision_resnet_with_the_stem_swapped(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    # The documented one-liner, spelled out with plain torchvision:
    net = resnet18()
    net.conv1, net.maxpool, net.fc = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity(), nn.Identity()
    net.load_state_dict(state)  # strict: every key matches, none missing
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net(x), encoder(x))
    helper = torchvision_resnet("resnet18", "cifar").eval()
    helper.load_state_dict(state)
    assert torch.equal(helper(x), encoder(x))


def test_embed_gives_the_same_features_for_pil_file_and_tensor(encoder, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    path = tmp_path / "image.png"
    image.save(path)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    from_pil, from_file, from_tensor = encoder.embed(image), encoder.embed(path), encoder.embed(tensor)
    assert from_pil.shape == (1, 512)
    assert torch.allclose(from_pil.norm(dim=1), torch.ones(1))
    assert torch.equal(from_pil, from_file) and torch.equal(from_pil, from_tensor)
    batch = encoder.embed([image, str(path), tensor])
    assert torch.allclose(batch, from_pil.expand(3, -1), atol=1e-6)


def test_embed_converts_grayscale_rgba_and_16_bit_images(encoder):
    gray = Image.fromarray(np.full((32, 32), 128, dtype=np.uint8), mode="L")
    rgba = Image.fromarray(np.full((32, 32, 4), 128, dtype=np.uint8), mode="RGBA")
    deep = Image.fromarray(np.full((32, 32), 128 * 257, dtype=np.uint16))
    features = encoder.embed([gray, rgba, deep])
    assert features.shape == (3, 512) and torch.isfinite(features).all()
    assert torch.allclose(features[0], features[2], atol=1e-5)  # 16-bit 32896 == 8-bit 128


def test_embed_refuses_what_is_not_an_image(encoder, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(sslzoo.ConfigError, match="notes.txt"):
        encoder.embed(tmp_path / "notes.txt")
    with pytest.raises(sslzoo.ConfigError, match="uint8"):
        encoder.embed(torch.rand(3, 32, 32))


def test_an_extreme_aspect_ratio_costs_what_the_encoder_sees_not_what_the_resize_would_make(encoder, tmp_path):
    """A 500000x1 strip stretched to a 32 px short side would be 16 million pixels wide (GBs of floats)
    for the centre crop to keep 32x32; cropping the long side first bounds the work."""
    strip = tmp_path / "strip.png"
    Image.new("RGB", (500_000, 1), (200, 30, 30)).save(strip)
    encoder.embed(torch.zeros(3, 32, 32, dtype=torch.uint8))  # warm up
    with rss.peak_growth() as growth:
        features = encoder.embed(strip)
    assert growth.mb < 100
    same_colour = encoder.embed(Image.new("RGB", (4, 1), (200, 30, 30)))
    assert torch.allclose(features, same_colour, atol=1e-6)
    tall = encoder.preprocess(torch.zeros(3, 200_000, 2, dtype=torch.uint8))
    assert tall.shape == (1, 3, 32, 32)


def test_the_aspect_crop_leaves_ordinary_images_untouched():
    from sslzoo.preprocessing import CROP_ASPECT_RATIO, CropToAspectRatio

    crop = CropToAspectRatio()
    image = torch.zeros(3, 30, int(30 * CROP_ASPECT_RATIO))
    assert crop(image) is image
    assert crop(torch.zeros(3, 30, 1000)).shape == (3, 30, 120)
    assert crop(torch.zeros(3, 1000, 30)).shape == (3, 120, 30)


def orientation_6_jpeg(path, displayed: Image.Image) -> None:
    """Save `displayed` the way a camera held upright-turned stores it: pixels rotated, EXIF tag 6."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    displayed.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=95, exif=exif)


def test_embed_sees_a_photo_as_displayed_whatever_its_exif_orientation(encoder, tmp_path):
    from PIL import ImageOps

    pixels = np.random.default_rng(3).integers(0, 256, size=(48, 32, 3), dtype=np.uint8)  # 32 wide, 48 tall
    path = tmp_path / "portrait.jpg"
    orientation_6_jpeg(path, Image.fromarray(pixels))
    stored = Image.open(path)
    assert stored.size == (48, 32)  # stored sideways
    as_displayed = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert as_displayed.size == (32, 48)
    from_file = encoder.embed(path)
    assert torch.equal(from_file, encoder.embed(Image.open(path)))  # an opened file: same embedding
    as_tensor = torch.from_numpy(np.array(as_displayed)).permute(2, 0, 1).contiguous()
    assert torch.equal(from_file, encoder.embed(as_tensor))
    sideways = torch.from_numpy(np.array(stored.convert("RGB"))).permute(2, 0, 1).contiguous()
    assert not torch.allclose(from_file, encoder.embed(sideways), atol=1e-4)


def test_large_files_are_decoded_no_larger_than_the_encoder_needs(encoder, tmp_path):
    from sslzoo.preprocessing import open_image

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(path, quality=90)
    reduced = open_image(path, size_hint=32)
    assert 64 <= min(reduced.size) < 128
    assert open_image(path).size == (4000, 3000)  # without a hint: full size (datasets, galleries)
    assert torch.allclose(encoder.embed(path), encoder.embed(Image.new("RGB", (40, 30), (10, 200, 30))), atol=2e-3)
