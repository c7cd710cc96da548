"""The run folder: one process trains in it at a time, the checkpoint before the last one is kept,
and no half-written file is trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from damage import flip_bytes_inside_a_tensor
from sslzoo.train.checkpoint import CorruptCheckpointError, rng_state
from sslzoo.train.folder_lock import FolderInUseError, FolderLock
from sslzoo.train.run_folder import RunFolder

from sslzoo.errors import ConfigError

#: Another process holding a folder's lock as `FolderLock` does (a flock on FOLDER/.lock, which names
#: its holder), without importing sslzoo, which would take seconds. (`test_train_cli.py` has a
#: real training process refuse a second one.)
HOLD = """
import fcntl, json, os, socket, sys
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
record = {"pid": os.getpid(), "host": socket.gethostname(), "since": "now", "purpose": "testing"}
os.write(fd, json.dumps(record).encode())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def other_process():
    """Start another process that holds the lock of a folder until it is told to end (or killed)."""
    started = []

    def hold(folder):
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path, other_process):
    holder = other_process(tmp_path / "run")
    with pytest.raises(FolderInUseError) as info:
        FolderLock(tmp_path / "run").acquire()
    message = str(info.value)
    assert f"process {holder.pid}" in message and "has been testing there since now" in message
    assert str(tmp_path / "run") in message and f"kill {holder.pid}" in message
    assert info.value.holder["pid"] == holder.pid
    holder.communicate("")  # it ends, and its lock with it
    with FolderLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, other_process):
    holder = other_process(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    stale = json.loads((tmp_path / "run" / ".lock").read_text())
    assert stale["pid"] == holder.pid  # the file stayed, naming a dead process: it does not matter
    with FolderLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    first, second = FolderLock(tmp_path), FolderLock(tmp_path)
    with first:
        with pytest.raises(FolderInUseError, match=f"this process \\({os.getpid()}\\)"):
            second.acquire()
    second.acquire()
    assert second.held
    second.release()


def test_under_torchrun_only_rank_zero_locks_the_run_folder(tmp_path, monkeypatch):
    with FolderLock(tmp_path):
        monkeypatch.setenv("RANK", "1")
        with RunFolder(tmp_path).lock():  # rank 1 shares the folder of its rank 0
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(FolderInUseError):
            with RunFolder(tmp_path).lock():
                pass


def _state(step: int) -> dict:
    return {
        "config": {"method": "simclr"},
        "method": {"w": torch.linspace(0, 1, 8192) + step},
        "optimizer": {"state": {}},
        "step": step,
        "epoch": step / 3,
        "rng": rng_state(),
    }


def test_a_damaged_checkpoint_offers_the_previous_one_and_nothing_is_overwritten(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    for step in (3, 6):
        folder.save_checkpoint(_state(step))
    flip_bytes_inside_a_tensor(folder.checkpoint)
    before = {path.name: path.read_bytes() for path in folder.path.iterdir()}
    with pytest.raises(CorruptCheckpointError) as info:
        folder.load_checkpoint()
    message = str(info.value)
    assert str(folder.checkpoint) in message and "checksum" in message
    assert f"{folder.previous_checkpoint} (step 3), is intact" in message
    assert "--resume --from-previous" in message and "Delete it" not in message  # no need to start over
    assert {path.name: path.read_bytes() for path in folder.path.iterdir()} == before

    with pytest.raises(ConfigError, match="intact: resume from it with --resume alone"):
        intact = RunFolder(tmp_path / "intact")
        intact.create()
        intact.save_checkpoint(_state(3))
        intact.save_checkpoint(_state(6))
        intact.load_previous_checkpoint()

    assert folder.load_previous_checkpoint()["step"] == 3
    folder.put_previous_checkpoint_in_place()
    assert folder.load_checkpoint()["step"] == 3
    damaged = list(folder.path.glob("checkpoint.damaged-*.pt"))
    assert len(damaged) == 1 and damaged[0].read_bytes() == before["checkpoint.pt"]  # kept, not deleted


def test_both_checkpoints_damaged_says_so(tmp_path):
    folder = RunFolder(tmp_path)
    for step in (3, 6):
        folder.save_checkpoint(_state(step))
    flip_bytes_inside_a_tensor(folder.checkpoint)
    flip_bytes_inside_a_tensor(folder.previous_checkpoint)
    with pytest.raises(CorruptCheckpointError, match="Delete it.*previous checkpoint.*is damaged too"):
        folder.load_checkpoint()
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        folder.load_previous_checkpoint()


def test_a_missing_checkpoint_offers_the_previous_one(tmp_path):
    folder = RunFolder(tmp_path)
    folder.save_checkpoint(_state(3))
    with pytest.raises(ConfigError, match="Start the run without --resume"):
        RunFolder(tmp_path / "empty").load_checkpoint()
    folder.save_checkpoint(_state(6))
    folder.checkpoint.unlink()  # e.g. killed between the two renames where hard links do not exist
    with pytest.raises(ConfigError, match=r"Nothing to resume.*\(step 3\), is intact"):
        folder.load_checkpoint()


def test_a_half_written_last_metrics_line_is_ignored(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_metrics({"step": 3, "loss": 1.0})
    folder.append_metrics({"step": 6, "loss": 0.5})
    with open(folder.metrics, "a") as handle:
        handle.write('{"step": 9, "lo')  # the process was killed mid-write
    assert [record["step"] for record in folder.read_metrics()] == [3, 6]
    folder.truncate_metrics(6)
    assert folder.metrics.read_text().splitlines() == [
        json.dumps({"step": 3, "loss": 1.0}),
        json.dumps({"step": 6, "loss": 0.5}),
    ]
    folder.metrics.write_text('{"step": 3}\nnot json\n{"step": 6}\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        folder.read_metrics()
