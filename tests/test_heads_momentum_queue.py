"""Heads built from layer specs, the EMA update and its cosine schedule, the key queue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslzoo.heads import (
    Layer,
    build_head,
    byol_predictor,
    byol_projector,
    simclr_projector,
    spectral_projector,
    supcon_projector,
)
from sslzoo.momentum import cosine_tau, momentum_copy, update_momentum
from sslzoo.queue import KeyQueue


def layer_types(head: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in head]


def test_heads_have_the_reference_dimensions():
    assert simclr_projector(512) == [Layer(512, 2048, False, "relu"), Layer(2048, 256, False, None)]
    assert supcon_projector(512) == [Layer(512, 512, False, "relu"), Layer(512, 128, False, None)]
    assert byol_projector(512) == [Layer(512, 4096, True, "relu"), Layer(4096, 256, False, None)]
    assert byol_predictor() == [Layer(256, 4096, True, "relu"), Layer(4096, 256, False, None)]
    assert spectral_projector(512) == [Layer(512, 2048, True, "relu"), Layer(2048, 1000, True, None)]


def test_build_head_follows_the_specs():
    head = build_head(spectral_projector(8, 16, 4))
    assert layer_types(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head[0].bias is None and head[3].bias is None  # BatchNorm replaces the bias
    assert head(torch.randn(5, 8)).shape == (5, 4)
    plain = build_head(simclr_projector(8, 16, 4))
    assert layer_types(plain) == ["Linear", "ReLU", "Linear"] and plain[0].bias is not None
    with pytest.raises(ValueError, match="Unknown activation"):
        build_head([Layer(2, 2, activation="swish")])


def test_cosine_tau_rises_from_base_to_final():
    assert cosine_tau(0.0, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_tau(0.5, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_tau(1.0, 0.99, 0.999) == pytest.approx(0.999)
    values = [cosine_tau(p / 10, 0.9, 1.0) for p in range(11)]
    assert values == sorted(values)
    assert cosine_tau(1.5, 0.9, 1.0) == pytest.approx(1.0)  # clamped


def test_update_momentum_is_the_ema_of_parameters_only():
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(5.0)
    old = [p.clone() for p in target.parameters()]
    update_momentum(online, target, tau=0.9)
    for new, before, current in zip(target.parameters(), old, online.parameters()):
        assert torch.allclose(new, 0.9 * before + 0.1 * current)
    assert torch.equal(target[1].running_mean, torch.zeros(2))  # buffers are the target's own


def test_queue_enqueues_in_order_and_wraps_around():
    queue = KeyQueue(size=5, dim=2)
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    first = F.normalize(torch.randn(3, 2), dim=1)
    queue.enqueue(first)
    assert torch.equal(queue.keys[:3], first) and int(queue.ptr) == 3
    second = F.normalize(torch.randn(3, 2), dim=1)
    queue.enqueue(second)
    assert torch.equal(queue.keys[3:], second[:2]) and torch.equal(queue.keys[0], second[2])
    assert int(queue.ptr) == 1


def test_queue_keeps_the_newest_keys_when_a_batch_exceeds_it():
    queue = KeyQueue(size=3, dim=2)
    keys = torch.arange(10.0).view(5, 2)
    queue.enqueue(keys)
    assert sorted(queue.keys[:, 0].tolist()) == [4.0, 6.0, 8.0]


def test_queue_is_saved_with_the_state_dict():
    queue = KeyQueue(size=4, dim=3)
    queue.enqueue(torch.ones(2, 3))
    restored = KeyQueue(size=4, dim=3)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and int(restored.ptr) == 2
