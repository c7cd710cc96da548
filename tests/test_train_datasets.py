"""Datasets: FakeData in memory, streamed image folders, and missing data explained with the fix."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from sslzoo.train.datasets import (
    DatasetNotFoundError,
    ImageFolderFiles,
    ImageTensors,
    dataset_facts,
    load_split,
)


def test_fake_splits_are_uint8_deterministic_and_distinct():
    train = load_split("fake", "pretrain", fake_size=6)
    again = load_split("fake", "train", fake_size=6)
    test = load_split("fake", "test", fake_test_size=4)
    assert isinstance(train, ImageTensors) and train.images.shape == (6, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.long
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert len(test) == 4 and not torch.equal(test.images, train.images[:4])
    assert train.num_classes == 10 and int(train.labels.max()) < 10


def test_subset_and_labelled():
    data = ImageTensors(torch.zeros(10, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, -1] * 5), 2)
    assert len(data.labelled()) == 5 and bool((data.labelled().labels >= 0).all())
    subset = data.subset(4, seed=1)
    assert len(subset) == 4 and torch.equal(subset.labels, data.subset(4, seed=1).labels)
    assert data.subset(0) is data and data.subset(50) is data


def test_dataset_facts_come_from_the_registry():
    assert dataset_facts("cifar100")["mean"] == [0.5071, 0.4865, 0.4409]
    assert (dataset_facts("stl10")["input_size"], dataset_facts("stl10")["stem"]) == (96, "cifar")
    assert dataset_facts("imagenet100")["stem"] == "imagenet"
    assert dataset_facts("fake")["input_size"] == 32


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_missing_download_datasets_name_the_folder_and_the_fix(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as info:
        load_split(name, "train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "--download" in message and "--data-dir" in message


def test_missing_image_folder_explains_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"train/<class>/<image>"):
        load_split("imagenet100", "pretrain", data_dir=tmp_path)


def _folder(root, sizes=((40, 30), (50, 64), (33, 33))):
    for label in ("cat", "dog"):
        (root / "train" / label).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, color=(i * 60, 100, 200 if label == "dog" else 0)).save(
                root / "train" / label / f"{i}.png"
            )
    return root


def test_image_folder_streams_fixed_size_uint8(tmp_path):
    root = _folder(tmp_path)
    train = load_split("imagefolder", "pretrain", data_dir=root, input_size=28, for_training=True)
    assert isinstance(train, ImageFolderFiles) and len(train) == 6 and train.num_classes == 2
    image, label = train[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)  # 28 / 0.875: room for the random crop
    assert label == 1 and torch.equal(train.labels, torch.tensor([0, 0, 0, 1, 1, 1]))
    evaluation = load_split("imagefolder", "train", data_dir=root, input_size=28)
    assert evaluation[0][0].shape == (3, 28, 28)
    with pytest.raises(DatasetNotFoundError, match="val or test"):
        load_split("imagefolder", "test", data_dir=root)
