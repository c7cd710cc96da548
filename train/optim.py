"""Optimisers and the learning-rate schedule of the recipes: SGD or LARS, linear warm-up then cosine.

LARS is timm's (`timm.optim.Lars`); the `lars_exclude` flag of a method's parameter groups
(biases and norms, as solo-learn excludes them) switches its trust ratio off per group.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from sslzoo.errors import ConfigError
from sslzoo.extras import require

Lars = require("timm.optim", "train", "Training").Lars


def build_optimizer(
    param_groups: list[dict[str, Any]], config: Any, device: torch.device
) -> torch.optim.Optimizer:
    """The recipe's optimiser over `param_groups` (from `Method.param_groups`), at the peak lr.

    SGD uses the fused CUDA kernel on GPU and the multi-tensor (foreach) path elsewhere.
    """
    groups = [dict(group) for group in param_groups if group["params"]]
    lr = config.effective_lr
    if config.optimizer == "sgd":
        fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            **fast,
        )
    if config.optimizer == "lars":
        for group in groups:
            exclude = bool(group.get("lars_exclude", False))
            # timm adapts a group when its weight decay is non-zero or `always_adapt` is set.
            group["always_adapt"] = not exclude
            if exclude and group.get("weight_decay", config.weight_decay) != 0:
                warnings.warn(
                    "A parameter group is flagged lars_exclude but has weight decay; timm's LARS adapts it anyway.",
                    stacklevel=2,
                )
        return Lars(
            groups,
            lr=lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            trust_coeff=config.lars_eta,
            trust_clip=config.lars_clip,
            foreach=True,
        )
    raise ConfigError(f"Unknown optimizer {config.optimizer!r}; choose sgd or lars.")


def lr_at(
    step: int,
    total_steps: int,
    warmup_steps: int,
    peak_lr: float,
    start_factor: float = 0.0,
    min_factor: float = 0.0,
) -> float:
    """Learning rate before optimiser step `step` (0-based): linear warm-up, then half-cosine decay.

    Warm-up goes from `start_factor * peak` to `peak` over `warmup_steps`; the cosine then decays
    to `min_factor * peak` at `total_steps` (solo-learn's warmup_cosine, per step).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (start_factor + (1.0 - start_factor) * step / warmup_steps)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = peak_lr * min_factor
    return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr, times the group's own `lr_scale` when a method asks for one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
