"""Warm-up + cosine schedule, SGD and LARS (timm) with the methods' lars_exclude flag."""

from __future__ import annotations

import math

import pytest
import torch
from sslzoo.train.optim import build_optimizer, lr_at, set_lr
from sslzoo.train.recipes import resolve_config
from timm.optim import Lars


def test_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0) == 0.0
    assert lr_at(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(0, 100, 10, 1.0, start_factor=0.02) == pytest.approx(0.02)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, min_factor=0.001) == pytest.approx(0.001)
    assert lr_at(30, 100, 0, 2.0) == pytest.approx(1.0 + math.cos(math.pi * 0.3))


def _groups(model: torch.nn.Module) -> list[dict]:
    return [
        {"params": [model.weight], "weight_decay": 1e-4, "lars_exclude": False},
        {"params": [model.bias], "weight_decay": 0.0, "lars_exclude": True, "lr_scale": 0.5},
    ]


def test_lars_adapts_only_groups_not_excluded():
    model = torch.nn.Linear(4, 3)
    config = resolve_config("simclr", "cifar10")
    optimizer = build_optimizer(_groups(model), config, torch.device("cpu"))
    assert isinstance(optimizer, Lars)
    assert [g["always_adapt"] for g in optimizer.param_groups] == [True, False]
    assert optimizer.param_groups[0]["trust_coeff"] == 0.02 and optimizer.param_groups[0]["trust_clip"]
    set_lr(optimizer, 0.2)
    assert [g["lr"] for g in optimizer.param_groups] == [0.2, 0.1]
    # Excluded (bias) group: a plain momentum-SGD step of lr * grad.
    bias_before = model.bias.detach().clone()
    model(torch.randn(5, 4)).sum().backward()
    grad = model.bias.grad.clone()
    optimizer.step()
    torch.testing.assert_close(model.bias.detach(), bias_before - 0.1 * grad)


def test_sgd_recipe():
    model = torch.nn.Linear(4, 3)
    optimizer = build_optimizer(
        _groups(model), resolve_config("mocov2", "cifar10", options={"batch_size": 512}), torch.device("cpu")
    )
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]
