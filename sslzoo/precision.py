"""Float32 regions inside autocast, for the parts of an objective that bf16 or fp16 would break.

Under `torch.autocast` a `.float()` before a matmul is undone: autocast casts the matmul's inputs
back to bf16. So the losses (logits over a batch or a queue, squared dot products, soft targets),
the log-determinants of IE-CL's entropy and MINC's second-moment summary switch autocast off and
compute in float32. The networks still run in bf16; only these small, (B x B)-sized or
(k x k)-sized computations pay for full precision, and their gradients flow back into the bf16
graph through the casts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def float32_region(device: torch.device | str) -> Iterator[None]:
    """Autocast off on `device`'s type for the block (cast the block's inputs with `.float()`)."""
    with torch.autocast(torch.device(device).type, enabled=False):
        yield


LOW_PRECISION = (torch.float16, torch.bfloat16)


def at_least_float32(value: Any) -> Any:
    """`value` as float32 if it is a bf16/fp16 tensor; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in LOW_PRECISION:
        return value.float()
    return value


def in_float32(fn: F) -> F:
    """Run `fn` with autocast off and its bf16/fp16 tensor arguments cast to float32.

    For loss `forward` methods and loss functions; float64 and integer tensors (labels) pass unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
        with float32_region(device):
            return fn(*map(at_least_float32, args), **{k: at_least_float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
