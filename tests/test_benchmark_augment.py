"""benchmarks/augment_throughput.py still runs end to end and prints its tables (tiny settings, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "augment_throughput.py"


@pytest.mark.slow
def test_the_benchmark_prints_sslzoo_kornia_and_torchvision_rows(monkeypatch, capsys):
    pytest.importorskip("kornia")  # the benchmark extra's baseline
    spec = importlib.util.spec_from_file_location("augment_throughput", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "augment_throughput", benchmark)  # its dataclass looks itself up
    spec.loader.exec_module(benchmark)
    argv = ["augment_throughput.py", "--device", "cpu", "--recipes", "byol", "--batch-sizes", "8"]
    argv += ["--repeats", "1", "--warmup", "1", "--no-compile", "--loop-images", "2"]
    argv += ["--step-batch-size", "2", "--step-repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    benchmark.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| byol | 8 |")]
    assert [row.split("|")[3].strip() for row in rows] == ["sslzoo", "kornia", "torchvision v2"]
    kornia_row = next(row for row in rows if "| kornia |" in row)
    assert kornia_row.split("|")[6].strip() == "1.00"  # the ratios are against kornia eager
    assert "| augmentation (sslzoo) |" in out and "| whole step |" in out
