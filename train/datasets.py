"""Datasets for pretraining and evaluation, as uint8 image tensors or a streamed image folder.

Small datasets (CIFAR-10/100, STL-10, FakeData) are read once into one (N, 3, H, W) uint8
tensor: it fits on a GPU, batches are gathered by index, and no worker process decodes images
every epoch. Image folders (ImageNet-100, anything in `class/image` layout) are too large for
that; they stream through a DataLoader that decodes and resizes to a fixed size, and the batch
then gets the same on-device augmentation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from sslzoo.errors import ConfigError
from sslzoo.loading import sslzoo_home
from sslzoo.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, open_image
from sslzoo.registry import registry_data

from .catalog import DATASETS

IN_MEMORY = ("cifar10", "cifar100", "stl10", "fake")
SPLITS = ("pretrain", "train", "test")

#: Images per class of FakeData; its labels are random, so accuracy on it only proves the plumbing.
FAKE_CLASSES = 10
#: Image folders are decoded at input_size / this, then cropped on the device (the ImageNet 0.875 ratio).
FOLDER_CROP_FRACTION = 0.875


class DatasetNotFoundError(ConfigError):
    """A dataset that is not where sslzoo was told to look; the message says how to get it."""


def default_data_dir() -> Path:
    """Where datasets go when no --data-dir is given: `$SSLZOO_HOME/datasets`."""
    return sslzoo_home() / "datasets"


def dataset_facts(name: str) -> dict[str, Any]:
    """Input size, stem and normalisation of `name`, from the zoo registry's entries for it.

    `fake` is 32 px with CIFAR-10 statistics and, being a smoke test, also sets a batch of 16 and
    two epochs; `imagefolder` is 224 px with ImageNet's statistics.
    """
    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if name == "fake":  # a smoke test: small batches, two short epochs, kNN after each
        return {
            "input_size": 32,
            "stem": "cifar",
            "mean": list(CIFAR10_MEAN),
            "std": list(CIFAR10_STD),
            "batch_size": 16,
            "epochs": 2,
            "warmup_epochs": 0.0,
            "knn_every": 1,
        }
    if name == "imagefolder":
        return {"input_size": 224, "stem": "imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    entry = next(e for e in registry_data()["models"] if e["dataset"] == name)
    return {key: entry[key] for key in ("input_size", "stem", "mean", "std", "interpolation")}


@dataclass
class ImageTensors:
    """A split held in memory: uint8 images (N, 3, H, W) and int64 labels (N,), -1 where unlabelled."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: str | torch.device) -> ImageTensors:
        return ImageTensors(self.images.to(device), self.labels.to(device), self.num_classes)

    def labelled(self) -> ImageTensors:
        """Only the labelled images (STL-10's pretraining split mixes in 100k unlabelled ones)."""
        keep = self.labels >= 0
        if bool(keep.all()):
            return self
        return ImageTensors(self.images[keep], self.labels[keep], self.num_classes)

    def subset(self, size: int, seed: int = 0) -> ImageTensors:
        """A fixed random subset of `size` images (all of them when size is 0 or too large)."""
        if size <= 0 or size >= len(self):
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:size]
        keep = keep.sort().values.to(self.images.device)
        return ImageTensors(self.images[keep], self.labels[keep], self.num_classes)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) chunks in order, for feature extraction."""
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


class ImageFolderFiles(Dataset):
    """An image folder (`root/<class>/<image>`) decoded to uint8 (3, S, S) tensors in worker processes.

    Each image's short side is resized to `size`, then its centre square is cut out: batches
    stack, and the on-device random crop still sees most of the image.
    """

    def __init__(self, root: str | os.PathLike, size: int, interpolation: str = "bilinear"):
        from torchvision.datasets import ImageFolder  # indexing only; decoding goes through sslzoo

        self.root = Path(root)
        self.index = ImageFolder(str(self.root), loader=lambda path: path)
        self.num_classes = len(self.index.classes)
        self.size = size
        self.transform = v2.Compose(
            [
                v2.Resize(size, interpolation=InterpolationMode(interpolation), antialias=True),
                v2.CenterCrop(size),
            ]
        )

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.index.samples[i]
        return self.transform(v2.functional.pil_to_tensor(open_image(path))), label

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.index.targets, dtype=torch.long)


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    input_size: int | None = None,
    fake_size: int = 64,
    fake_test_size: int = 32,
    for_training: bool = False,
) -> ImageTensors | ImageFolderFiles:
    """One split of a dataset: `pretrain` (what SSL trains on), `train` (labelled), `test`.

    For image folders, `input_size` sets the decoded size: input_size / 0.875 when
    `for_training` (room for the random crop), input_size itself for evaluation.
    A dataset that is missing raises `DatasetNotFoundError` with the exact fix.
    """
    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "fake":
        return _fake(fake_test_size if split == "test" else fake_size, input_size or 32, test=split == "test")
    if name in ("cifar10", "cifar100"):
        return _cifar(name, root, split, download)
    if name == "stl10":
        return _stl10(root, split, download)
    return _folder(name, root, split, input_size or 224, for_training)


def _fake(size: int, image_size: int, test: bool) -> ImageTensors:
    from torchvision.datasets import FakeData

    # Train and test images differ: FakeData seeds image i with i + random_offset.
    data = FakeData(
        size=size,
        image_size=(3, image_size, image_size),
        num_classes=FAKE_CLASSES,
        random_offset=1_000_000 if test else 0,
    )
    images, labels = zip(*(data[i] for i in range(size)))
    return ImageTensors(
        torch.stack([v2.functional.pil_to_tensor(image) for image in images]),
        torch.tensor(labels, dtype=torch.long),
        FAKE_CLASSES,
    )


def _cifar(name: str, root: Path, split: str, download: bool) -> ImageTensors:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder, classes = (
        (CIFAR10, "cifar-10-batches-py", 10) if name == "cifar10" else (CIFAR100, "cifar-100-python", 100)
    )
    try:
        data = cls(str(root), train=split != "test", download=download)
    except RuntimeError as error:
        raise _missing(name, root, f"{root / folder}/") from error
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW, one copy
    return ImageTensors(images, torch.tensor(data.targets, dtype=torch.long), classes)


def _stl10(root: Path, split: str, download: bool) -> ImageTensors:
    from torchvision.datasets import STL10

    torchvision_split = {"pretrain": "train+unlabeled", "train": "train", "test": "test"}[split]
    try:
        data = STL10(str(root), split=torchvision_split, download=download)
    except RuntimeError as error:
        raise _missing("stl10", root, f"{root / 'stl10_binary'}/") from error
    return ImageTensors(torch.from_numpy(data.data), torch.from_numpy(data.labels).long(), 10)


def _folder(name: str, root: Path, split: str, input_size: int, for_training: bool) -> ImageFolderFiles:
    names = ("train",) if split != "test" else ("val", "test")
    folder = next((root / n for n in names if (root / n).is_dir()), None)
    if folder is None:
        raise DatasetNotFoundError(
            f"No {' or '.join(names)} folder in {root}. --dataset {name} reads an image folder laid out as "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image> (ImageNet-100 is the 100-class "
            f"ImageNet subset in that layout; it cannot be downloaded automatically). "
            f"Point --data-dir at the folder that holds train/ and val/."
        )
    size = math.ceil(input_size / FOLDER_CROP_FRACTION) if for_training else input_size
    try:
        return ImageFolderFiles(folder, size)
    except (FileNotFoundError, RuntimeError) as error:
        raise DatasetNotFoundError(
            f"{folder} holds no images in <class>/<image> layout ({error}). "
            f"Put each class's images in its own sub-folder."
        ) from error


def _missing(name: str, root: Path, expected: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} was not found: sslzoo looked for {expected} (from --data-dir {root}). "
        f"Fix: add --download to fetch it into {root}, or pass --data-dir pointing at the folder "
        f"that already holds it."
    )
