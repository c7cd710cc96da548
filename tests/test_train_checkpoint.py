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


def test_a_version_1_checkpoint_resumes_with_its_ema_rate(tmp_path):
    """Version 1 kept MoCo's tau in `method_scalars`; it now loads into the method's own state."""
    from sslzoo.encoder import Encoder
    from sslzoo.methods import build_method

    trained = build_method("mixco", Encoder(input_size=16))
    trained.host.tau = 0.995
    weights = {k: v for k, v in trained.state_dict().items() if not k.endswith("_extra_state")}
    torch.save(
        {
            **_state(),
            "format": "sslzoo-train-checkpoint",
            "version": 1,
            "method": weights,
            "method_scalars": {"host": {"tau": 0.995, "base_tau": 0.99}, "": {"mix_weight": 1.0}},
        },
        tmp_path / "v1.pt",
    )
    state = load_checkpoint(tmp_path / "v1.pt")
    assert state["version"] == 2 and "method_scalars" not in state
    fresh = build_method("mixco", Encoder(input_size=16))
    fresh.load_state_dict(state["method"])  # strict
    assert fresh.host.tau == 0.995
