"""The `reference` linear probe: augmented training images through the frozen encoder, per-method settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sslzoo.reference_probe import (
    DEFAULT_REFERENCE_PROBE,
    REFERENCE_PROBES,
    ReferenceProbe,
    reference_linear_probe,
    reference_probe_for,
)


class ColourEncoder(nn.Module):
    """A stand-in encoder: the mean colour of the image, with a BatchNorm to show it stays frozen."""

    num_features = 3

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(images.mean(dim=(2, 3)))


def solid_colours(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of three classes: mostly red, green or blue, with noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    images = torch.randint(0, 60, (len(labels), 3, 8, 8), generator=generator)
    images[torch.arange(len(labels)), labels] += 180
    return images.to(torch.uint8), labels


def flip_and_scale(images: torch.Tensor) -> torch.Tensor:
    """A crop-free stand-in for the crops and flips: random horizontal flips, then [0, 1]."""
    flip = torch.rand(len(images)) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images.float() / 255


def test_the_settings_follow_supcontrast_and_selfcon():
    assert (reference_probe_for("supcon").lr, reference_probe_for("selfcon").lr) == (5.0, 3.0)
    assert reference_probe_for("selfcon").milestones == (60, 80) and reference_probe_for("selfcon").gamma == 0.1
    for method in ("simclr", "mocov2", "byol", "mixco", "spectral", "minc", "batchfusion", "iecl", None):
        assert reference_probe_for(method) is DEFAULT_REFERENCE_PROBE
    assert reference_probe_for("unknown-run", host="supcon") is REFERENCE_PROBES["supcon"]
    default = DEFAULT_REFERENCE_PROBE
    assert (default.lr, default.epochs, default.milestones, default.gamma) == (1.0, 100, (60, 75, 90), 0.2)
    assert (default.batch_size, default.momentum, default.weight_decay, default.crop_scale) == (
        512,
        0.9,
        0.0,
        (0.2, 1.0),
    )
    assert "main_linear.py" in default.source and default.to_json()["schedule"] == "step"


def test_a_shorter_probe_keeps_its_decay_at_the_same_place_in_the_schedule():
    short = REFERENCE_PROBES["selfcon"].with_overrides(epochs=10)
    assert (short.epochs, short.milestones, short.lr) == (10, (6, 8), 3.0)
    assert DEFAULT_REFERENCE_PROBE.with_overrides(lr=0.5).lr == 0.5
    assert DEFAULT_REFERENCE_PROBE.with_overrides() is DEFAULT_REFERENCE_PROBE


def test_the_probe_learns_from_augmented_images_and_is_reproducible():
    encoder = ColourEncoder().train()
    running = encoder.norm.running_mean.clone()
    train_images, train_labels = solid_colours(20, seed=0)
    test_images, test_labels = solid_colours(10, seed=1)
    with torch.no_grad():
        test_features = encoder.eval()(test_images.float() / 255)
    encoder.train()
    settings = ReferenceProbe(lr=1.0, epochs=30, milestones=(20,), batch_size=16)
    state = torch.random.get_rng_state()
    runs = [
        reference_linear_probe(
            encoder, train_images, train_labels, test_features, test_labels, 3, augment=flip_and_scale, settings=settings
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0]["top1"] == 100.0
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    assert encoder.training and torch.equal(encoder.norm.running_mean, running)  # frozen in eval mode
    other_seed = reference_linear_probe(
        encoder, train_images, train_labels, test_features, test_labels, 3,
        augment=flip_and_scale, settings=settings, seed=1,
    )
    assert other_seed["top1"] == 100.0


def test_the_probe_reads_a_dataset_and_skips_unlabelled_images():
    encoder = ColourEncoder()
    images, labels = solid_colours(12, seed=0)
    labels = labels.clone()
    labels[::4] = -1  # unlabelled images never reach the loss
    test_images, test_labels = solid_colours(6, seed=1)
    with torch.no_grad():
        test_features = encoder.eval()(test_images.float() / 255)
    result = reference_linear_probe(
        encoder,
        TensorDataset(images, labels),
        None,
        test_features,
        test_labels,
        3,
        augment=flip_and_scale,
        settings=ReferenceProbe(lr=1.0, epochs=30, milestones=(20,), batch_size=8),
    )
    assert result["top1"] == 100.0
    with pytest.raises(ValueError, match="train_labels"):
        reference_linear_probe(encoder, images, None, test_features, test_labels, 3, augment=flip_and_scale)


def test_the_learning_rate_steps_down_at_the_milestones():
    encoder = ColourEncoder()
    images, labels = solid_colours(8, seed=0)
    with torch.no_grad():
        test_features = encoder.eval()(images.float() / 255) * 0.1

    def probe(epochs: int, gamma: float) -> dict[str, float]:
        settings = ReferenceProbe(lr=0.05, epochs=epochs, milestones=(1,), gamma=gamma, batch_size=4)
        return reference_linear_probe(
            encoder, images, labels, test_features, labels, 3, augment=flip_and_scale, settings=settings
        )

    # After the first epoch the lr is 0: four more epochs change nothing; without the decay they do.
    assert probe(1, gamma=0.0) == probe(5, gamma=0.0)
    assert probe(5, gamma=1.0)["top1"] > probe(1, gamma=1.0)["top1"]
