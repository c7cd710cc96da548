"""Training and evaluation of sslzoo encoders: `sslzoo-train`, `sslzoo-eval` and their Python API.

    >>> from sslzoo.train import resolve_config, train
    >>> config = resolve_config("simclr", "cifar10", options={"epochs": 100}, sets=["knn_bank_size=10000"])
    >>> result = train(config, "runs/simclr-c10")      # writes runs/simclr-c10/model/
    >>> resume("runs/simclr-c10")                       # after an interruption

Modules: `recipes` (recipes as data), `datasets`, `augment` (on-device views), `optim`; the
engine's rooms: `runtime` (device, processes, SIGTERM), `feeding` (batches), `stepping` (one
step), `monitor` (kNN), `metrics`, `checkpoint`, `run_folder` (the files), `provenance`; `engine`
(the loop that puts them together), `evaluate` (frozen-encoder evaluation on a dataset), `cli`.
"""

from __future__ import annotations

from .engine import TrainResult, resume, train
from .evaluate import evaluate_on_dataset
from .recipes import TrainConfig, available_recipes, resolve_config

__all__ = [
    "TrainConfig",
    "TrainResult",
    "available_recipes",
    "evaluate_on_dataset",
    "resolve_config",
    "resume",
    "train",
]
