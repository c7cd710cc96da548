"""What an exported encoder says about how it was made: method, data, recipe, hardware, time, command.

It is stored in the model's `config.json`, so the facts travel with the weights into every copy,
model card and registry entry (`sslzoo.export` reads them from there).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import sslzoo

from .recipes import TrainConfig
from .runtime import Runtime


def training_provenance(
    config: TrainConfig,
    method: nn.Module,
    runtime: Runtime,
    *,
    step: int,
    steps_per_epoch: int,
    num_views: int,
    train_seconds: float,
    wall_seconds: float,
    metrics: dict[str, Any],
    command: str,
) -> dict[str, Any]:
    """The provenance of the encoder `method` trained for `step` steps under `config`."""
    spec = getattr(method, "spec", None)
    views_per_s = num_views * step * config.batch_size / max(train_seconds, 1e-9)
    return {
        "method": config.method,
        "host": getattr(spec, "host", config.method),
        "plugins": list(getattr(spec, "plugins", config.plugins)),
        "dataset": config.dataset,
        "recipe": config.recipe,
        "epochs": round(step / steps_per_epoch, 4),
        "planned_epochs": config.epochs,
        "steps": step,
        "batch_size": config.batch_size,
        "hparams": dict(getattr(spec, "hparams", config.hparams)),
        "config": {k: v for k, v in config.to_json().items() if k not in ("data_dir", "device")},
        "metrics": metrics,
        "device": runtime.device_name(),
        "world_size": runtime.world,
        "precision": runtime.precision,
        "wall_time_s": round(wall_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "views_per_s": round(views_per_s, 2),
        "command": command,
        "sslzoo_version": sslzoo.__version__,
        "torch_version": torch.__version__,
    }
