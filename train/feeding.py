"""Data feeding: the run's dataset, and this process's slice of every global batch, on the device.

The order of an epoch is a function of (seed, epoch) alone, the same in every process and after
every resume, so a run needs no sampler state to continue exactly where it stopped. In-memory
datasets are gathered by index on the device; image folders stream through a DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslzoo.errors import ConfigError

from .datasets import ImageFolderFiles, ImageTensors, load_split
from .recipes import TrainConfig
from .runtime import Runtime

Split = ImageTensors | ImageFolderFiles


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled image order of `epoch`: the same in every process and after every resume."""
    return torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def worker_count(config: TrainConfig) -> int:
    """DataLoader workers for image folders: the recipe's, at most one per CPU core."""
    return min(config.workers, os.cpu_count() or 1)


def local_batch_size(batch_size: int, world: int) -> int:
    """Each process's share of the global batch; refused when it does not split evenly."""
    if batch_size % world:
        raise ConfigError(
            f"The global batch {batch_size} does not split over {world} processes; "
            f"choose a --batch-size divisible by {world}."
        )
    return batch_size // world


class DatasetSource:
    """The splits of the run's dataset; under torchrun, rank 0 downloads while the others wait."""

    def __init__(self, config: TrainConfig, runtime: Runtime):
        self.name = config.dataset
        self._common: dict[str, Any] = {
            "data_dir": config.data_dir,
            "download": config.download and runtime.is_main,
            "input_size": config.input_size,
            "fake_size": config.fake_size,
            "fake_test_size": config.fake_test_size,
        }
        if config.download and runtime.world > 1:  # rank 0 downloads, the others wait, then read
            if runtime.is_main:
                load_split(self.name, "pretrain", **self._common)
            runtime.barrier()
            self._common["download"] = False

    def load(self, split: str, for_training: bool = False) -> Split:
        return load_split(self.name, split, for_training=for_training, **self._common)


class BatchFeeder:
    """This process's part of each global batch of an epoch, in the epoch's order, on the device.

    The recipe's batch size is the global one; each of the `world` processes takes its slice.
    Incomplete last batches are dropped, so every epoch has `steps_per_epoch` steps.
    """

    def __init__(self, data: Split, batch_size: int, seed: int, runtime: Runtime, workers: int = 0):
        self.local_batch = local_batch_size(batch_size, runtime.world)
        if isinstance(data, ImageTensors):
            data = data.to(runtime.device)
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.runtime = runtime
        self.workers = workers
        self.num_images = len(data)
        self.steps_per_epoch = self.num_images // batch_size

    def batches(self, epoch: int, first_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) of batches `first_batch`... of `epoch`, for this process."""
        device, rank = self.runtime.device, self.runtime.rank
        order = epoch_order(self.num_images, self.seed, epoch)
        if isinstance(self.data, ImageTensors):
            order = order.to(device)  # one copy per epoch; batches are slices of it
        starts = range(first_batch * self.batch_size, self.steps_per_epoch * self.batch_size, self.batch_size)
        local = [order[s + rank * self.local_batch : s + (rank + 1) * self.local_batch] for s in starts]
        if isinstance(self.data, ImageTensors):
            for indices in local:
                yield self.data.images[indices], self.data.labels[indices]
            return
        loader = DataLoader(
            self.data,
            batch_sampler=[indices.tolist() for indices in local],
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if self.workers > 0 else None,
        )
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
