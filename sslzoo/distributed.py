"""torch.distributed utilities that are no-ops in a single process.

Contrastive losses compare each sample with every other sample of the *global* batch, so under
data-parallel training they gather the other processes' embeddings. The gather keeps gradients:
each process backpropagates into the embeddings it computed, summed over every process's loss,
which with DDP's gradient averaging gives exactly the gradient of the mean of the per-process
losses. (`torch.distributed.nn.functional.all_gather` did this but is deprecated in favour of a
private module, so `_GatherWithGrad` below does it with the public collectives, as solo-learn.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums each process's gradient for this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()  # autograd may still hold the incoming buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        local = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * local : (dist.get_rank() + 1) * local]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (same shape on every process) along dim 0, in rank order, keeping gradients."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor.contiguous())


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0, in rank order, without gradients (keys, labels)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over every process (a new tensor; the input is left as it is)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def local_offset(local_batch: int) -> int:
    """Index of this process's first sample in the gathered batch (every process has `local_batch`)."""
    return rank() * local_batch
