"""Per-class accuracy and the confusion matrix: computed from the kNN scores, drawn by `sslzoo-eval --figure`."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sslzoo.export.class_figure import class_names, plot_per_class
from sslzoo.train.cli import eval_main

from sslzoo import ConfigError, Encoder
from sslzoo.evaluation import confusion_matrix, evaluate_features, per_class_report


def test_the_confusion_matrix_counts_true_rows_against_predicted_columns():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1], [0.0, 0.1, 0.9]])
    labels = torch.tensor([0, 1, 1, 2])
    confusion = confusion_matrix(scores, labels, 3)
    assert confusion.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    report = per_class_report(torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0]]), "kNN k200_t0.1")
    assert report["accuracy"] == [100.0, 50.0, None]  # a class with no test image has no accuracy


def test_per_class_accuracy_adds_up_to_the_knn_top1():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator)
    train_y, test_y = torch.arange(200) % 4, torch.arange(80) % 4
    train_x = centres[train_y] + 1.5 * torch.randn(200, 16, generator=generator)
    test_x = centres[test_y] + 1.5 * torch.randn(80, 16, generator=generator)
    result = evaluate_features(train_x, train_y, test_x, test_y, 4, linear=False, per_class=True)
    confusion = torch.tensor(result["per_class"]["confusion"])
    assert confusion.sum() == 80 and confusion.sum(1).tolist() == [20] * 4
    assert 100 * confusion.trace().item() / 80 == pytest.approx(result["knn"]["k200_t0.1"]["top1"])
    assert 0 < result["knn"]["k200_t0.1"]["top1"] < 100  # neither trivial nor hopeless
    assert "per_class" not in evaluate_features(train_x, train_y, test_x, test_y, 4, linear=False)


def test_sslzoo_eval_writes_the_figure_beside_its_json(tmp_path):
    torch.manual_seed(0)
    Encoder(input_size=16, provenance={"name": "tiny"}).save_pretrained(tmp_path / "model")
    figure = tmp_path / "figures" / "per-class.png"
    args = [str(tmp_path / "model"), "--dataset", "fake", "--json", "--device", "cpu", "--no-linear"]
    result = CliRunner().invoke(eval_main, [*args, "--figure", str(figure)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    per_class = report["per_class"]
    assert report["figure"] == str(figure) and per_class["protocol"] == "kNN k200_t0.1"
    assert per_class["class_names"] == [str(index) for index in range(10)]
    confusion = torch.tensor(per_class["confusion"])
    assert confusion.sum() == report["test_images"]
    assert 100 * confusion.trace().item() / report["test_images"] == pytest.approx(report["knn"]["k200_t0.1"]["top1"])
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 1000
    plain = CliRunner().invoke(eval_main, args, catch_exceptions=False)
    assert "per_class" not in json.loads(plain.stdout)


def test_the_figure_names_cifar10_classes_and_stays_legible_for_a_hundred(tmp_path):
    assert class_names("cifar10", 10)[:3] == ["airplane", "automobile", "bird"]
    assert class_names("cifar100", 100)[-1] == "99"
    confusion = torch.eye(100, dtype=torch.long) * 3 + 1
    plot_per_class(per_class_report(confusion, "kNN k200_t0.1"), tmp_path / "c100.png", names=class_names("cifar100", 100))
    assert (tmp_path / "c100.png").stat().st_size > 10_000
    with pytest.raises(ConfigError, match="10x10"):
        plot_per_class(per_class_report(confusion, "x"), tmp_path / "bad.png", names=class_names("cifar10", 10))
