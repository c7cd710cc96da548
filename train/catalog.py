"""The names `sslzoo-train` offers (datasets, recipes, settings), readable without PyTorch.

The command line builds its options and help from these, so `sslzoo-train --help` answers at once;
the modules that use the names (`datasets`, `recipes`) import them from here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DATASETS = ("cifar10", "cifar100", "stl10", "imagenet100", "imagefolder", "fake")

#: `TrainConfig`'s fields in order: the top-level keys `--set` accepts (a test keeps them in step).
SETTABLE_KEYS = (
    "method", "dataset", "plugins", "recipe", "description", "sources", "backbone", "stem", "input_size",
    "mean", "std", "interpolation", "hparams", "augment", "epochs", "batch_size", "optimizer", "lr",
    "lr_batch", "lr_scaling", "momentum", "nesterov", "weight_decay", "exclude_bias_norm_wd", "lars_eta",
    "lars_clip", "warmup_epochs", "warmup_start_factor", "min_lr_factor", "sync_batchnorm", "knn_every",
    "knn_bank_size", "knn_test_size", "log_every", "checkpoint_minutes", "seed", "device", "precision",
    "compile", "channels_last", "max_steps", "data_dir", "download", "workers", "fake_size",
    "fake_test_size",
)


def recipes_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("recipes")))


def available_recipes() -> list[str]:
    """Method names that have a recipe file."""
    return sorted(path.stem for path in recipes_dir().glob("*.toml"))
