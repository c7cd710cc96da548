"""Time budgets for the zoo builder, and the estimates that let it stop before one runs out.

An entry that cannot also be evaluated and exported within the budget must not take its last
training step in this call; one that cannot even fit another step and a checkpoint stops now.
Every estimate comes from what was measured: the seconds per step of the run in progress, the
evaluation and export times of entries finished earlier (or, before any, from the training
throughput: a forward pass costs about a third of a training step's forward and backward).
An evaluation is sized by the images it passes through the encoder: each split once for kNN and
the `fast` probe, and the training split again in every epoch of a `reference` probe, which on a
full dataset costs a hundred times the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Images per split of the in-memory datasets, to size an evaluation before it is loaded.
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "stl10": (5_000, 8_000)}
#: sslzoo-eval's fake splits (`load_split` defaults).
FAKE_EVAL_SIZES = (64, 32)
#: Images embedded per second relative to training images per second: a training step runs forward
#: and backward (about three forwards) per view; counting one view keeps the estimate on the safe side.
FORWARD_SPEEDUP = 3.0
#: Before any export was measured: seconds to write, verify and (with ONNX) trace one encoder.
EXPORT_GUESS_SECONDS = {"safetensors": 5.0, "onnx": 60.0, "all": 60.0}
#: Kept free at the end of every budget: the last checkpoint must land before it runs out.
SAFETY_SECONDS = 5.0
#: Reading the dataset and building the method before a run's first step (a generous guess).
STARTUP_SECONDS = 10.0


def process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): a budget given on the command line
    also covers the interpreter's start and the imports before any code of ours ran."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - started)


@dataclass
class Budget:
    """`minutes` of wall time from now (None: no limit), on `clock` (tests pass their own).

    `already_spent` seconds count as used (the process's age, for a budget given at its start).
    """

    minutes: float | None
    clock: Callable[[], float] = time.monotonic
    already_spent: float = 0.0
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock() - self.already_spent

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        """Seconds left (infinite without a limit)."""
        if self.minutes is None:
            return float("inf")
        return 60.0 * self.minutes - self.elapsed()


class TrainingStop:
    """The engine's `stop_when(step, end_step)` for one entry's training under a budget.

    Training goes on while it can finish and still leave `finish(step_seconds)` (final kNN,
    evaluation, export) before the budget's safety margin; else while one more step and a
    checkpoint fit, but never into the last step, which would start an evaluation there is no
    time for. The first step of a call is always taken, so repeated calls always progress.
    """

    def __init__(self, budget: Budget, finish: Callable[[float], float], checkpoint_seconds: float):
        self.budget = budget
        self.finish = finish
        self.checkpoint_seconds = checkpoint_seconds
        self._started = budget.elapsed()  # setup counts: it is part of what a step costs in this call
        self._first_step: int | None = None
        self.step_seconds: float | None = None

    def __call__(self, step: int, end_step: int) -> bool:
        if self._first_step is None:
            self._first_step = step - 1
        self.step_seconds = (self.budget.elapsed() - self._started) / max(step - self._first_step, 1)
        left = self.budget.remaining() - SAFETY_SECONDS
        remaining_steps = end_step - step
        if remaining_steps * self.step_seconds + self.finish(self.step_seconds) <= left:
            return False
        if remaining_steps <= 1:
            return True
        return left < self.step_seconds + self.checkpoint_seconds


def checkpoint_seconds(checkpoint_bytes: int) -> float:
    """Time to write a checkpoint: two seconds plus its size at 100 MB/s (a slow disk)."""
    return 2.0 + checkpoint_bytes / 100e6


@dataclass(frozen=True)
class Measured:
    """What an earlier entry's record says it cost (see `builder.EntryRecord`)."""

    method: str
    seconds_per_image_step: float | None  # training wall seconds / (steps x batch)
    evaluate_seconds_per_image: float | None  # evaluation seconds / images through the encoder
    export_seconds: float | None
    export_to: str


def measured_from(records: Sequence[Mapping[str, Any]]) -> list[Measured]:
    """The costs the builder's results file recorded for finished entries."""
    measured = []
    for record in records:
        training, seconds = record.get("training", {}), record.get("seconds", {})
        steps, batch = training.get("steps"), training.get("batch_size")
        wall = training.get("wall_time_s")
        images = record.get("encoded_images") or record.get("evaluated_images")  # the latter: fast only
        measured.append(
            Measured(
                method=record.get("method", ""),
                seconds_per_image_step=wall / (steps * batch) if wall and steps and batch else None,
                evaluate_seconds_per_image=seconds["evaluate"] / images
                if seconds.get("evaluate") and images
                else None,
                export_seconds=seconds.get("export"),
                export_to=record.get("export_to", "all"),
            )
        )
    return measured


def seconds_per_image_step(method: str, history: Sequence[Measured]) -> float | None:
    """Training wall seconds per image of a step: the same method's if measured, else the slowest seen."""
    same = [m.seconds_per_image_step for m in history if m.method == method and m.seconds_per_image_step]
    every = [m.seconds_per_image_step for m in history if m.seconds_per_image_step]
    return max(same) if same else (max(every) if every else None)


def evaluation_images(
    dataset: str, train_size: int, test_size: int, fake_sizes: tuple[int, int], *, reference_epochs: int = 0
) -> int:
    """Images an evaluation passes through the encoder: its train split (the kNN bank, the fast
    probe's set) and its test split once each, and the train split again in each of the
    `reference_epochs` of a reference probe (0: none)."""
    train, test = fake_sizes if dataset == "fake" else SPLIT_SIZES.get(dataset, (0, 0))
    train = min(train, train_size) if train_size else train
    test = min(test, test_size) if test_size else test
    return train + test + reference_epochs * train


def finish_seconds(
    *,
    images: int,
    export_to: str,
    history: Sequence[Measured],
    images_per_s: float | None,
) -> float:
    """Seconds to evaluate (pass `images` through the encoder, `evaluation_images`) and export:
    measured on earlier entries, else from the training throughput (`images_per_s` of training steps)."""
    per_image = [m.evaluate_seconds_per_image for m in history if m.evaluate_seconds_per_image]
    if per_image:
        evaluate = max(per_image) * images
    elif images_per_s:
        evaluate = images / (FORWARD_SPEEDUP * images_per_s)
    else:
        evaluate = 0.0
    exports = [m.export_seconds for m in history if m.export_seconds and m.export_to == export_to]
    export = max(exports) if exports else EXPORT_GUESS_SECONDS[export_to]
    return 1.25 * (evaluate + export)  # a quarter more: the final kNN monitor and the record
