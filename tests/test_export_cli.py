"""`sslzoo-export`: the folder is a complete Hub repo, loads back bit-exactly, and failures are clean."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard
from safetensors import safe_open
from sslzoo.export import onnx as sslzoo_onnx
from sslzoo.export.cli import main
from sslzoo.export.onnx import onnx_config, onnx_session

import sslzoo
from sslzoo import Encoder
from sslzoo.loading import sha256_of

#: What sslzoo-train stores with a model (abridged). It has no name: the export calls it
#: METHOD-BACKBONE-DATASET and takes the descriptive facts (paper...) from that registry entry.
PROVENANCE = {
    "method": "simclr",
    "host": "simclr",
    "plugins": [],
    "dataset": "cifar10",
    "recipe": "simclr/cifar10",
    "epochs": 2.0,
    "batch_size": 8,
    "metrics": {
        "knn": {"k200_t0.1": {"top1": 31.25, "top5": 75.0}, "k20_t0.07": {"top1": 30.0, "top5": 71.5}},
        "knn_bank_size": 64,
        "knn_test_size": 32,
        "knn_split": "test",
    },
    "device": "cpu (x86_64, 1 threads)",
    "world_size": 1,
    "precision": "fp32",
    "wall_time_s": 36.0,
    "train_seconds": 18.0,
    "views_per_s": 3.5,
    "command": "sslzoo-train --method simclr --dataset cifar10 --epochs 2 --batch-size 8 --out runs/tiny",
}
NAME = "simclr-resnet18-cifar10"
FULL_FOLDER = {
    "config.json",
    "model.safetensors",
    "model.onnx",
    "README.md",
    "results.json",
    "training_curves.png",
}


def eval_report(model_dir):
    """`sslzoo-eval RUN/model --dataset cifar10 --json` as it prints it (numbers abridged)."""
    return {
        "model": str(model_dir),
        "weights_sha256": sha256_of(model_dir / "model.safetensors"),
        "dataset": "cifar10",
        "train_images": 50000,
        "test_images": 10000,
        "knn": {"k200_t0.1": {"top1": 31.5, "top5": 76.0}, "k20_t0.07": {"top1": 30.25, "top5": 70.5}},
        "linear": {"fast": {"protocol": "fast", "epochs": 100, "lr": 0.03, "top1": 35.5, "top5": 85.25}},
        "seconds": 12.0,
    }


def make_run(root, provenance=PROVENANCE, seed=0):
    """A finished training run as sslzoo-train leaves it: RUN/model/ and RUN/metrics.jsonl."""
    torch.manual_seed(seed)
    encoder = Encoder("resnet18", "cifar", input_size=32, provenance=provenance).eval()
    encoder.save_pretrained(root / "model")
    lines = [
        {"epoch": 1.0, "step": 4, "loss": 6.1, "lr": 0.3, "views_per_s": 3.4, "knn_top1": 25.0},
        {"epoch": 2.0, "step": 8, "loss": 5.2, "lr": 0.0, "views_per_s": 3.6, "knn_top1": 31.25},
    ]
    (root / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return encoder


def export(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return root, make_run(root)


@pytest.fixture(scope="module")
def folder(run, tmp_path_factory):
    root, _ = run
    report = root / "eval.json"
    report.write_text(json.dumps(eval_report(root / "model")))
    out = tmp_path_factory.mktemp("exports") / NAME
    result = export(root / "model", "--to", "all", "--out", out, "--eval-json", report)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_folder_is_a_complete_hub_repository(folder):
    out, output = folder
    assert {path.name for path in out.iterdir()} == FULL_FOLDER
    assert [path.name for path in out.parent.iterdir()] == [out.name]  # no staging folder left behind
    assert f"Exported {NAME} to {out}" in output and "ONNX parity: max |diff|" in output


def test_the_folder_loads_back_bit_exactly(folder, run):
    out, _ = folder
    _, encoder = run
    loaded = sslzoo.load(out)
    # The same config, but the numbers stored with the weights are now those measured on them.
    assert loaded.provenance["metrics"]["weights_sha256"] == sha256_of(out / "model.safetensors")
    assert {**loaded.provenance, "metrics": PROVENANCE["metrics"]} == encoder.provenance
    assert {**loaded.config, "provenance": None} == {**encoder.config, "provenance": None}
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(loaded.embed(images), encoder.embed(images))


def test_the_onnx_graph_matches_pytorch_at_batch_3_on_the_cpu_provider(folder, run):
    out, _ = folder
    _, encoder = run
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    session = onnx_session(out / "model.onnx", providers=["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    (features,) = session.run(["features"], {"images": images.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(features, encoder(images).numpy(), rtol=0, atol=1e-4)
    assert onnx_config(session)["provenance"]["recipe"] == "simclr/cifar10"


def test_results_json_records_numbers_checksums_and_parity(folder):
    out, _ = folder
    results = json.loads((out / "results.json").read_text())
    assert results["name"] == NAME
    assert results["weights_sha256"] == sha256_of(out / "model.safetensors")
    assert results["files"]["model.onnx"] == {
        "bytes": (out / "model.onnx").stat().st_size,
        "sha256": sha256_of(out / "model.onnx"),
    }
    assert results["metrics"] == {
        "knn": [
            {"top1": 31.5, "top5": 76.0, "k": 200, "t": 0.1},
            {"top1": 30.25, "top5": 70.5, "k": 20, "t": 0.07},
        ],
        "linear": [{"protocol": "fast", "epochs": 100, "lr": 0.03, "top1": 35.5, "top5": 85.25}],
        "split": "test",
        "weights_sha256": sha256_of(out / "model.safetensors"),  # measured on this very file
        "dataset": "cifar10",
        "train_images": 50000,
        "test_images": 10000,
    }
    assert sslzoo.load(out).provenance["metrics"] == results["metrics"]  # config.json says the same
    assert results["training"]["epochs"] == 2.0 and results["training"]["wall_time_s"] == 36.0
    assert results["onnx"]["max_abs_diff"] <= 1e-4 and results["onnx"]["parity_batch"] == 3
    assert results["dtype"] == "float32"


def test_the_card_parses_and_carries_model_index_results(folder):
    out, _ = folder
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sslzoo" and card.data.license == "mit"
    assert card.data.datasets == ["uoft-cs/cifar10"] and "simclr" in card.data.tags
    results = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert results == {
        "kNN top-1 (k=200, t=0.1)": 31.5,
        "kNN top-5 (k=200, t=0.1)": 76.0,
        "kNN top-1 (k=20, t=0.07)": 30.25,
        "kNN top-5 (k=20, t=0.07)": 70.5,
        "linear top-1 (fast probe, 100 epochs)": 35.5,
        "linear top-5 (fast probe, 100 epochs)": 85.25,
    }
    assert all(result.dataset_split == "test" for result in card.data.eval_results)
    text = card.text
    assert f"measured on these weights: the file with sha256 `{sha256_of(out / 'model.safetensors')}`" in text
    assert "![Training loss and kNN top-1 per epoch](training_curves.png)" in text
    assert "| Epochs | 2 |" in text and "| Batch size | 8 |" in text
    assert (
        "| Compute time | 0.01 h wall-clock on 1x cpu (x86_64, 1 threads) (0.01 h in training steps) |"
        in text
    )
    assert "SimCLR: A Simple Framework" in text  # the registry entry's paper
    assert "Measured with 50,000 training images (kNN bank and probe training set) and 10,000 test images." in text
    assert PROVENANCE["command"] in text
    assert 'sslzoo.load("path/to/this/folder")' in text  # a user's run: no Hub repo to point at


def test_the_weights_are_the_sources_file_byte_for_byte_and_readable_by_all(folder, run):
    import stat

    out, _ = folder
    root, _ = run
    assert (out / "model.safetensors").read_bytes() == (root / "model" / "model.safetensors").read_bytes()
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_without_an_evaluation_the_card_says_so_and_gives_the_training_monitor_apart(run, tmp_path):
    root, _ = run
    out = tmp_path / "unmeasured"
    assert export(root / "model", "--to", "safetensors", "--out", out).exit_code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == {}  # the monitor measured the weights in memory, not this file
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None
    assert "Not yet measured" in card.text and "sslzoo-eval path/to/this/folder --dataset cifar10" in card.text
    assert "the kNN monitor measured 31.25 % top-1 (k=200, t=0.1) with 64 training images" in card.text


def test_numbers_of_other_weights_are_refused(run, tmp_path):
    root, _ = run
    report = tmp_path / "eval.json"
    report.write_text(json.dumps(eval_report(root / "model")))  # of the float32 file
    result = export(root / "model", "--to", "safetensors", "--fp16", "--eval-json", report, "--out", tmp_path / "half")
    assert_one_line_error(result, "measured on weights with sha256", "not on the weights exported")
    report.write_text(json.dumps({**eval_report(root / "model"), "weights_sha256": None}))
    result = export(root / "model", "--to", "safetensors", "--eval-json", report, "--out", tmp_path / "none")
    assert_one_line_error(result, "do not say which weights file")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval.json"]


def test_re_exporting_the_same_weights_needs_no_overwrite(folder, run, tmp_path):
    out, _ = folder
    root, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = export(root / "model", "--to", "safetensors", "--out", copy)
    assert result.exit_code == 0, result.output
    assert {path.name for path in copy.iterdir()} == FULL_FOLDER - {
        "model.onnx"
    }  # exactly what was asked now
    assert sha256_of(copy / "model.safetensors") == sha256_of(out / "model.safetensors")


def assert_one_line_error(result, *fragments):
    """The error is one line; progress lines of the stages done before it may precede it."""
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("exporting ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_an_output_folder_holding_another_model_is_refused_unless_overwrite(folder, tmp_path):
    out, _ = folder
    before = sha256_of(out / "model.safetensors")
    other_run = tmp_path / "other"
    make_run(other_run, provenance={"name": "other-model"}, seed=1)
    result = export(other_run / "model", "--to", "safetensors", "--out", out)
    assert_one_line_error(result, f"already holds another model ({NAME})", "--overwrite")
    assert sha256_of(out / "model.safetensors") == before
    assert [path.name for path in out.parent.iterdir()] == [out.name]

    replaced = tmp_path / "replaced"
    shutil.copytree(out, replaced)
    result = export(other_run / "model", "--to", "safetensors", "--out", replaced, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((replaced / "results.json").read_text())["name"] == "other-model"
    assert "model.onnx" not in {path.name for path in replaced.iterdir()}  # nothing of the old model remains


def test_a_folder_of_other_files_is_refused(run, tmp_path):
    root, _ = run
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    result = export(root / "model", "--to", "safetensors", "--out", out)
    assert_one_line_error(result, "is not empty and is not an sslzoo export")
    assert [path.name for path in out.iterdir()] == ["todo.txt"]


def test_unknown_model_fails_with_suggestions(tmp_path):
    result = export("mixco-resnet18-cifar1000", "--out", tmp_path / "out")
    assert_one_line_error(result, "Unknown model 'mixco-resnet18-cifar1000'", "mixco-resnet18-cifar100")
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_fail_with_how_to_train(tmp_path):
    result = export("supcon-resnet18-cifar10", "--out", tmp_path / "out")
    assert_one_line_error(result, "has not been trained yet", "sslzoo-train --method supcon")
    assert list(tmp_path.iterdir()) == []


class _SkewedSession:
    def __init__(self, session):
        self.session = session

    def run(self, names, feed):
        return [out + 1e-3 for out in self.session.run(names, feed)]

    def get_providers(self):
        return self.session.get_providers()


def test_a_parity_failure_writes_nothing(run, tmp_path, monkeypatch):
    root, _ = run
    real = sslzoo_onnx.onnx_session
    monkeypatch.setattr(sslzoo_onnx, "onnx_session", lambda *a, **k: _SkewedSession(real(*a, **k)))
    result = export(root / "model", "--to", "all", "--out", tmp_path / "out")
    assert_one_line_error(result, "ONNX Runtime and PyTorch disagree at batch 3")
    assert list(tmp_path.iterdir()) == []


def test_fp16_onnx_only_export(run, folder, tmp_path):
    root, encoder = run
    out = tmp_path / "half"
    result = export(root / "model", "--to", "onnx", "--fp16", "--out", out)
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == FULL_FOLDER - {"model.safetensors"}
    assert "`model.safetensors`" not in (out / "README.md").read_text()  # the card lists only what is there
    report = json.loads((out / "results.json").read_text())["onnx"]
    fp32_report = json.loads((folder[0] / "results.json").read_text())["onnx"]
    assert report["fp16"] and report["bytes"] < 0.55 * fp32_report["bytes"]
    assert report["max_abs_diff"] <= sslzoo_onnx.FP16_RELATIVE_TOLERANCE * report["feature_scale"]
    assert report["max_abs_diff"] > fp32_report["max_abs_diff"]  # it really computes in half precision

    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    (features,) = onnx_session(out / "model.onnx").run(None, {"images": images.numpy()})
    assert features.dtype == np.float32  # float32 in and out
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(encoder(images), dim=1)
    cosine = (torch.nn.functional.normalize(torch.from_numpy(features), dim=1) * expected).sum(1)
    assert cosine.min() > 0.999


def test_fp16_safetensors_halve_the_file_and_load_as_float32(run, tmp_path):
    root, encoder = run
    out = tmp_path / "half"
    assert export(root / "model", "--to", "safetensors", "--fp16", "--out", out).exit_code == 0
    with safe_open(out / "model.safetensors", "pt") as handle:
        assert handle.get_tensor("conv1.weight").dtype == torch.float16
    assert (out / "model.safetensors").stat().st_size < 23_000_000
    loaded = sslzoo.load(out)
    assert loaded.conv1.weight.dtype == torch.float32
    assert torch.equal(loaded.conv1.weight, encoder.conv1.weight.half().float())


def test_push_options_need_push(run, tmp_path):
    root, _ = run
    result = export(root / "model", "--out", tmp_path / "out", "--dry-run")
    assert_one_line_error(result, "only apply with --push")


def test_help_explains_every_option():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--to",
        "--out",
        "--fp16",
        "--fp32",
        "--eval-json",
        "--overwrite",
        "--metrics-log",
        "--push",
        "--private",
        "--revision",
    ):
        assert option in result.output
    assert "--dry-run" in result.output


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(run, folder, tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    stale = tmp_path / f".out.partial-{dead.pid}-0badc0de"
    (stale / "nested").mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half written")
    alive = tmp_path / f".out.partial-{os.getpid()}-0000beef"  # an export still running: left alone
    alive.mkdir()
    result = export(run[0] / "model", "--to", "safetensors", "--out", out)
    assert result.exit_code == 0, result.output
    assert not stale.exists() and alive.exists()
    assert {path.name for path in tmp_path.iterdir()} == {"out", alive.name}


def test_a_previous_export_moved_aside_by_a_killed_export_comes_back(folder, tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    shutil.copytree(folder[0], tmp_path / f".out.replaced-{dead.pid}-0badc0de")  # killed between the renames
    other = tmp_path / "other-run"
    make_run(other, seed=1)
    result = export(other / "model", "--to", "safetensors", "--out", out)
    assert result.exit_code != 0 and "already holds another model" in result.output  # the restored one
    assert {path.name for path in out.iterdir()} == FULL_FOLDER
    assert {path.name for path in tmp_path.iterdir()} == {"out", "other-run"}


@pytest.mark.slow
def test_sigterm_during_an_export_leaves_no_staging_folder(run, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    command = [
        sys.executable,
        "-c",
        "from sslzoo.export.cli import main; main()",
        str(run[0] / "model"),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.partial-*")):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert list(tmp_path.iterdir()) == []


def test_a_zoo_model_exports_its_published_file_byte_for_byte(tmp_path):
    from sslzoo.loading import bundled_weights_dir

    name = sslzoo.default_model()
    info, bundled = sslzoo.model_info(name), bundled_weights_dir(name)
    out = tmp_path / "published"
    result = export(name, "--to", "safetensors", "--out", out)
    assert result.exit_code == 0, result.output
    assert sha256_of(out / "model.safetensors") == info.sha256  # what a push uploads is what load checks
    assert (out / "training_curves.png").read_bytes() == (bundled / "training_curves.png").read_bytes()
    results = json.loads((out / "results.json").read_text())
    assert results["dtype"] == "float16" and results["metrics"] == info.metrics
    assert sslzoo.load(out).provenance["metrics"] == info.metrics  # config.json: the same numbers
    card = ModelCard.load(out / "README.md")
    values = {result.metric_name: result.metric_value for result in card.data.eval_results}
    headline = info.metrics["knn"][0]
    assert values["kNN top-1 (k=200, t=0.1)"] == headline["top1"]
    assert values["kNN top-5 (k=200, t=0.1)"] == headline["top5"]
    assert f"measured on these weights: the file with sha256 `{info.sha256}`" in card.text
    assert "![Training loss and kNN top-1 per epoch](training_curves.png)" in card.text

    # float32 only when asked: the same values, so the same numbers, said to be the published file's.
    wide = tmp_path / "fp32"
    assert export(name, "--to", "safetensors", "--fp32", "--out", wide).exit_code == 0
    assert sha256_of(wide / "model.safetensors") != info.sha256
    with safe_open(wide / "model.safetensors", "pt") as handle:
        assert handle.get_tensor("conv1.weight").dtype == torch.float32
    assert torch.equal(sslzoo.load(wide).conv1.weight, sslzoo.load(name).conv1.weight)
    card = ModelCard.load(wide / "README.md")
    assert {result.metric_name: result.metric_value for result in card.data.eval_results} == values
    assert f"measured on the published weights file (sha256 `{info.sha256}`); this folder's float32" in card.text
    assert 'sslzoo.load("path/to/this/folder")' in card.text  # not the zoo name: that loads the float16 file
    assert export(name, "--fp16", "--fp32", "--out", tmp_path / "both").exit_code != 0
