"""Under 2 processes (gloo, CPU) the gathered losses equal the single-process loss on the global batch,
their gradients too, and per-process state (queues, MINC's summary) stays identical."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslzoo import distributed
from sslzoo.losses import NTXentLoss, SpectralContrastiveLoss, SupConLoss
from sslzoo.queue import KeyQueue

WORLD = 2
LOCAL = 3  # samples per process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def global_batch() -> dict[str, torch.Tensor]:
    """The same data in every process (seeded), of which each takes its slice."""
    generator = torch.Generator().manual_seed(7)
    return {
        "features": torch.randn(WORLD * LOCAL, 2, 5, generator=generator, dtype=torch.float64),
        "labels": torch.tensor([0, 1, 0, 1, 2, 0]),
        "z1": torch.randn(WORLD * LOCAL, 4, generator=generator, dtype=torch.float64),
        "z2": torch.randn(WORLD * LOCAL, 4, generator=generator, dtype=torch.float64),
        "keys": torch.randn(WORLD * LOCAL, 4, generator=generator),
    }


def losses() -> dict:
    """name -> function(batch dict restricted to some rows, requires-grad inputs) -> loss."""
    return {
        "nt_xent": lambda b: NTXentLoss(0.3)(b["features"]),
        "supcon": lambda b: SupConLoss(0.1, 0.07)(b["features"], b["labels"]),
        "spectral": lambda b: SpectralContrastiveLoss(mu=1.0)(b["z1"], b["z2"]),
    }


def loss_and_grads(batch: dict, name: str) -> tuple[float, dict[str, torch.Tensor]]:
    inputs = {k: (v.clone().requires_grad_() if v.is_floating_point() else v) for k, v in batch.items()}
    loss = losses()[name](inputs)
    loss.backward()
    return loss.item(), {k: v.grad for k, v in inputs.items() if v.is_floating_point() and v.grad is not None}


def worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        assert (
            distributed.is_distributed() and distributed.rank() == rank and distributed.world_size() == WORLD
        )
        everything = global_batch()
        mine = {k: v[rank * LOCAL : (rank + 1) * LOCAL] for k, v in everything.items()}
        for name in losses():
            global_loss, global_grads = _single_process(everything, name)
            local_loss, local_grads = loss_and_grads(mine, name)
            mean_loss = distributed.all_reduce_mean(torch.tensor(local_loss, dtype=torch.float64)).item()
            assert mean_loss == pytest.approx(global_loss, rel=1e-10), name
            for key, grad in local_grads.items():
                # DDP averages gradients over processes; the gather's backward already summed them
                expected = global_grads[key][rank * LOCAL : (rank + 1) * LOCAL]
                assert torch.allclose(grad / WORLD, expected, atol=1e-12), (name, key)

        queue = KeyQueue(size=10, dim=4)
        queue.enqueue(mine["keys"])
        assert torch.equal(queue.keys[: WORLD * LOCAL], everything["keys"])  # everyone's keys, rank order
        assert int(queue.ptr) == WORLD * LOCAL

        from sslzoo.encoder import Encoder
        from sslzoo.methods import build_method

        torch.manual_seed(0)
        minc = build_method("minc", Encoder(input_size=8), proj_hidden_dim=8, proj_output_dim=4)
        targets = [mine["z1"].float() * 0.1, mine["z2"].float() * 0.1]
        minc.update_summary(targets)
        expected = sum(t.T @ t for t in (everything["z1"].float() * 0.1, everything["z2"].float() * 0.1))
        assert torch.allclose(minc.summary, expected / (2 * WORLD * LOCAL), atol=1e-7)
    finally:
        dist.destroy_process_group()


def _single_process(batch: dict, name: str) -> tuple[float, dict[str, torch.Tensor]]:
    """The reference: the same loss with no process group in the way."""
    original = distributed.is_distributed
    distributed.is_distributed = lambda: False  # type: ignore[assignment]
    try:
        return loss_and_grads(batch, name)
    finally:
        distributed.is_distributed = original  # type: ignore[assignment]


@pytest.mark.slow  # two fresh interpreters import torch: ~10-20 s on a busy 2-core box
def test_gathered_losses_and_state_match_a_single_process():
    mp.spawn(worker, args=(free_port(),), nprocs=WORLD, join=True)


def test_distributed_utilities_are_no_ops_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.local_offset(3) == 0
    assert distributed.gather_with_grad(x) is x and distributed.gather(x) is x
    assert distributed.all_reduce_mean(x) is x
