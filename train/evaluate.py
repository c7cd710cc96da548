"""Evaluate a frozen encoder on a labelled dataset: what `sslzoo-eval` runs, callable from Python."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from sslzoo.encoder import Encoder
from sslzoo.evaluation import evaluate_features, extract_features

from .datasets import ImageTensors, load_split

#: The linear-probe recipe `evaluate_on_dataset` runs (reported with its results).
LINEAR_RECIPE = {
    "batch_size": 512,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "features": "standardised with the training set's mean and std",
}


def split_features(
    encoder: Encoder,
    dataset: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    size: int = 0,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    workers: int = 4,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features, labels, number of classes) of the labelled images of one split.

    `size` > 0 keeps a fixed random subset of that many images (chosen by `seed`).
    """
    data = load_split(dataset, split, data_dir=data_dir, download=download, input_size=encoder.input_size)
    label = f"features ({split})" if progress else None
    if isinstance(data, ImageTensors):
        data = data.labelled().subset(size, seed=seed)
        features, labels = extract_features(
            encoder, data.images, data.labels, batch_size=batch_size, device=device, progress=label
        )
        return features, labels, data.num_classes
    num_classes = data.num_classes
    if 0 < size < len(data):
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size]
        data = Subset(data, keep.sort().values.tolist())
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
    features, labels = extract_features(encoder, loader, device=device, progress=label)
    return features, labels, num_classes


def evaluate_on_dataset(
    encoder: Encoder,
    dataset: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    linear: bool = True,
    linear_epochs: int = 100,
    linear_lr: float = 0.03,
    train_size: int = 0,
    test_size: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """kNN (both protocols) and, unless `linear=False`, the linear probe, as one JSON-ready dict.

    The train split is the kNN bank and the probe's training set; the test split is scored.
    """
    started = time.perf_counter()
    common = {
        "data_dir": data_dir,
        "download": download,
        "batch_size": batch_size,
        "device": device,
        "progress": progress,
    }
    train_x, train_y, num_classes = split_features(
        encoder, dataset, "train", size=train_size, seed=1, **common
    )
    test_x, test_y, _ = split_features(encoder, dataset, "test", size=test_size, seed=2, **common)
    result = evaluate_features(
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes,
        linear=linear,
        linear_kwargs={"epochs": linear_epochs, "lr": linear_lr, "progress": progress},
    )
    report: dict[str, Any] = {
        "dataset": dataset,
        "train_images": len(train_x),
        "test_images": len(test_x),
        "num_classes": num_classes,
        "feature_dim": int(train_x.shape[1]),
        **result,
    }
    if linear:
        report["linear_recipe"] = {"epochs": linear_epochs, "lr": linear_lr, **LINEAR_RECIPE}
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
