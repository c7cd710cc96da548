"""Model cards, the zoo table and training curves, generated from measured results only."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard
from PIL import Image
from sslzoo.export.cards import build_card, model_facts, write_model_cards
from sslzoo.export.cli import tools
from sslzoo.export.curves import plot_training_curves, read_curves
from sslzoo.export.results import linear_result, record_results
from sslzoo.export.zoo_table import (
    END_MARKER,
    START_MARKER,
    update_readme_section,
    write_zoo_tables,
    zoo_tables,
)

import sslzoo
from sslzoo import ConfigError
from sslzoo.loading import bundled_weights_dir

MEASURED = {
    "knn": [{"k": 200, "t": 0.1, "top1": 85.12, "top5": 99.31}, {"k": 20, "t": 0.07, "top1": 84.4}],
    "linear": [
        {"protocol": "fast", "top1": 88.2, "top5": 99.58, "epochs": 100, "lr": 0.03},
        {"protocol": "reference", "top1": 90.1, "top5": 99.7, "epochs": 100, "lr": 1.0, "milestones": [60, 75, 90]},
    ],
    "split": "test",
    "weights_sha256": "5e" * 32,
}
TRAINING = {
    "epochs": 200.0,
    "batch_size": 512,
    "device": "NVIDIA H100 80GB HBM3",
    "world_size": 1,
    "precision": "bf16",
    "wall_time_s": 4500.0,
    "train_seconds": 3960.0,
    "views_per_s": 41234.5,
    "command": "sslzoo-train --method mixco --dataset cifar10 --epochs 200 --out runs/mixco",
}


def measured_info(name="mixco-resnet18-cifar10", **changes):
    info = sslzoo.model_info(name)
    return dataclasses.replace(
        info, **{"weights": "hub", "metrics": MEASURED, "training": TRAINING, **changes}
    )


def parse(card) -> ModelCard:
    return ModelCard(str(card))  # what the Hub and huggingface_hub read back


def test_card_front_matter_carries_the_protocols_in_model_index():
    card = parse(build_card(model_facts(info=measured_info()), repo_id="sslzoo/mixco-resnet18-cifar10"))
    data = card.data
    assert (
        data.library_name == "sslzoo"
        and data.license == "mit"
        and data.pipeline_tag == "image-feature-extraction"
    )
    assert data.datasets == ["uoft-cs/cifar10"]
    assert {"sslzoo", "self-supervised-learning", "mixco", "resnet18", "cifar10"} <= set(data.tags)
    assert data.model_name == "mixco-resnet18-cifar10"
    results = [
        (r.metric_name, r.metric_value, r.dataset_name, r.dataset_split, r.metric_type)
        for r in data.eval_results
    ]
    assert results == [  # top-5 where it was measured (not for k=20 here)
        ("kNN top-1 (k=200, t=0.1)", 85.12, "CIFAR-10", "test", "accuracy"),
        ("kNN top-5 (k=200, t=0.1)", 99.31, "CIFAR-10", "test", "accuracy"),
        ("kNN top-1 (k=20, t=0.07)", 84.4, "CIFAR-10", "test", "accuracy"),
        ("linear top-1 (fast probe, 100 epochs)", 88.2, "CIFAR-10", "test", "accuracy"),
        ("linear top-5 (fast probe, 100 epochs)", 99.58, "CIFAR-10", "test", "accuracy"),
        ("linear top-1 (reference probe, 100 epochs)", 90.1, "CIFAR-10", "test", "accuracy"),
        ("linear top-5 (reference probe, 100 epochs)", 99.7, "CIFAR-10", "test", "accuracy"),
    ]
    assert data.eval_results[0].metric_args == data.eval_results[1].metric_args == {"k": 200, "t": 0.1}
    assert data.eval_results[5].metric_config == "protocol=reference"
    assert data.eval_results[5].metric_args == {"protocol": "reference", "epochs": 100, "lr": 1.0}


def test_card_body_says_what_it_is_how_to_use_it_and_how_it_was_measured():
    text = parse(build_card(model_facts(info=measured_info()), repo_id="sslzoo/mixco-resnet18-cifar10")).text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Results",
        "## What it is",
        "## How to use",
        "## How it was evaluated",
        "## Limitations",
        "## Citation",
    ]
    assert "| kNN top-1 (k=200, t=0.1) | 85.12 | 99.31 |" in text
    assert "| kNN top-1 (k=20, t=0.07) | 84.40 | — |" in text
    assert "| Method | mixco (mocov2 host + mixco plug-in) |" in text
    assert "MixCo: Mix-up Contrastive Learning" in text and "arXiv:2010.06300" in text
    assert "| Epochs | 200 |" in text and "| Batch size | 512 |" in text
    assert "| GPU time | 1.25 h wall-clock on 1x NVIDIA H100 80GB HBM3 (1.10 h in training steps) |" in text
    assert "| Precision | bf16 |" in text and "| Throughput | 41,234 augmented views/s |" in text
    assert TRAINING["command"] in text
    assert 'sslzoo.load("hf-hub:sslzoo/mixco-resnet18-cifar10")' in text
    assert 'ort.InferenceSession(path, providers=["CPUExecutionProvider"])' in text
    assert "mean = np.array([0.4914, 0.4822, 0.4465]" in text and "size = 32" in text
    assert "| linear top-1 (fast probe, 100 epochs) | 88.20 | 99.58 |" in text
    assert "| linear top-1 (reference probe, 100 epochs) | 90.10 | 99.70 |" in text
    assert "- **Linear probe, fast protocol**: a linear classifier trained on frozen, cached, un-augmented" in text
    assert "- **Linear probe, reference protocol**: the papers' protocol" in text
    assert "milestones (60, 75, 90)" in text
    assert "`sslzoo-eval mixco-resnet18-cifar10 --dataset cifar10 --linear-protocol both`" in text
    assert "Not yet measured" not in text and "```bibtex" in text


def test_a_linear_result_without_its_protocol_is_never_shown_as_either():
    metrics = {**MEASURED, "linear": [{"top1": 70.0, "epochs": 10}]}
    text = parse(build_card(model_facts(info=measured_info(metrics=metrics)))).text
    assert "| linear top-1 (protocol not recorded) | 70.00 | — |" in text
    assert "fast probe" not in text and "reference probe" not in text
    old_fast = {**MEASURED, "linear": {"top1": 61.05, "features": "standardised with the training set's mean and std"}}
    assert "| linear top-1 (fast probe) | 61.05 | — |" in parse(build_card(model_facts(info=measured_info(metrics=old_fast)))).text


def test_the_bundled_default_model_was_measured_with_the_fast_probe():
    info = sslzoo.model_info(sslzoo.default_model())
    assert linear_result(info.metrics, "fast")["top1"] == 61.05 and linear_result(info.metrics, "reference") is None
    folder = bundled_weights_dir(info.name)
    results = json.loads((folder / "results.json").read_text())
    assert [entry["protocol"] for entry in results["metrics"]["linear"]] == ["fast"]
    assert "| linear top-1 (fast probe, 100 epochs) | 61.05 | 96.10 |" in (folder / "README.md").read_text()
    card = parse(build_card(model_facts(info=info)))  # what `sslzoo.export cards` writes for it
    assert "| linear top-1 (fast probe, 100 epochs) | 61.05 | 96.10 |" in card.text
    assert [r.metric_config for r in card.data.eval_results][-1] == "protocol=fast"


def test_a_card_without_numbers_says_not_yet_measured_and_has_no_model_index():
    info = dataclasses.replace(sslzoo.model_info("minc-resnet18-cifar100"), weights="hub")
    card = parse(build_card(model_facts(info=info)))
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "## Results\n\nNot yet measured" in card.text
    assert "No official code exists for minc" in card.text  # an interpreted method says so
    assert card.data.datasets == ["uoft-cs/cifar100"]


def test_supervised_methods_are_flagged():
    card = parse(build_card(model_facts(info=measured_info("supcon-resnet18-cifar10"))))
    assert "pretrained with labels" in card.text and "| Method | supcon (uses labels) |" in card.text
    assert "Trained with the class labels" in card.text


def test_weights_provenance_fills_in_for_a_model_outside_the_registry():
    encoder = sslzoo.Encoder(
        provenance={
            "name": "my-run",
            "method": "byol",
            "dataset": "stl10",
            "epochs": 5,
            "metrics": {"knn": {"k20_t0.07": {"top1": 50.0, "top5": 90.0}}, "knn_split": "test"},
        }
    )
    facts = model_facts(encoder)
    assert facts["name"] == "my-run" and facts["num_features"] == 512 and not facts["registered"]
    assert facts["metrics"] == {"knn": [{"top1": 50.0, "top5": 90.0, "k": 20, "t": 0.07}], "split": "test"}
    assert facts["training"] == {"epochs": 5}
    assert facts["paper"].startswith("Bootstrap Your Own Latent")  # the method's paper, from the registry
    card = parse(build_card(facts, files=("model.safetensors",)))
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [
        ("kNN top-1 (k=20, t=0.07)", 50.0),
        ("kNN top-5 (k=20, t=0.07)", 90.0),
    ]
    assert 'sslzoo.load("path/to/this/folder")' in card.text
    assert (
        "sslzoo-export my-run --to onnx --out my-run" in card.text
    )  # no ONNX file here: say how to make one


def write_log(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def test_model_cards_are_written_for_trained_models_with_curves(zoo_json, tmp_path):
    record_results("mixco-resnet18-cifar10", metrics=MEASURED, training=TRAINING, weights="hub")
    record_results("byol-resnet18-cifar10", training={"epochs": 1}, weights="hub")
    runs = tmp_path / "runs"
    write_log(
        runs / "mixco-resnet18-cifar10" / "metrics.jsonl",
        [
            {"epoch": 0, "loss": 8.0},
            {"epoch": 0, "knn_top1": 20.0},
            {"epoch": 1, "loss": 7.0},
            {"epoch": 1, "knn_top1": 40.0},
        ],
    )
    cards = tmp_path / "model_cards"
    written = write_model_cards(cards, runs_dir=runs)
    assert sorted(path.name for path in written) == ["byol-resnet18-cifar10.md", "mixco-resnet18-cifar10.md"]
    mixco = ModelCard.load(cards / "mixco-resnet18-cifar10.md")
    assert mixco.data.eval_results[0].metric_value == 85.12
    assert "![Training loss and kNN top-1 per epoch](mixco-resnet18-cifar10-curves.png)" in mixco.text
    assert Image.open(cards / "mixco-resnet18-cifar10-curves.png").format == "PNG"
    assert 'sslzoo.load("hf-hub:sslzoo/mixco-resnet18-cifar10")' in mixco.text
    byol = ModelCard.load(cards / "byol-resnet18-cifar10.md")
    assert (
        byol.data.eval_results is None
        and "Not yet measured" in byol.text
        and "Training curves" not in byol.text
    )

    write_model_cards(cards)  # without the runs, an earlier PNG stays referenced
    assert "mixco-resnet18-cifar10-curves.png" in (cards / "mixco-resnet18-cifar10.md").read_text()


def test_the_zoo_table_lists_every_model_with_measured_numbers_only(zoo_json):
    record_results("mixco-resnet18-cifar10", metrics=MEASURED, training=TRAINING, weights="hub")
    record_results("byol-resnet18-cifar10", weights="bundled")
    table = zoo_tables(card_prefix="model_cards/")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == len(sslzoo.list_models()) == 50
    assert (
        "| [mixco-resnet18-cifar10](model_cards/mixco-resnet18-cifar10.md) | mixco (mocov2 + mixco) "
        "| resnet18 | 85.12 | 88.20 | 90.10 | 200 | Hub |"
    ) in rows
    assert (
        "| [byol-resnet18-cifar10](model_cards/byol-resnet18-cifar10.md) | byol | resnet18 "
        "| not yet measured | not yet measured | not yet measured | — | in the package |"
    ) in rows
    assert (
        "| simclr-resnet18-cifar10 | simclr | resnet18 | not yet trained | not yet trained | not yet trained "
        "| — | — |"
    ) in rows
    assert "| linear top-1 (fast probe) | linear top-1 (reference probe) |" in table
    # A reference-only result lands in the reference column, an unnamed one in neither.
    measured_on = {"weights_sha256": "ab" * 32}  # neither entry has a published file yet
    record_results("byol-resnet18-cifar10", metrics={"linear": {"reference": {"top1": 77.7}}, **measured_on})
    record_results("supcon-resnet18-cifar10", metrics={"linear": {"top1": 66.6}, **measured_on}, weights="hub")
    rows = zoo_tables().splitlines()
    assert any("| byol | resnet18 | not yet measured | not yet measured | 77.70 |" in row for row in rows)
    assert any("| supcon (labels) | resnet18 | not yet measured | not yet measured | not yet measured |" in row
               for row in rows if "supcon-resnet18-cifar10" in row)
    assert "| supcon-resnet18-stl10 | supcon (labels) |" in table
    assert [line for line in table.splitlines() if line.startswith("### ")] == [
        "### CIFAR-10",
        "### CIFAR-100",
        "### STL-10",
        "### ImageNet-100",
    ]


def test_readme_zoo_section_is_replaced_between_the_markers_only(zoo_json, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# sslzoo\n\nIntro.\n\n## Zoo\n\n{START_MARKER}\nold table\n{END_MARKER}\n\n## Usage\n\nKeep.\n"
    )
    index = write_zoo_tables(tmp_path / "model_cards", readme=readme)
    text = readme.read_text()
    assert text.startswith(f"# sslzoo\n\nIntro.\n\n## Zoo\n\n{START_MARKER}\n")
    assert text.endswith(f"\n{END_MARKER}\n\n## Usage\n\nKeep.\n")
    assert "old table" not in text and "| mixco-resnet18-cifar10 |" in text
    assert "zoo.json" in index.read_text() and "| simclr-resnet18-cifar10 |" in index.read_text()
    write_zoo_tables(tmp_path / "model_cards", readme=readme)
    assert readme.read_text() == text  # regenerating is stable


def test_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# sslzoo\n")
    with pytest.raises(ConfigError, match="add the markers"):
        update_readme_section(readme, "table")
    assert readme.read_text() == "# sslzoo\n"


def test_cards_command_regenerates_cards_and_tables(zoo_json, tmp_path):
    record_results("mixco-resnet18-cifar10", metrics=MEASURED, weights="hub")
    readme = tmp_path / "README.md"
    readme.write_text(f"{START_MARKER}{END_MARKER}\n")
    result = CliRunner().invoke(tools, ["cards", "--out", str(tmp_path / "cards"), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == [
        "README.md",
        "mixco-resnet18-cifar10.md",
    ]
    assert "| 85.12 | 88.20 |" in readme.read_text()


def test_curves_average_steps_per_epoch_and_read_accuracy_in_percent(tmp_path):
    log = tmp_path / "metrics.jsonl"
    write_log(
        log,
        [
            {"epoch": 0, "step": 1, "loss": 6.0},
            {"epoch": 0, "step": 2, "loss": 5.0},
            {"epoch": 0, "knn_top1": 21.0},
            {"epoch": 1, "step": 3, "loss": 4.0},
            {"epoch": 1, "knn_top1": 35.0},
            {"note": "no epoch: ignored", "loss": 100.0},
        ],
    )
    curves = read_curves(log)
    assert curves.loss_epochs == [0, 1] and curves.loss == [5.5, 4.0]
    assert curves.knn_epochs == [0, 1] and curves.knn_top1 == pytest.approx([21.0, 35.0])
    png = plot_training_curves(log, tmp_path / "curves.png", title="run")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (840, 320)  # two panels at 100 dpi
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn


def test_a_log_without_curves_draws_nothing_and_a_broken_log_is_named(tmp_path):
    log = tmp_path / "metrics.jsonl"
    write_log(log, [{"epoch": 0, "lr": 0.1}])
    assert plot_training_curves(log, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    log.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": \n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        read_curves(log)


def test_the_committed_zoo_tables_are_what_the_registry_generates():
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    section = readme[readme.index(START_MARKER) + len(START_MARKER) : readme.index(END_MARKER)]
    assert section.strip() == zoo_tables(card_prefix="model_cards/").strip()
    assert (root / "model_cards" / "README.md").read_text().endswith(zoo_tables())


def test_cards_embed_the_figures_beside_them_and_the_registry_int8_record(zoo_json, tmp_path):
    int8 = {
        "format": "QDQ",
        "activations": "uint8, per tensor, MinMax calibration",
        "weights": "int8, per output channel",
        "calibration": {"source": "cifar10 training split", "images": 512},
        "gallery_knn": {
            "gallery": "cifar10-test-1000",
            "images": 1000,
            "calibrated_on_these_images": False,
            "fp32": {"k200_t0.1": 43.3, "k20_t0.07": 44.1},
            "int8": {"k200_t0.1": 43.1, "k20_t0.07": 43.7},
        },
    }
    record_results("mixco-resnet18-cifar10", metrics=MEASURED, weights="hub", serving={"int8": int8})
    cards = tmp_path / "model_cards"
    cards.mkdir()
    for kind in ("per-class", "map"):
        Image.new("RGB", (4, 4)).save(cards / f"mixco-resnet18-cifar10-{kind}.png")
    write_model_cards(cards, names=["mixco-resnet18-cifar10"])
    text = (cards / "mixco-resnet18-cifar10.md").read_text()
    assert "## Accuracy per class\n\n![Accuracy per class](mixco-resnet18-cifar10-per-class.png)" in text
    assert "sslzoo-eval mixco-resnet18-cifar10 --dataset cifar10 --figure FILE.png" in text
    assert "## Map of the embeddings\n\n![Map of the embeddings](mixco-resnet18-cifar10-map.png)" in text
    assert "## Fast CPU serving (int8)" in text and "512 images (cifar10 training split)" in text
    assert "| kNN top-1 (k=200, t=0.1) | 43.30 | 43.10 |" in text
    assert "| kNN top-1 (k=20, t=0.07) | 44.10 | 43.70 |" in text
    assert "sslzoo-export mixco-resnet18-cifar10 --to onnx --quantize int8" in text  # not in this folder
