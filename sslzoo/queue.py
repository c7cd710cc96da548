"""A first-in first-out queue of keys: MoCo's negatives from earlier batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather


class KeyQueue(nn.Module):
    """`size` L2-normalised keys of width `dim`, stored as buffers so checkpoints keep them.

    Starts from random unit vectors (as MoCo). `enqueue` gathers the keys of every process first,
    so all processes hold the same queue.
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"A key queue needs size >= 1, got {size}.")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries by `keys` (B, dim), gathered over processes; wraps around."""
        keys = gather(keys.detach()).to(self.keys.dtype)
        if keys.shape[0] > self.size:  # only the newest `size` keys can stay
            keys = keys[-self.size :]
        positions = (self.ptr + torch.arange(keys.shape[0], device=self.keys.device)) % self.size
        self.keys[positions] = keys
        self.ptr.copy_((self.ptr + keys.shape[0]) % self.size)
