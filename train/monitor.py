"""The kNN monitor: how good the encoder in training is, measured on a fixed bank and test subset.

Rank 0 measures (the other processes wait at a barrier); the bank is the labelled training split
(CIFAR, fake: the pretraining images themselves; STL-10 and image folders: their labelled train
split), optionally a fixed random subset (`knn_bank_size`, `knn_test_size`) to keep it cheap.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslzoo.evaluation import KNN_PROTOCOLS, extract_features, knn_evaluate, knn_key

from .datasets import ImageTensors
from .feeding import DatasetSource, Split
from .recipes import TrainConfig
from .runtime import Runtime

logger = logging.getLogger("sslzoo.train")

#: The protocol whose top-1 is the monitor's headline number (metrics.jsonl's `knn_top1`).
HEADLINE = knn_key(*KNN_PROTOCOLS[0])


class KnnMonitor:
    """`measure(encoder)`: kNN accuracy per protocol on rank 0, None on the other processes."""

    def __init__(self, bank: Split | None, test: Split | None, runtime: Runtime, workers: int = 0):
        self.bank, self.test = bank, test
        self.runtime = runtime
        self.workers = workers

    @classmethod
    def for_run(
        cls, config: TrainConfig, source: DatasetSource, pretraining: Split, runtime: Runtime, workers: int
    ) -> KnnMonitor | None:
        """The monitor `config` asks for (None when `knn_every` is 0); only rank 0 loads its data."""
        if config.knn_every <= 0:
            return None
        if not runtime.is_main:
            return cls(None, None, runtime, workers)
        if config.dataset == "stl10" or not isinstance(pretraining, ImageTensors):
            bank = source.load("train")
        else:
            bank = pretraining  # CIFAR, fake: the pretraining images are the labelled train split
        test = source.load("test")
        if isinstance(bank, ImageTensors) and isinstance(test, ImageTensors):
            bank = bank.labelled().subset(config.knn_bank_size, seed=1).to(runtime.device)
            test = test.subset(config.knn_test_size, seed=2).to(runtime.device)
        if runtime.device.type == "cpu" and len(bank) + len(test) > 20_000:
            logger.info(
                "The kNN monitor embeds %d images each time it runs on this CPU; "
                "--set knn_bank_size=5000 --set knn_test_size=1000 makes it much cheaper.",
                len(bank) + len(test),
            )
        return cls(bank, test, runtime, workers)

    def measure(
        self, encoder: torch.nn.Module, protocols: tuple[tuple[int, float], ...] = KNN_PROTOCOLS
    ) -> dict[str, Any] | None:
        """Top-1/top-5 per protocol, keyed like `k200_t0.1` (rank 0; the others get None)."""
        result = None
        if self.bank is not None and self.test is not None:
            (bank_x, bank_y), (test_x, test_y) = (
                self._features(encoder, self.bank),
                self._features(encoder, self.test),
            )
            result = knn_evaluate(bank_x, bank_y, test_x, test_y, self.bank.num_classes, protocols)
        self.runtime.barrier()
        return result

    def summary(self, knn: dict[str, Any]) -> dict[str, Any]:
        """The exported model's metrics: the result and what it was measured on."""
        return {
            "knn": knn,
            "knn_bank_size": len(self.bank) if self.bank is not None else 0,
            "knn_test_size": len(self.test) if self.test is not None else 0,
            "knn_split": "test",
        }

    def _features(self, encoder: torch.nn.Module, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        device, dtype = self.runtime.device, self.runtime.autocast_dtype
        if isinstance(split, ImageTensors):
            return extract_features(
                encoder, split.images, split.labels, batch_size=512, device=device, autocast_dtype=dtype
            )
        loader = DataLoader(split, batch_size=256, num_workers=self.workers, pin_memory=device.type == "cuda")
        return extract_features(encoder, loader, device=device, autocast_dtype=dtype)
