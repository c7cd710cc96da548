"""What the run measures about itself: per-epoch sums of the loss and logs, time in steps, wall time.

Sums stay on the device (no synchronisation per step); they become numbers once per epoch, in
the line `metrics.jsonl` gets. Both survive a resume: `state()` goes into the checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class EpochStats:
    """Sums of the loss and the method's logs over the steps of an epoch so far, and their time."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.loss: torch.Tensor | float = 0.0
        self.logs: dict[str, torch.Tensor | float] = {}

    def add(self, loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        self.loss = self.loss + loss.float()
        for key, value in logs.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self.logs[key] = self.logs.get(key, 0.0) + value

    def mean_loss(self) -> float:
        return float(self.loss) / max(self.steps, 1)

    def mean_logs(self) -> dict[str, float]:
        return {key: float(value) / max(self.steps, 1) for key, value in self.logs.items()}

    def images_per_s(self, batch_size: int) -> float:
        return self.steps * batch_size / max(self.seconds, 1e-9)

    def state(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "loss": float(self.loss),
            "logs": {k: float(v) for k, v in self.logs.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochStats:
        stats = cls()
        stats.steps = int(state.get("steps", 0))
        stats.seconds = float(state.get("seconds", 0.0))
        stats.loss = float(state.get("loss", 0.0))
        stats.logs = dict(state.get("logs", {}))
        return stats


class RunClock:
    """Seconds inside training steps (of the epochs already logged) and wall seconds, over resumes."""

    def __init__(self, train_seconds: float = 0.0, wall_seconds_before: float = 0.0):
        self.train_seconds = train_seconds
        self.wall_seconds_before = wall_seconds_before
        self._start = time.monotonic()

    def wall_seconds(self) -> float:
        return round(self.wall_seconds_before + time.monotonic() - self._start, 3)

    def close_epoch(self, stats: EpochStats) -> float:
        """Count `stats.seconds` into `train_seconds` (once) and return them."""
        seconds = stats.seconds
        self.train_seconds += seconds
        stats.seconds = 0.0
        return seconds


def epoch_record(
    stats: EpochStats,
    clock: RunClock,
    *,
    step: int,
    steps_per_epoch: int,
    batch_size: int,
    num_views: int,
    lr: float,
) -> dict[str, Any]:
    """The `metrics.jsonl` line of the steps in `stats` (their seconds are then counted in `clock`)."""
    images_per_s = stats.images_per_s(batch_size)
    record: dict[str, Any] = {
        "epoch": round(step / steps_per_epoch, 4),
        "step": step,
        "loss": stats.mean_loss(),
        "lr": lr,
        "views_per_s": images_per_s * num_views,
        "images_per_s": images_per_s,
        "seconds": clock.close_epoch(stats),
        "wall_seconds": clock.wall_seconds(),
    }
    record.update(stats.mean_logs())
    return record
