"""Measured results go into the registry (`zoo.json`), the one place numbers live."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from sslzoo.export.cli import tools
from sslzoo.export.results import (
    knn_label,
    knn_result,
    linear_label,
    linear_result,
    normalise_metrics,
    record_results,
    record_run,
)

import sslzoo
from sslzoo import ConfigError, Encoder, UnknownModelError
from sslzoo.loading import sha256_of


def test_fractions_become_percent_and_flat_keys_become_the_canonical_shape():
    metrics = normalise_metrics(
        {"knn_top1": 0.8512, "knn_k": 200, "knn_t": 0.1, "linear_top1": 0.882, "linear_top5": 0.99}
    )
    assert metrics == {
        "knn": [{"k": 200, "t": 0.1, "top1": 85.12}],
        "linear": [{"protocol": None, "top1": 88.2, "top5": 99.0}],  # a flat number does not say which probe
        "split": "test",
    }
    named = normalise_metrics({"linear_top1": 70.0, "linear_protocol": "reference"})
    assert named["linear"] == [{"protocol": "reference", "top1": 70.0}]


def test_knn_results_keyed_by_protocol_are_parsed_and_sorted():
    metrics = normalise_metrics(
        {
            "knn": {"k20_t0.07": 84.0, "k=200,t=0.1": {"top1": 85.1, "top5": 99.2}},
            "linear": {"acc1": 88.0, "epochs": 100},
            "split": "test",
        }
    )
    assert metrics["knn"] == [
        {"top1": 85.1, "top5": 99.2, "k": 200, "t": 0.1},
        {"top1": 84.0, "k": 20, "t": 0.07},
    ]
    assert metrics["linear"] == [{"protocol": None, "top1": 88.0, "epochs": 100}]
    assert knn_result(metrics, 20, 0.07)["top1"] == 84.0 and knn_result(metrics, 200, 0.07) is None


def test_linear_results_keyed_by_protocol_are_parsed_and_each_names_its_protocol():
    report = {  # sslzoo-eval --linear-protocol both
        "linear": {
            "reference": {"protocol": "reference", "top1": 0.905, "top5": 0.99, "lr": 1.0},
            "fast": {"protocol": "fast", "top1": 0.88, "top5": 0.98, "lr": 0.03},
        }
    }
    metrics = normalise_metrics(report)
    assert metrics["linear"] == [
        {"protocol": "fast", "top1": 88.0, "top5": 98.0, "lr": 0.03},
        {"protocol": "reference", "top1": 90.5, "top5": 99.0, "lr": 1.0},
    ]
    assert linear_result(metrics, "reference")["top1"] == 90.5 and linear_result({}, "fast") is None
    assert linear_label(metrics["linear"][1]) == "linear top-1 (reference probe)"
    assert linear_label({"top1": 1.0}) == "linear top-1 (protocol not recorded)"
    # A report from before protocols were named: the fast probe, recognised by its standardised features.
    earlier = normalise_metrics(
        {
            "linear": {"top1": 61.05},
            "linear_recipe": {"epochs": 100, "features": "standardised with the training set's mean and std"},
        }
    )
    assert earlier["linear"][0]["protocol"] == "fast" and earlier["linear"][0]["epochs"] == 100


def test_percent_can_be_stated_and_a_missing_protocol_is_not_guessed():
    assert normalise_metrics({"knn_top1": 0.9}, percent=True)["knn"] == [{"k": None, "t": None, "top1": 0.9}]
    entry = normalise_metrics({"knn_top1": 40.0})["knn"][0]
    assert knn_label(entry) == "kNN top-1 (protocol not recorded)"
    assert knn_label({"k": 200, "t": 0.1}) == "kNN top-1 (k=200, t=0.1)"
    assert normalise_metrics({}) == {} and normalise_metrics(None) == {}


def test_record_results_updates_the_entry_and_the_library_sees_it(zoo_json, tmp_path):
    before = json.loads(zoo_json.read_text())
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"published weights")
    sha = sha256_of(weights)
    info = record_results(
        "byol-resnet18-cifar10",
        metrics={"knn": {"k200_t0.1": 0.8688}, "weights_sha256": sha},
        training={"epochs": 200, "batch_size": 512, "wall_time_s": 5400.0},
        weights="hub",
        weights_file=weights,
    )
    assert info.metrics == {"knn": [{"k": 200, "t": 0.1, "top1": 86.88}], "split": "test", "weights_sha256": sha}
    assert info.sha256 == sha and info.weights == "hub"
    assert sslzoo.model_info("byol-resnet18-cifar10") == info
    assert "byol-resnet18-cifar10" in sslzoo.list_models(trained=True)

    record_results(  # more numbers of the same file
        "byol-resnet18-cifar10",
        metrics={"knn": [{"k": 20, "t": 0.07, "top1": 85.0}], "linear": {"top1": 90.1}, "weights_sha256": sha},
        training={"device": "NVIDIA H100"},
    )
    merged = sslzoo.model_info("byol-resnet18-cifar10")
    assert [(e["k"], e["top1"]) for e in merged.metrics["knn"]] == [(200, 86.88), (20, 85.0)]
    assert merged.metrics["linear"] == [{"protocol": None, "top1": 90.1}]
    record_results("byol-resnet18-cifar10", metrics={"linear": {"reference": {"top1": 91.0}}, "weights_sha256": sha})
    record_results("byol-resnet18-cifar10", metrics={"linear": {"fast": {"top1": 80.0}}, "weights_sha256": sha})
    record_results(  # replaces fast only
        "byol-resnet18-cifar10", metrics={"linear": {"fast": {"top1": 81.0}}, "weights_sha256": sha}
    )
    protocols = [(e["protocol"], e["top1"]) for e in sslzoo.model_info("byol-resnet18-cifar10").metrics["linear"]]
    assert protocols == [("fast", 81.0), ("reference", 91.0), (None, 90.1)]
    assert merged.training == {
        "epochs": 200,
        "batch_size": 512,
        "wall_time_s": 5400.0,
        "device": "NVIDIA H100",
    }

    after = json.loads(zoo_json.read_text())
    changed = [a["name"] for a, b in zip(after["models"], before["models"], strict=True) if a != b]
    assert changed == ["byol-resnet18-cifar10"]
    assert zoo_json.read_text() == json.dumps(after, indent=1) + "\n"  # the repository's formatting is kept


def test_record_results_refuses_bad_input(zoo_json, tmp_path):
    with pytest.raises(UnknownModelError, match="byol-resnet18-cifar10"):
        record_results("byol-resnet18-cifar1O", metrics={"knn_top1": 50.0})
    with pytest.raises(ConfigError, match="weights must be one of"):
        record_results("byol-resnet18-cifar10", weights="somewhere")
    (tmp_path / "w").write_bytes(b"x")
    with pytest.raises(ConfigError, match="say where the weights are published"):
        record_results("byol-resnet18-cifar10", weights_file=tmp_path / "w")
    assert sslzoo.model_info("byol-resnet18-cifar10").sha256 is None


def test_numbers_are_recorded_only_beside_the_file_they_were_measured_on(zoo_json, tmp_path):
    published, other = tmp_path / "fp16.safetensors", tmp_path / "fp32.safetensors"
    published.write_bytes(b"the half-precision file users download")
    other.write_bytes(b"the float32 weights of the run")
    name = "byol-resnet18-cifar10"
    knn = {"knn": {"k200_t0.1": {"top1": 50.12, "top5": 93.67}}}
    with pytest.raises(ConfigError, match=f"do not say which weights file .*`sslzoo-eval {tmp_path} --dataset cifar10 --json`"):
        record_results(name, metrics=knn, weights="hub", weights_file=published)
    with pytest.raises(ConfigError, match=f"measured on weights with sha256 {sha256_of(other)}.*{sha256_of(published)}"):
        record_results(name, metrics={**knn, "weights_sha256": sha256_of(other)}, weights="hub", weights_file=published)
    assert sslzoo.model_info(name).metrics == {} and sslzoo.model_info(name).sha256 is None  # nothing written

    info = record_results(name, metrics={**knn, "weights_sha256": sha256_of(published)}, weights="hub", weights_file=published)
    assert info.sha256 == info.metrics["weights_sha256"] == sha256_of(published)
    # Later numbers must be of the published file too; a new file needs its own numbers.
    with pytest.raises(ConfigError, match="measured on weights with sha256"):
        record_results(name, metrics={**knn, "weights_sha256": sha256_of(other)})
    with pytest.raises(ConfigError, match=r"recorded numbers were measured on .* not on .*fp32.safetensors"):
        record_results(name, weights_file=other)
    info = record_results(name, metrics={**knn, "weights_sha256": sha256_of(other)}, weights_file=other)
    assert info.sha256 == info.metrics["weights_sha256"] == sha256_of(other)


def make_finished_run(root):
    """A run folder as sslzoo-train leaves it (provenance abridged; it carries no name)."""
    provenance = {
        "method": "simclr",
        "host": "simclr",
        "plugins": [],
        "dataset": "cifar10",
        "epochs": 3.0,
        "batch_size": 16,
        "wall_time_s": 30.5,
        "views_per_s": 12.5,
        "config": {"seed": 0, "lr": 0.3},
        "metrics": {
            "knn": {"k200_t0.1": {"top1": 25.0, "top5": 60.0}},
            "knn_bank_size": 64,
            "knn_split": "test",
        },
    }
    Encoder(provenance=provenance).save_pretrained(root / "model")
    (root / "config.json").write_text(
        json.dumps({"method": "simclr", "batch_size": 16, "epochs": 3, "seed": 0})
    )
    return root


#: `sslzoo-eval MODEL --dataset cifar10 --json`, as it prints it.
EVAL_REPORT = {
    "model": "runs/simclr/model",
    "dataset": "cifar10",
    "train_images": 50000,
    "test_images": 10000,
    "num_classes": 10,
    "feature_dim": 512,
    "knn": {"k200_t0.1": {"top1": 31.0, "top5": 80.0}, "k20_t0.07": {"top1": 30.5, "top5": 78.0}},
    "linear": {"top1": 35.5, "top5": 85.25},
    "linear_recipe": {"epochs": 100, "lr": 0.1, "batch_size": 512},
    "seconds": 12.3,
}


def eval_report_of(model_dir):
    return {**EVAL_REPORT, "weights_sha256": sha256_of(model_dir / "model.safetensors")}


def test_record_run_makes_a_run_loadable_by_name_with_its_checksum(zoo_json, tmp_path, monkeypatch):
    # The package may bundle this name's real weights; this test's run must be the one found.
    monkeypatch.setattr(sslzoo.loading, "bundled_weights_dir", lambda name: tmp_path / "nothing-bundled" / name)
    run = make_finished_run(tmp_path / "run")
    info = record_run(run, eval_report=eval_report_of(run / "model"))
    assert info.name == "simclr-resnet18-cifar10" and info.weights == "hub"
    assert info.metrics == {
        "knn": [
            {"top1": 31.0, "top5": 80.0, "k": 200, "t": 0.1},
            {"top1": 30.5, "top5": 78.0, "k": 20, "t": 0.07},
        ],
        "linear": [{"protocol": None, "epochs": 100, "lr": 0.1, "batch_size": 512, "top1": 35.5, "top5": 85.25}],
        "split": "test",
        "dataset": "cifar10",
        "train_images": 50000,
        "test_images": 10000,
        "num_classes": 10,
        "feature_dim": 512,
        "weights_sha256": sha256_of(run / "model" / "model.safetensors"),
    }  # no "model" (a local path) and no "seconds": they describe the call, not the weights
    assert info.training == {
        "epochs": 3.0,
        "batch_size": 16,
        "wall_time_s": 30.5,
        "views_per_s": 12.5,
        "seed": 0,
    }
    assert info.sha256 == sha256_of(run / "model" / "model.safetensors")

    shutil.copytree(run / "model", sslzoo.sslzoo_home() / info.name)
    loaded = sslzoo.load(info.name)  # the loader checks the recorded sha256
    assert loaded.provenance["epochs"] == 3.0
    with open(sslzoo.sslzoo_home() / info.name / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x00\x01")
    with pytest.raises(sslzoo.CorruptWeightsError, match="sha256"):
        sslzoo.load(info.name)


def test_record_run_takes_the_eval_report_of_the_file_not_the_training_monitor(zoo_json, tmp_path):
    run = make_finished_run(tmp_path / "run")
    result = CliRunner().invoke(tools, ["record", str(run), "--weights", "bundled"])
    assert result.exit_code != 0  # the monitor measured the weights in memory, not the published file
    assert "do not say which weights file" in result.output and "sslzoo-eval" in result.output
    assert sslzoo.model_info("simclr-resnet18-cifar10").metrics == {}

    report = tmp_path / "eval.json"
    report.write_text(json.dumps(eval_report_of(run / "model")))
    result = CliRunner().invoke(tools, ["record", str(run), "--weights", "bundled", "--eval-json", str(report)])
    assert result.exit_code == 0, result.output
    info = sslzoo.model_info("simclr-resnet18-cifar10")
    assert info.weights == "bundled" and info.metrics["knn"][0]["top1"] == 31.0
    assert f"Recorded simclr-resnet18-cifar10: weights=bundled, sha256={info.sha256}" in result.output


def test_record_run_of_something_that_is_not_a_run(zoo_json, tmp_path):
    result = CliRunner().invoke(tools, ["record", str(tmp_path)])
    assert result.exit_code != 0
    assert result.output.strip().startswith("Error:") and "model/config.json: missing" in result.output
    assert f"is {tmp_path} a finished sslzoo-train run?" in result.output


def test_a_run_is_never_filed_under_another_models_name(zoo_json, tmp_path):
    run = make_finished_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"recorded as simclr-resnet18-cifar100: its dataset cifar10"):
        record_run(run, name="simclr-resnet18-cifar100")
    with pytest.raises(ConfigError, match=r"its method simclr \(not byol\)"):
        record_run(run, name="byol-resnet18-cifar10")
    assert sslzoo.model_info("simclr-resnet18-cifar100").metrics == {}


def test_the_demo_names_the_linear_protocol_of_each_score():
    from sslzoo.serve.app import scores_text

    text = scores_text(
        {"knn": {"k200_t0.1": {"top1": 50.0}}, "linear": {"fast": {"top1": 61.05}, "reference": {"top1": 66.0}}},
        dataset="cifar10",
    )
    assert "linear probe top-1 61.05% (fast protocol)" in text and "66.00% (reference protocol)" in text
    assert "(protocol not recorded)" in scores_text({"linear_top1": 40.0})
