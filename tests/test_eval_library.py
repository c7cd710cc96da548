"""sslzoo.evaluation: kNN votes, top-k accuracy, linear probe and batched feature extraction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslzoo.encoder import Encoder
from sslzoo.evaluation import (
    KNN_PROTOCOLS,
    evaluate_features,
    extract_features,
    knn_evaluate,
    knn_key,
    knn_scores,
    linear_probe,
    topk_accuracy,
)


def test_knn_scores_are_exp_weighted_votes_of_the_k_nearest():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[2.0, 0.0]])  # cosine to bank: 1, 0, 0.7071, -1
    scores = knn_scores(query, bank, labels, num_classes=3, protocols=[(2, 0.5)])["k2_t0.5"]
    expected = torch.tensor([[math.exp(1 / 0.5), math.exp(math.sqrt(0.5) / 0.5), 0.0]])
    torch.testing.assert_close(scores, expected)


def test_k_larger_than_the_bank_uses_the_whole_bank():
    bank, labels = torch.eye(3), torch.tensor([0, 1, 1])
    scores = knn_scores(torch.tensor([[0.0, 1.0, 1.0]]), bank, labels, 2, protocols=[(200, 0.1)])["k200_t0.1"]
    assert scores[0, 1] > scores[0, 0] > 0


def test_topk_accuracy_in_percent():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    result = topk_accuracy(scores, labels, ks=(1, 2))
    assert result["top1"] == pytest.approx(100 / 3)
    assert result["top2"] == pytest.approx(200 / 3)


def test_knn_evaluate_reports_both_protocols_and_ignores_unlabelled_bank_entries():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 16), dim=1) * 5
    bank_labels = torch.arange(4).repeat_interleave(30)
    bank = centres[bank_labels] + torch.randn(120, 16)
    query_labels = torch.arange(4).repeat(5)
    query = centres[query_labels] + torch.randn(20, 16)
    # Unlabelled entries sit on class 0's centre for every query: they must not vote.
    bank_all = torch.cat([bank, centres[0].expand(50, 16) + 0.01 * torch.randn(50, 16)])
    labels_all = torch.cat([bank_labels, torch.full((50,), -1)])
    result = knn_evaluate(bank_all, labels_all, query, query_labels, num_classes=4)
    assert set(result) == {knn_key(k, t) for k, t in KNN_PROTOCOLS} == {"k200_t0.1", "k20_t0.07"}
    assert result["k20_t0.07"]["top1"] == 100.0
    assert result["k200_t0.1"]["top5"] == 100.0  # 4 classes: top-5 covers them all


def test_knn_evaluate_refuses_a_bank_without_labels():
    with pytest.raises(ValueError, match="labelled"):
        knn_evaluate(
            torch.randn(4, 3), torch.full((4,), -1), torch.randn(2, 3), torch.zeros(2, dtype=torch.long), 2
        )


def _clusters(n_per_class: int, classes: int, dim: int, noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def test_linear_probe_separates_separable_classes_and_is_deterministic():
    x_train, y_train = _clusters(20, 3, 8, 0.5, seed=1)
    x_test, y_test = _clusters(10, 3, 8, 0.5, seed=1)
    x_train = x_train * 100 + 50  # raw scale must not matter: features are standardised
    x_test = x_test * 100 + 50
    first = linear_probe(x_train, y_train, x_test, y_test, 3, epochs=20, batch_size=16)
    second = linear_probe(x_train, y_train, x_test, y_test, 3, epochs=20, batch_size=16)
    assert first == second
    assert first["top1"] == 100.0


def test_linear_probe_on_noise_stays_near_chance():
    generator = torch.Generator().manual_seed(3)
    x_train, y_train = (
        torch.randn(200, 8, generator=generator),
        torch.randint(0, 4, (200,), generator=generator),
    )
    x_test, y_test = (
        torch.randn(400, 8, generator=generator),
        torch.randint(0, 4, (400,), generator=generator),
    )
    result = linear_probe(x_train, y_train, x_test, y_test, 4, epochs=10, batch_size=32)
    assert 10.0 < result["top1"] < 40.0


def test_evaluate_features_bundles_knn_and_linear():
    x, y = _clusters(8, 2, 4, 0.1, seed=0)
    result = evaluate_features(x, y, x, y, 2, linear_kwargs={"epochs": 5, "batch_size": 8})
    assert result["knn"]["k200_t0.1"]["top1"] == 100.0
    assert result["linear"]["top1"] == 100.0 and result["linear"]["protocol"] == "fast"
    assert "linear" not in evaluate_features(x, y, x, y, 2, linear=False)


def test_extract_features_matches_the_encoders_own_preprocessing():
    encoder = Encoder(input_size=32).eval()
    images = torch.randint(0, 256, (5, 3, 40, 48), dtype=torch.uint8)  # needs resize + centre crop
    labels = torch.arange(5)
    features, out_labels = extract_features(encoder, images, labels, batch_size=2)
    assert features.shape == (5, 512) and features.dtype == torch.float32
    assert torch.equal(out_labels, labels)
    torch.testing.assert_close(F.normalize(features, dim=1), encoder.embed(images), atol=1e-5, rtol=1e-4)
    from_loader, loader_labels = extract_features(
        encoder, [(images[:3], labels[:3]), (images[3:], labels[3:])]
    )
    torch.testing.assert_close(from_loader, features, atol=1e-5, rtol=1e-4)
    assert torch.equal(loader_labels, labels)


def test_extract_features_restores_training_mode():
    encoder = Encoder().train()
    extract_features(encoder, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert encoder.training
