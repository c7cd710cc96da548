"""Training and evaluation of sslzoo encoders: `sslzoo-train`, `sslzoo-eval` and their Python API.

    >>> from sslzoo.train import resolve_config, train
    >>> config = resolve_config("simclr", "cifar10", options={"epochs": 100}, sets=["knn_bank_size=10000"])
    >>> result = train(config, "runs/simclr-c10")      # writes runs/simclr-c10/model/
    >>> resume("runs/simclr-c10")                       # after an interruption
    >>> from sslzoo.train import build, load_plan
    >>> build(load_plan("zoo"), "runs/zoo", budget_minutes=25)  # again until `.done`

Modules: `recipes` (recipes as data), `datasets`, `augment` (on-device views), `optim`; the
engine's rooms: `runtime` (device, processes, SIGTERM), `feeding` (batches), `stepping` (one
step), `monitor` (kNN), `metrics`, `checkpoint`, `run_folder` (the files), `folder_lock` (one
writer per folder), `provenance`; `engine` (the loop that puts them together), `evaluate`
(frozen-encoder evaluation on a dataset); the zoo builder's: `plans` (plans as data), `budget`
(time budgets and estimates), `build_folder` (RUNS/ and its results file), `builder` (the
orchestration); `cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .builder import BuildOutcome, build
    from .engine import TrainResult, resume, train
    from .evaluate import evaluate_on_dataset
    from .plans import Plan, load_plan
    from .recipes import TrainConfig, available_recipes, resolve_config

#: Each public name and its module, imported on first use: `sslzoo-train --help` then needs neither
#: the engine nor its optional packages.
_LAZY = {
    "BuildOutcome": ".builder",
    "build": ".builder",
    "TrainResult": ".engine",
    "resume": ".engine",
    "train": ".engine",
    "evaluate_on_dataset": ".evaluate",
    "Plan": ".plans",
    "load_plan": ".plans",
    "TrainConfig": ".recipes",
    "available_recipes": ".recipes",
    "resolve_config": ".recipes",
}

__all__ = [
    "BuildOutcome",
    "Plan",
    "TrainConfig",
    "TrainResult",
    "available_recipes",
    "build",
    "evaluate_on_dataset",
    "load_plan",
    "resolve_config",
    "resume",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslzoo.train' has no attribute {name!r}")
