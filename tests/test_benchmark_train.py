"""benchmarks/train_throughput.py still sets the engine beside the lightly loop (tiny settings, CPU)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.mark.slow
def test_the_benchmark_prints_the_engine_and_the_lightly_loop_with_their_mfu(monkeypatch, capsys):
    pytest.importorskip("lightly")  # the reference loop's library (test and benchmark extras)
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    argv = ["train_throughput.py", "--device", "cpu", "--batch-size", "4", "--steps", "1", "--workers", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--compile", "off"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its own folder first
    spec.loader.exec_module(benchmark)
    benchmark.main()
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (.+?) \| [\d,]+ \| ([\d.]+) \| ([\d.]+) % \|$", out, flags=re.M)
    assert [row[0] for row in rows] == ["sslzoo engine (compile=off)", "lightly loop (0 workers)"]
    assert rows[-1][1] == "1.00"
    assert all(float(mfu) > 0 for _, _, mfu in rows)
