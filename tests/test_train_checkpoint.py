"""Checkpoints: atomic, loadable with weights_only=True, random states restored, corrupt files refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sslzoo.train.checkpoint import (
    CorruptCheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

from sslzoo.errors import CorruptWeightsError


def _state() -> dict:
    return {
        "config": {"method": "simclr"},
        "method": {"w": torch.arange(4.0)},
        "optimizer": {"state": {}},
        "step": 3,
        "epoch": 0.5,
        "rng": rng_state(),
    }


def test_round_trip_and_weights_only(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed into place
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["method"]["w"], torch.arange(4.0))
    plain = torch.load(path, weights_only=True)  # nothing in it needs unpickling code
    assert plain["format"] == "sslzoo-train-checkpoint"


def test_random_states_resume_every_generator(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    saved = rng_state()
    save_checkpoint(tmp_path / "c.pt", {**_state(), "rng": saved})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_files_are_refused_with_a_fix(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage]
    )
    with pytest.raises(CorruptCheckpointError, match="Delete it") as info:
        load_checkpoint(path)
    assert isinstance(info.value, CorruptWeightsError) and info.value.path == path


def test_foreign_and_incomplete_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CorruptCheckpointError, match="not an sslzoo training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "sslzoo-train-checkpoint", "version": 1}, tmp_path / "partial.pt")
    with pytest.raises(CorruptCheckpointError, match="missing"):
        load_checkpoint(tmp_path / "partial.pt")


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "sslzoo-train-checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CorruptCheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_plain_numbers_on_modules_are_checkpointed(tmp_path):
    from sslzoo.train.checkpoint import module_scalars, set_module_scalars
    from torch import nn

    class WithEma(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.tau = 0.99
            self.head.steps = 0

    trained = WithEma()
    trained.tau, trained.head.steps = 0.995, 7
    save_checkpoint(tmp_path / "c.pt", {**_state(), "method_scalars": module_scalars(trained)})
    fresh = WithEma()
    set_module_scalars(fresh, load_checkpoint(tmp_path / "c.pt")["method_scalars"])
    assert (fresh.tau, fresh.head.steps) == (0.995, 7)
    assert fresh.training  # nn.Module's own flag is left alone
