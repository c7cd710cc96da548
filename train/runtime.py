"""Where this process trains: its device and precision, its rank among torchrun's processes, SIGTERM.

Everything the training loop asks of the machine goes through `Runtime`, so the loop reads the
same on one CPU, one GPU or several (DDP): `autocast()`, `sync()`, `barrier()`, `agree(...)`.
"""

from __future__ import annotations

import os
import platform
import random
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch
import torch.distributed as dist

from sslzoo import distributed as dist_utils
from sslzoo.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything torch understands otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu.")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` -> bf16 on CUDA (autocast), fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU.")
    return name


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's `random` (every generator a training step may draw from)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def device_name(device: torch.device) -> str:
    """What a model card calls the hardware: the GPU's name, or the CPU's architecture and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass
class Runtime:
    """This process's device, precision and place in the process group (rank 0 of 1 without torchrun)."""

    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1
    owns_process_group: bool = False

    @classmethod
    def start(cls, device: str, precision: str) -> Runtime:
        """Join torchrun's process group if launched by it, pick the device, set the CUDA speed flags."""
        owns = _init_distributed(device)
        try:
            rank, world = dist_utils.rank(), dist_utils.world_size()
            torch_device = resolve_device(device)
            if torch_device.type == "cuda" and world > 1:
                torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            runtime = cls(torch_device, resolve_precision(precision, torch_device), rank, world, owns)
        except BaseException:
            if owns:
                dist.destroy_process_group()
            raise
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        return runtime

    def close(self) -> None:
        """Leave the process group this runtime joined (one that was already there is left alone)."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and measures kNN."""
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's autocast (a no-op in fp32)."""
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def sync(self) -> None:
        """Wait for the GPU work queued so far, so a timer includes it (nothing to wait for on a CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every process if it is true on any (one all-reduce for all of them)."""
        if self.world == 1:
            return flags
        tensor = torch.tensor([float(flag) for flag in flags], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tuple(bool(value) for value in tensor.tolist())

    def device_name(self) -> str:
        return device_name(self.device)


class StopRequest:
    """SIGTERM, or an optional `stop_when(step, end_step)` hook, as a flag the loop reads after each step.

    The loop then writes a checkpoint and returns, so a scheduler's SIGTERM or a time budget
    costs no finished work. `reason` says which asked: "sigterm" or "budget".
    """

    def __init__(self, stop_when: Callable[[int, int], bool] | None = None) -> None:
        self.reason: str | None = None
        self._stop_when = stop_when
        self._previous: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.reason = "sigterm"

    def check(self, step: int, end_step: int) -> bool:
        """True once a stop was asked for (SIGTERM, or the hook after `step` of `end_step`)."""
        if self.reason is None and self._stop_when is not None and self._stop_when(step, end_step):
            self.reason = "budget"
        return self.reason is not None

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _init_distributed(device: str) -> bool:
    """Join the torchrun process group (nccl on GPU, gloo on CPU); False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True
