"""benchmarks/step_profile.py traces the engine's own step and accounts for all of its time (CPU, tiny)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_profile.py"


def load_script():
    spec = importlib.util.spec_from_file_location("step_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_flops_per_view_are_three_forwards_of_the_backbone():
    """Backward costs about twice the forward: a view's training FLOPs are ~3x its inference FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sslzoo.encoder import Encoder

    profile = load_script()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        Encoder()(torch.randn(4, 3, 32, 32))
    forward = counter.get_total_flops() / 4
    assert 2.9 < profile.training_flops_per_view("simclr") / forward < 3.2


@pytest.mark.slow
def test_the_step_breakdown_covers_the_whole_step(monkeypatch, capsys):
    profile = load_script()
    argv = ["step_profile.py", "--device", "cpu", "--batch-size", "4", "--warmup", "1", "--steps", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    profile.main()
    out = capsys.readouterr().out
    shares = dict(re.findall(r"^\| (\w+) \| [\d.]+ \| ([\d.]+) % \|$", out, flags=re.M))
    assert list(shares) == ["augment", "forward", "backward", "optimizer", "idle"]
    assert all(float(shares[part]) > 0 for part in ("augment", "forward", "backward", "optimizer"))
    assert 99.0 <= sum(map(float, shares.values())) <= 101.0
    assert re.search(r"MFU [\d.]+ %", out)
