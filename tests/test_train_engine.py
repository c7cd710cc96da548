"""The engine through its Python API: a stop hook ends a run resumably, and the resumed run of a
momentum method (its EMA rate in the method's own state) ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sslzoo.train.engine import resume, train
from sslzoo.train.recipes import resolve_config


def tiny_config(method: str = "mocov2"):
    return resolve_config(
        method,
        "fake",
        options={"batch_size": 4, "epochs": 2, "device": "cpu"},
        sets=["fake_size=12", "fake_test_size=8", "input_size=16"],
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "run"
    result = train(tiny_config(), out, progress=False)
    assert result.finished and (result.step, result.total_steps, result.end_step) == (6, 6, 6)
    return out


def _lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stop_at", [2, 3])  # mid-epoch, and right after the first epoch's last step
def test_a_stop_hook_checkpoints_and_the_resumed_run_matches(uninterrupted, tmp_path, stop_at):
    out = tmp_path / "run"
    seen = []

    def stop_when(step, end_step):
        seen.append((step, end_step))
        return step == stop_at

    stopped = train(tiny_config(), out, progress=False, stop_when=stop_when)
    assert (stopped.interrupted, stopped.finished, stopped.stop_reason) == (True, False, "budget")
    assert seen == [(step, 6) for step in range(1, stop_at + 1)]
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == stop_at and not (out / "model").exists()
    assert checkpoint["method"]["_extra_state"]["tau"] > 0.99  # the EMA rate moved on and was saved

    resumed = resume(out, progress=False)
    assert resumed.finished and resumed.step == 6
    expected = load_file(uninterrupted / "model" / "model.safetensors")
    actual = load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(expected[k], actual[k]) for k in expected), "resumed weights differ"
    final = torch.load(out / "checkpoint.pt", weights_only=True)["method"]
    reference = torch.load(uninterrupted / "checkpoint.pt", weights_only=True)["method"]
    assert final["_extra_state"] == reference["_extra_state"]
    assert all(torch.equal(reference[k], final[k]) for k in reference if k != "_extra_state")
    # One line per epoch, as in the uninterrupted run (a stop after an epoch's last step included).
    lines, reference_lines = _lines(out), _lines(uninterrupted)
    assert [(x["step"], x["knn_top1"]) for x in lines] == [(x["step"], x["knn_top1"]) for x in reference_lines]
    assert [x["loss"] for x in lines] == pytest.approx([x["loss"] for x in reference_lines], rel=1e-6)
