"""Data-parallel training through torchrun: two CPU processes (gloo) share the recipe's global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sslzoo

REPO = Path(__file__).resolve().parent.parent


def test_torchrun_two_processes_train_and_export(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sslzoo.train",
        "--method",
        "simclr",
        "--dataset",
        "fake",
        "--batch-size",
        "8",
        "--set",
        "fake_size=16",
        "--set",
        "fake_test_size=8",
        "--max-steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["local_batch"], config["batch_size"]) == (2, 4, 8)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2]  # one writer: rank 0
    encoder = sslzoo.load(out / "model")
    assert encoder.provenance["world_size"] == 2 and encoder.provenance["steps"] == 2
    assert set(encoder.provenance["metrics"]["knn"]) == {"k200_t0.1", "k20_t0.07"}
