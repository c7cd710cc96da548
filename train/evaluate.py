"""Evaluate a frozen encoder on a labelled dataset: what `sslzoo-eval` runs, callable from Python.

kNN (both settings) always; the linear probe under one or both protocols (`LINEAR_PROTOCOLS`):
`fast` on the cached test-time features, `reference` on augmented crops and flips of the training
images through the frozen encoder (`sslzoo.reference_probe`), the crops and flips made by the
training pipeline's batched augmentation. Every linear result names its protocol and settings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.evaluation import FAST_PROBE, LINEAR_PROTOCOLS, extract_features, knn_report, linear_probe
from sslzoo.reference_probe import ReferenceProbe, reference_linear_probe, reference_probe_for

from .augment import MultiViewAugmentation
from .datasets import ImageTensors, load_split
from .recipes import AUGMENT_DEFAULTS

#: Linear-probe choices of `sslzoo-eval --linear-protocol`.
PROTOCOL_CHOICES = (*LINEAR_PROTOCOLS, "both")


def labelled_split(
    encoder: Encoder,
    dataset: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    size: int = 0,
    seed: int = 0,
    for_training: bool = False,
) -> tuple[ImageTensors | Dataset, int]:
    """(the labelled images of one split, number of classes); `size` > 0 keeps a fixed random subset.

    In-memory datasets come back as `ImageTensors`, image folders as a Dataset of (uint8, label);
    `for_training` decodes folder images with room for a random crop, as pretraining does.
    """
    data = load_split(
        dataset,
        split,
        data_dir=data_dir,
        download=download,
        input_size=encoder.input_size,
        for_training=for_training,
    )
    if isinstance(data, ImageTensors):
        data = data.labelled().subset(size, seed=seed)
        return data, data.num_classes
    num_classes = data.num_classes
    if 0 < size < len(data):
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size]
        return Subset(data, keep.sort().values.tolist()), num_classes
    return data, num_classes


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
    """(features, labels, number of classes) of the labelled images of one split, test-time preprocessing.

    `size` > 0 keeps a fixed random subset of that many images (chosen by `seed`).
    """
    data, num_classes = labelled_split(
        encoder, dataset, split, data_dir=data_dir, download=download, size=size, seed=seed
    )
    label = f"features ({split})" if progress else None
    if isinstance(data, ImageTensors):
        features, labels = extract_features(
            encoder, data.images, data.labels, batch_size=batch_size, device=device, progress=label
        )
    else:
        loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
        features, labels = extract_features(encoder, loader, device=device, progress=label)
    return features, labels, num_classes


def reference_augmentation(encoder: Encoder, settings: ReferenceProbe) -> MultiViewAugmentation:
    """The reference probe's training view: random resized crop and flip only, the encoder's normalisation."""
    view = {
        **AUGMENT_DEFAULTS,
        "crop_scale": list(settings.crop_scale),
        "hflip": settings.hflip,
        "jitter_p": 0.0,
        "grayscale": 0.0,
        "blur": 0.0,
        "solarize": 0.0,
    }
    return MultiViewAugmentation(encoder.input_size, encoder.mean, encoder.std, [view])


def linear_protocols(choice: str | Sequence[str]) -> tuple[str, ...]:
    """`"both"` or one protocol name (or a list of names) -> the protocols to run, in canonical order."""
    names = LINEAR_PROTOCOLS if choice == "both" else ((choice,) if isinstance(choice, str) else tuple(choice))
    unknown = [name for name in names if name not in LINEAR_PROTOCOLS]
    if unknown:
        raise ConfigError(f"Unknown linear-probe protocol(s) {unknown}; choose from {', '.join(PROTOCOL_CHOICES)}.")
    return tuple(name for name in LINEAR_PROTOCOLS if name in names)


def evaluate_on_dataset(
    encoder: Encoder,
    dataset: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    linear: bool = True,
    linear_protocol: str | Sequence[str] = "fast",
    linear_epochs: int | None = None,
    linear_lr: float | None = None,
    train_size: int = 0,
    test_size: int = 0,
    workers: int = 4,
    progress: bool = True,
    per_class: bool = False,
) -> dict[str, Any]:
    """kNN (both settings) and, unless `linear=False`, the linear probe, as one JSON-ready dict.

    The train split is the kNN bank and the probe's training set; the test split is scored.
    `linear_protocol` is `fast`, `reference` or `both`; `linear_epochs` / `linear_lr` replace the
    protocol's own (the reference probe's decay epochs move with its length). `report["linear"]`
    maps each protocol to its result: accuracy, protocol name and settings.
    `per_class` adds the k=200 kNN's accuracy per class and confusion matrix, with the class names.
    `weights_sha256` names the weights file measured (`Encoder.weights_sha256`: None for an
    encoder that was not loaded from one); the registry records numbers only with it.
    """
    started = time.perf_counter()
    protocols = linear_protocols(linear_protocol) if linear else ()
    device = torch.device(device)
    common = {"data_dir": data_dir, "download": download, "batch_size": batch_size, "device": device}
    train_x, train_y, num_classes = split_features(
        encoder, dataset, "train", size=train_size, seed=1, workers=workers, progress=progress, **common
    )
    test_x, test_y, _ = split_features(
        encoder, dataset, "test", size=test_size, seed=2, workers=workers, progress=progress, **common
    )
    report: dict[str, Any] = {
        "weights_sha256": encoder.weights_sha256,
        "dataset": dataset,
        "train_images": len(train_x),
        "test_images": len(test_x),
        "num_classes": num_classes,
        "feature_dim": int(train_x.shape[1]),
        **knn_report(train_x, train_y, test_x, test_y, num_classes, per_class=per_class),
    }
    if per_class:
        from sslzoo.export.class_figure import class_names

        report["per_class"]["class_names"] = class_names(dataset, num_classes)
    results: dict[str, Any] = {}
    if "fast" in protocols:
        settings = {**FAST_PROBE}
        settings.update({k: v for k, v in (("epochs", linear_epochs), ("lr", linear_lr)) if v is not None})
        accuracy = linear_probe(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes,
            epochs=settings["epochs"],
            lr=settings["lr"],
            batch_size=settings["batch_size"],
            momentum=settings["momentum"],
            weight_decay=settings["weight_decay"],
            progress=progress,
        )
        results["fast"] = {"protocol": "fast", **settings, **accuracy}
    if "reference" in protocols:
        provenance = encoder.provenance or {}
        settings_ref = reference_probe_for(provenance.get("method"), provenance.get("host"))
        settings_ref = settings_ref.with_overrides(linear_epochs, linear_lr)
        images, _ = labelled_split(
            encoder,
            dataset,
            "train",
            data_dir=data_dir,
            download=download,
            size=train_size,
            seed=1,  # the same subset as the features above
            for_training=True,
        )
        augment = reference_augmentation(encoder, settings_ref).to(device)
        if isinstance(images, ImageTensors):
            images = images.to(device) if device.type == "cuda" else images  # one copy, then slices
            train_images, train_labels = images.images, images.labels
        else:
            train_images, train_labels = images, None
        accuracy = reference_linear_probe(
            encoder,
            train_images,
            train_labels,
            test_x,
            test_y,
            num_classes,
            augment=lambda batch: augment(batch)[0],
            settings=settings_ref,
            device=device,
            workers=workers,
            progress=progress,
        )
        results["reference"] = {"protocol": "reference", **settings_ref.to_json(), **accuracy}
    if protocols:
        report["linear"] = results
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
