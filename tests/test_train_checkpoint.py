"""Checkpoints: atomic, loadable with weights_only=True, random states restored, corrupt files refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from damage import flip_bytes_inside_a_tensor
from sslzoo.train import checkpoint as checkpoint_module
from sslzoo.train.checkpoint import (
    CorruptCheckpointError,
    content_digest,
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
    with pytest.raises(CorruptCheckpointError, match="not a readable checkpoint") as info:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "GLOBAL print" in message and "never pickled code" in message
    # torch's own message advises weights_only=False or allow-listing the global: never repeated
    assert "weights_only" not in message and "safe_globals" not in message and "trust" not in message


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


def _large_state(step: int = 3) -> dict:
    weights = torch.linspace(-1, 1, 65536).reshape(256, 256)
    return {**_state(), "method": {"w": weights, "b": torch.ones(8, dtype=torch.bfloat16)}, "step": step}


def test_bytes_flipped_inside_a_tensor_are_refused_by_the_checksum(tmp_path):
    """torch.load reads a checkpoint whose tensor bytes changed without complaint; the checksum does not."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _large_state())
    flip_bytes_inside_a_tensor(path, 4096)
    damaged = torch.load(path, weights_only=True)  # what resumed silently before
    assert not torch.equal(damaged["method"]["w"], _large_state()["method"]["w"])
    with pytest.raises(CorruptCheckpointError, match="do not match the checksum") as info:
        load_checkpoint(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_the_checksum_covers_every_value_and_survives_a_round_trip(tmp_path):
    state = {"format": "f", "a": [1, 2.5, None, True, "x"], "t": torch.arange(6).reshape(2, 3)}
    assert content_digest(state) == content_digest(dict(state))
    for changed in (
        {**state, "a": [1, 2.5, None, True, "y"]},
        {**state, "a": [1, 2.5, None, 1, "x"]},  # True and 1 differ
        {**state, "t": torch.arange(6).reshape(3, 2)},  # same bytes, other shape
        {**state, "t": torch.arange(6).reshape(2, 3).float()},  # other dtype
    ):
        assert content_digest(changed) != content_digest(state)
    save_checkpoint(tmp_path / "c.pt", {**_large_state(), "rng": rng_state()})
    assert load_checkpoint(tmp_path / "c.pt")["method"]["b"].dtype == torch.bfloat16


def test_a_checkpoint_whose_checksum_was_removed_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state())
    state = torch.load(path, weights_only=True)
    del state["checksum"]
    torch.save(state, path)
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_checkpoint(path)


def test_a_version_2_checkpoint_without_a_checksum_still_loads(tmp_path):
    torch.save({"format": "sslzoo-train-checkpoint", "version": 2, **_state()}, tmp_path / "v2.pt")
    assert load_checkpoint(tmp_path / "v2.pt")["step"] == 3


def test_each_save_keeps_the_checkpoint_it_replaces(tmp_path):
    path, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_checkpoint(path, _state(), previous=previous)
    assert not previous.exists()
    for step in (4, 5):
        save_checkpoint(path, {**_state(), "step": step}, previous=previous)
        assert (load_checkpoint(path)["step"], load_checkpoint(previous)["step"]) == (step, step - 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


@pytest.mark.parametrize("fails_in", ["torch.save", "rename"])
def test_a_process_that_dies_while_writing_leaves_the_last_whole_checkpoint(tmp_path, monkeypatch, fails_in):
    path, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_checkpoint(path, {**_large_state(), "step": 1}, previous=previous)
    save_checkpoint(path, {**_large_state(), "step": 2}, previous=previous)

    def half_a_file(data, target):
        real_save(data, target)
        with open(target, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 2)
        raise KeyboardInterrupt  # as if killed mid-write

    def failing_replace(source, target):
        raise KeyboardInterrupt

    real_save = torch.save
    if fails_in == "torch.save":
        monkeypatch.setattr(checkpoint_module.torch, "save", half_a_file)
    else:
        monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**_large_state(), "step": 3}, previous=previous)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 2  # whole, and the one a resume continues from
    assert load_checkpoint(previous)["step"] in (1, 2)
    assert not list(tmp_path.glob(".*"))  # no partial file left behind
