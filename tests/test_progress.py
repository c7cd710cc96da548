"""Progress on a terminal (a tqdm bar) and in a pipe or log file (whole lines), for every long command."""

from __future__ import annotations

import io
import json
import os

import pytest
from click.testing import CliRunner
from sslzoo.train.cli import eval_main, train_main

from sslzoo import progress
from sslzoo.progress import LogProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_a_line_at_the_start_at_each_tenth_and_at_the_end():
    stream = io.StringIO()
    for _ in progress_bar(range(40), desc="features", unit="batch", file=stream):
        pass
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("features: 0/40 batch (0%)")
    assert [line.split(" batch")[0] for line in lines[1:]] == [f"features: {n}/40" for n in range(4, 41, 4)]
    assert "elapsed" in lines[-1] and "batch/s" in lines[-1]


def test_a_pipe_gets_a_line_every_interval_when_the_total_is_unknown(monkeypatch):
    clock = iter(range(0, 1000, 10))  # each look at the clock is 10 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("SSLZOO_PROGRESS_SECONDS", "25")
    stream = io.StringIO()
    bar = progress_bar(desc="embedding", unit="img", file=stream, leave=False)
    for _ in range(9):
        bar.update(2)
    bar.set_postfix(skipped=1, refresh=False)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(" img")[0] for line in lines] == [
        "embedding: 0",
        "embedding: 6",
        "embedding: 12",
        "embedding: 18",
        "embedding: 18",  # the end line, with leave=False too: it says the final state (skipped=1)
    ]
    assert lines[-1].endswith("skipped=1")


def test_a_terminal_gets_a_tqdm_bar_and_tqdm_disable_silences_both():
    terminal = Terminal()
    bar = progress_bar(range(3), desc="linear probe", file=terminal)
    assert not isinstance(bar, LogProgress)
    list(bar)
    assert "\r" in terminal.getvalue() and "100%|" in terminal.getvalue()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        quiet = io.StringIO()
        list(progress_bar(range(3), file=quiet))
        assert quiet.getvalue() == ""
    finally:
        del os.environ["TQDM_DISABLE"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "run"
    args = ["--method", "simclr", "--dataset", "fake", "--batch-size", "8", "--set", "fake_size=16"]
    args += ["--set", "fake_test_size=8", "--max-steps", "2", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(train_main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "train: 0/2 step" in result.stderr and "train: 2/2 step" in result.stderr  # sslzoo-train, piped
    return out


def test_eval_json_keeps_stdout_pure_and_logs_progress_on_stderr(tiny_run):
    args = [str(tiny_run / "model"), "--dataset", "fake", "--json", "--device", "cpu", "--linear-epochs", "2"]
    result = CliRunner().invoke(eval_main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing but the JSON object
    assert report["dataset"] == "fake"
    for name in ("features (train): 0/", "features (test): ", "linear probe: 2/2 epoch"):
        assert name in result.stderr
    assert "\r" not in result.stderr


def test_eval_draws_a_bar_when_stderr_is_a_terminal(tiny_run, monkeypatch):
    monkeypatch.setattr(progress, "_interactive", lambda stream: True)
    args = [str(tiny_run / "model"), "--dataset", "fake", "--json", "--device", "cpu", "--no-linear"]
    result = CliRunner().invoke(eval_main, args, catch_exceptions=False)
    assert result.exit_code == 0
    assert "features (train):" in result.stderr and "|" in result.stderr and "\r" in result.stderr
    json.loads(result.stdout)


def test_export_logs_its_stages_in_a_pipe_and_draws_a_bar_on_a_terminal(tmp_path, monkeypatch):
    from sslzoo.export.cli import main as export_main

    import sslzoo

    sslzoo.Encoder(input_size=16, provenance={"name": "tiny"}).save_pretrained(tmp_path / "model")
    args = [str(tmp_path / "model"), "--to", "safetensors", "--out"]
    piped = CliRunner().invoke(export_main, [*args, str(tmp_path / "a")], catch_exceptions=False)
    assert piped.exit_code == 0, piped.output
    assert "exporting a: 0/2 stage" in piped.stderr and "exporting a: 2/2 stage (100%)" in piped.stderr
    assert "\r" not in piped.stderr and "Exported" in piped.stdout
    monkeypatch.setattr(progress, "_interactive", lambda stream: True)
    terminal = CliRunner().invoke(export_main, [*args, str(tmp_path / "b")], catch_exceptions=False)
    assert terminal.exit_code == 0 and "exporting b:" in terminal.stderr and "\r" in terminal.stderr
