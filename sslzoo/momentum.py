"""Momentum (EMA) targets: the slow copy of a network that MoCo, BYOL and MINC regress onto."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_tau(progress: float, base_tau: float, final_tau: float = 1.0) -> float:
    """EMA rate rising from `base_tau` (progress 0) to `final_tau` (progress 1) on a half cosine.

    tau(p) = final - (final - base) * (cos(pi * p) + 1) / 2, as BYOL and solo-learn's `update_tau`.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * progress) + 1.0) / 2.0


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of `module`: the optimiser never sees it, only `update_momentum` moves it."""
    target = copy.deepcopy(module)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter.

    Buffers (BatchNorm running statistics) are not averaged: the target's own forward passes in
    train mode keep them, as in the official MoCo and BYOL code.
    """
    online_params = [p.detach() for p in online.parameters()]
    target_params = list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError("update_momentum needs two networks of the same architecture.")
    torch._foreach_lerp_(target_params, online_params, 1.0 - tau)
