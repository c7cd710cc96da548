"""sslzoo-train / sslzoo-eval end to end on FakeData, on a CPU: outputs, export, resume, errors.

One tiny reference run (24 images, batch 8, 4 of 6 steps) is shared by the module's tests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from damage import flip_bytes_inside_a_tensor
from PIL import Image
from safetensors.torch import load_file
from sslzoo.train.cli import eval_main, train_main
from sslzoo.train.datasets import load_split

import sslzoo
from sslzoo.evaluation import extract_features, knn_evaluate
from sslzoo.methods.simclr import SimCLR
from sslzoo.weight_files import weights_sha256

TINY = [
    "--method",
    "simclr",
    "--dataset",
    "fake",
    "--batch-size",
    "8",
    "--set",
    "fake_size=24",
    "--set",
    "fake_test_size=8",
    "--max-steps",
    "4",
    "--device",
    "cpu",
]


def _invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = _invoke(train_main, [*TINY, "--out", out])
    assert result.exit_code == 0, result.output
    return out


def test_run_folder_holds_config_metrics_checkpoint_and_model(reference):
    config = json.loads((reference / "config.json").read_text())
    assert (config["method"], config["optimizer"], config["hparams"]["temperature"]) == (
        "simclr",
        "lars",
        0.2,
    )
    assert (config["steps_per_epoch"], config["total_steps"], config["max_steps"]) == (3, 6, 4)
    assert config["effective_lr"] == pytest.approx(0.4 * 8 / 256)
    assert config["augment"]["blur"] == 0.5 and config["train_images"] == 24
    assert config["exclude_bias_norm_wd"] is True  # SimCLR's LARS leaves biases and norms alone

    lines = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [(line["epoch"], line["step"]) for line in lines] == [(1.0, 3), (1.3333, 4)]
    for line in lines:
        assert math.isfinite(line["loss"]) and line["views_per_s"] > 0 and 0 <= line["knn_top1"] <= 100
        assert line["views_per_s"] == pytest.approx(2 * line["images_per_s"])

    checkpoint = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4

    encoder = sslzoo.load(reference / "model")
    provenance = encoder.provenance
    assert (provenance["method"], provenance["dataset"], provenance["steps"], provenance["batch_size"]) == (
        "simclr",
        "fake",
        4,
        8,
    )
    assert provenance["recipe"] == "simclr/fake"
    assert provenance["config"]["exclude_bias_norm_wd"] is True
    assert provenance["command"] == (  # rebuilt from the parsed options: it reruns the same training
        "sslzoo-train --method simclr --dataset fake --batch-size 8 --device cpu "
        f"--out {reference} --max-steps 4 --set fake_size=24 --set fake_test_size=8"
    )
    assert set(provenance["metrics"]["knn"]) == {"k200_t0.1", "k20_t0.07"}
    assert provenance["metrics"]["knn"]["k200_t0.1"]["top1"] == lines[-1]["knn_top1"]
    assert (provenance["metrics"]["knn_bank_size"], provenance["metrics"]["knn_test_size"]) == (24, 8)
    assert provenance["views_per_s"] > 0 and provenance["device"].startswith("cpu")
    assert (encoder.input_size, encoder.stem, list(encoder.mean)) == (32, "cifar", [0.4914, 0.4822, 0.4465])
    # The exported weights are the trained online encoder's.
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, checkpoint["method"][f"encoder.{name}"]), name


def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(reference, tmp_path, monkeypatch):
    def stop_at_step_two(self, progress):
        if math.isclose(progress, 2 / 6):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(SimCLR, "after_step", stop_at_step_two)
    out = tmp_path / "run"
    stopped = _invoke(train_main, [*TINY, "--out", out])
    assert stopped.exit_code == 75, stopped.output  # EX_TEMPFAIL: stopped cleanly, resumable
    assert "Stopped at step 2/6" in stopped.output and "--resume" in stopped.output
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (out / "model").exists() and not (out / "metrics.jsonl").exists()
    monkeypatch.undo()

    resumed = _invoke(train_main, ["--resume", "--out", out])
    assert resumed.exit_code == 0, resumed.output
    expected, actual = (
        load_file(reference / "model" / "model.safetensors"),
        load_file(out / "model" / "model.safetensors"),
    )
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected), "resumed weights differ"
    full_expected = torch.load(reference / "checkpoint.pt", weights_only=True)
    full_actual = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(
        torch.equal(full_expected["method"][k], full_actual["method"][k]) for k in full_expected["method"]
    )
    momentum = [s["momentum_buffer"] for s in full_actual["optimizer"]["state"].values()]
    assert all(
        torch.equal(a, b["momentum_buffer"])
        for a, b in zip(momentum, full_expected["optimizer"]["state"].values())
    )
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reference_lines = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["knn_top1"]) for x in lines] == [
        (x["step"], x["knn_top1"]) for x in reference_lines
    ]
    assert [x["loss"] for x in lines] == pytest.approx([x["loss"] for x in reference_lines], rel=1e-6)


def test_eval_prints_knn_and_linear_accuracies_as_json(reference):
    result = _invoke(
        eval_main,
        [reference / "model", "--dataset", "fake", "--json", "--device", "cpu", "--linear-epochs", "3"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["dataset"], report["train_images"], report["test_images"], report["feature_dim"]) == (
        "fake",
        64,
        32,
        512,
    )
    assert set(report["knn"]) == {"k200_t0.1", "k20_t0.07"}
    # The numbers name the weights file they were measured on.
    assert report["weights_sha256"] == weights_sha256(reference / "model")
    assert list(report["linear"]) == ["fast"]  # the CPU default
    fast = report["linear"]["fast"]
    assert (fast["protocol"], fast["epochs"], fast["lr"], fast["schedule"]) == ("fast", 3, 0.03, "cosine")
    for accuracy in [*report["knn"].values(), fast]:
        assert 0 <= accuracy["top1"] <= accuracy["top5"] <= 100
    # The same numbers as the library computes from the same features.
    encoder = sslzoo.load(reference / "model")
    train, test = load_split("fake", "train"), load_split("fake", "test")
    bank = extract_features(encoder, train.images, train.labels)
    query = extract_features(encoder, test.images, test.labels)
    assert report["knn"] == knn_evaluate(*bank, *query, num_classes=10)


def test_eval_reference_protocol_prints_a_linear_result_that_names_its_protocol(reference):
    result = _invoke(
        eval_main,
        [reference / "model", "--dataset", "fake", "--json", "--device", "cpu", "--linear-protocol", "both",
         "--linear-epochs", "2"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert list(report["linear"]) == ["fast", "reference"]
    ref = report["linear"]["reference"]
    assert (ref["protocol"], ref["lr"], ref["batch_size"], ref["momentum"], ref["weight_decay"]) == (
        "reference",
        1.0,  # SimCLR: SupContrast's SimCLR probe
        512,
        0.9,
        0.0,
    )
    assert (ref["epochs"], ref["milestones"], ref["crop_scale"]) == (2, [1, 2, 2], [0.2, 1.0])
    assert 0 <= ref["top1"] <= ref["top5"] <= 100
    assert "main_linear.py" in ref["source"]
    table = _invoke(
        eval_main,
        [reference / "model", "--dataset", "fake", "--device", "cpu", "--linear-protocol", "reference",
         "--linear-epochs", "1"],
    )
    assert "linear probe (reference) top-1" in table.output and "linear probe (fast)" not in table.output


def test_eval_table_without_json(reference):
    result = _invoke(eval_main, [reference / "model", "--dataset", "fake", "--no-linear", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "kNN k200_t0.1" in result.output and "linear probe" not in result.output


def test_corrupt_checkpoint_is_reported_not_loaded(reference, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    data = (reference / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    result = CliRunner().invoke(train_main, ["--resume", "--out", str(out)])
    assert result.exit_code == 1
    assert "not a readable checkpoint" in result.output and "Delete it" in result.output
    assert "Traceback" not in result.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_bit_flipped_checkpoint_is_refused_by_resume_and_nothing_is_written(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    flip_bytes_inside_a_tensor(out / "checkpoint.pt", 4096)  # as the probe did: 4 KB inside a tensor
    before = _snapshot(out)
    result = CliRunner().invoke(train_main, ["--resume", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"{out / 'checkpoint.pt'}: damaged" in result.output and "checksum" in result.output
    assert "Traceback" not in result.output and "weights_only" not in result.output
    assert _snapshot(out) == before  # no file written, none replaced, no lock left behind


def test_resume_from_the_previous_checkpoint_ends_as_an_uninterrupted_run(reference, tmp_path):
    """The reference run wrote checkpoints at step 3 (its first epoch's end) and step 4 (the last)."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    flip_bytes_inside_a_tensor(out / "checkpoint.pt")
    refused = CliRunner().invoke(train_main, ["--resume", "--out", str(out)])
    assert refused.exit_code == 1
    assert f"{out / 'checkpoint.prev.pt'} (step 3), is intact" in refused.output
    command = f"sslzoo-train --resume --from-previous --out {out}"
    assert command in refused.output
    shutil.rmtree(out / "model")  # so the test sees the resumed run export it again

    resumed = _invoke(train_main, command.split()[1:])
    assert resumed.exit_code == 0, resumed.output
    expected = load_file(reference / "model" / "model.safetensors")
    actual = load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(expected[k], actual[k]) for k in expected), "resumed weights differ"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    assert len(list(out.glob("checkpoint.damaged-*.pt"))) == 1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 4]


def test_from_previous_needs_resume(tmp_path):
    result = CliRunner().invoke(train_main, [*TINY, "--from-previous", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--from-previous goes with --resume" in result.output


def test_resume_into_a_folder_in_use_is_refused_with_the_holders_pid(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    holder = subprocess.Popen(  # holds OUT/.lock as a training process does
        [sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(out)
        result = CliRunner().invoke(train_main, ["--resume", "--out", str(out)])
        assert result.exit_code == 1, result.output
        assert f"is in use: process {holder.pid}" in result.output and "Traceback" not in result.output
        assert _snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


_HOLD = """
import fcntl, json, os, sys
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({"pid": os.getpid(), "purpose": "training"}).encode())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_running_trainer_refuses_a_second_one_and_sigterm_exits_75(tmp_path):
    """As a scheduler sees it: sslzoo-train in its own process, a second --resume started while it
    trains, then the scheduler's SIGTERM; the run then resumes to its end with status 0."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    trainer = subprocess.Popen(
        [sys.executable, "-m", "sslzoo.train", *TINY[:-4], "--epochs", "100", "--knn-every", "0"]
        + ["--device", "cpu", "--out", str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint.pt").exists():  # its first epoch ended: it is training
            assert trainer.poll() is None, trainer.stderr.read()
            assert time.monotonic() < deadline, "the trainer wrote no checkpoint"
            time.sleep(0.2)
        second = CliRunner().invoke(train_main, ["--resume", "--out", str(out)])
        assert second.exit_code == 1 and f"is in use: process {trainer.pid}" in second.output, second.output
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(timeout=300) == 75
        assert "Stopped at step" in trainer.stderr.read()
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait()
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 3 and not (out / ".lock").exists()
    finished = _invoke(train_main, ["--resume", "--out", out, "--max-steps", step + 1])
    assert finished.exit_code == 0, finished.output
    assert sslzoo.load(out / "model").provenance["steps"] == step + 1


def test_an_existing_run_is_never_overwritten(reference):
    before = (reference / "checkpoint.pt").stat().st_mtime_ns
    result = CliRunner().invoke(train_main, [*TINY, "--out", str(reference)])
    assert result.exit_code == 1 and "--resume" in result.output
    assert (reference / "checkpoint.pt").stat().st_mtime_ns == before


def test_resume_refuses_to_change_the_recipe(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    result = CliRunner().invoke(train_main, ["--resume", "--out", str(out), "--lr", "1.0"])
    assert result.exit_code == 1 and "cannot change" in result.output and "lr" in result.output


def test_resume_needs_a_checkpoint_and_a_fresh_run_needs_method_and_dataset(tmp_path):
    result = CliRunner().invoke(train_main, ["--resume", "--out", str(tmp_path / "none")])
    assert result.exit_code == 1 and "Nothing to resume" in result.output
    result = CliRunner().invoke(train_main, ["--method", "simclr", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--dataset" in result.output


def test_missing_dataset_gives_the_fix_not_a_traceback(tmp_path):
    result = CliRunner().invoke(
        train_main,
        [
            "--method",
            "simclr",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "data"),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1
    assert "--download" in result.output and str(tmp_path / "data") in result.output
    assert "Traceback" not in result.output


def test_help_explains_every_option_of_the_issue():
    text = CliRunner().invoke(train_main, ["--help"]).output
    for option in (
        "--method",
        "--plugin",
        "--backbone",
        "--dataset",
        "--data-dir",
        "--download / --no-download",
        "--epochs",
        "--batch-size",
        "--lr",
        "--device",
        "--precision",
        "--compile / --no-compile",
        "--seed",
        "--out",
        "--resume",
        "--max-steps",
        "--knn-every",
        "--set",
    ):
        assert option in text, option
    assert "hparams.temperature" in text


def test_image_folder_streams_through_a_dataloader(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "val"):
        for label, colour in (("a", (250, 10, 10)), ("b", (10, 10, 250))):
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (36 + i, 40), colour).save(root / split / label / f"{i}.png")
    out = tmp_path / "run"
    result = _invoke(
        train_main,
        [
            "--method",
            "simclr",
            "--dataset",
            "imagefolder",
            "--data-dir",
            root,
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--knn-every",
            "1",
            "--device",
            "cpu",
            "--set",
            "input_size=32",
            "--set",
            "stem=cifar",
            "--set",
            "workers=0",
            "--out",
            out,
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["train_images"], config["steps_per_epoch"]) == (6, 1)
    metrics = sslzoo.load(out / "model").provenance["metrics"]
    assert (metrics["knn_bank_size"], metrics["knn_test_size"]) == (6, 6)
    # Two solid colours: any encoder separates them.
    assert metrics["knn"]["k20_t0.07"]["top1"] == 100.0


def test_supervised_single_view_method_gets_labels(tmp_path):
    out = tmp_path / "run"
    result = _invoke(
        train_main,
        [
            "--method",
            "selfcon",
            "--dataset",
            "fake",
            "--batch-size",
            "8",
            "--set",
            "fake_size=8",
            "--max-steps",
            "1",
            "--knn-every",
            "0",
            "--device",
            "cpu",
            "--out",
            out,
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["num_views"] == 1
    line = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(line["loss"]) and "knn_top1" not in line
    assert sslzoo.load(out / "model").provenance["metrics"] == {}
