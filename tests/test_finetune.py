"""Fine-tuning from the zoo: `sslzoo.load(name, num_classes=N)`, feature maps for dense tasks, and what
saving and loading do with the head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sslzoo.export.onnx import export_onnx, onnx_config, onnx_session
from sslzoo.serve.extractor import FeatureExtractor
from torchvision.models import resnet18

import sslzoo
from sslzoo import registry
from sslzoo.backbones import torchvision_resnet
from sslzoo.evaluation import extract_features


@pytest.fixture(scope="module")
def classifier() -> sslzoo.Encoder:
    torch.manual_seed(0)
    return sslzoo.load(sslzoo.default_model(), num_classes=7)


def test_the_default_model_with_seven_classes_gives_seven_logits_over_its_pretrained_features(classifier):
    x = torch.randn(5, 3, 32, 32)
    assert classifier(x).shape == (5, 7) and classifier.num_classes == 7
    plain = sslzoo.load(sslzoo.default_model())
    with torch.no_grad():
        torch.testing.assert_close(classifier.pooled_features(x), plain(x))  # the published weights, intact
        torch.testing.assert_close(classifier(x), classifier.fc(plain(x)))
    assert classifier.fc.weight.requires_grad and not plain.num_classes
    np.testing.assert_allclose(
        classifier.embed(x.clamp(0, 1).mul(255).byte()), plain.embed(x.clamp(0, 1).mul(255).byte())
    )


def test_a_few_steps_of_fine_tuning_lower_the_loss(classifier, tmp_path):
    model = sslzoo.load(sslzoo.default_model(), num_classes=3).train()
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6) % 3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.layer1[0].conv1.weight.grad is not None  # the whole encoder trains, not only the head


def test_feature_maps_of_every_stage_with_their_channels_and_strides():
    for backbone, stem, size in (("resnet18", "cifar", 32), ("resnet50", "imagenet", 64)):
        encoder = sslzoo.Encoder(backbone=backbone, stem=stem, input_size=size).eval()
        x = torch.randn(2, 3, size, size)
        maps = encoder.feature_maps(x)
        assert list(maps) == ["layer1", "layer2", "layer3", "layer4"]
        for info in encoder.feature_info:
            side = size // info["reduction"]
            assert maps[info["module"]].shape == (2, info["num_chs"], side, side)
        assert torch.equal(encoder.forward_features(x), maps["layer4"])
        assert torch.equal(encoder.forward_head(encoder.forward_features(x)), encoder(x))
    assert list(encoder.feature_maps(x, stages=("layer2",))) == ["layer2"]
    with pytest.raises(sslzoo.ConfigError, match="layer5"):
        encoder.feature_maps(x, stages=("layer5",))


def test_a_fine_tuned_model_saves_its_head_and_config_and_loads_back_whole(classifier, tmp_path):
    with torch.no_grad():
        classifier.fc.weight.add_(1.0)  # stands for training
    classifier.save_pretrained(tmp_path / "tuned")
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["num_classes"] == 7
    state = load_file(tmp_path / "tuned" / "model.safetensors")
    assert state["fc.weight"].shape == (7, 512) and state["fc.bias"].shape == (7,)
    loaded = sslzoo.load(tmp_path / "tuned")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), classifier(x))
    kept = sslzoo.load(tmp_path / "tuned", num_classes=7)
    assert torch.equal(kept.fc.weight, classifier.fc.weight)  # its own head, not a fresh one
    assert sslzoo.load(tmp_path / "tuned", num_classes=4)(x).shape == (2, 4)
    headless = sslzoo.load(tmp_path / "tuned", num_classes=0)
    assert headless(x).shape == (2, 512) and "num_classes" not in headless.config
    same = sslzoo.Encoder.from_pretrained(tmp_path / "tuned")
    assert same.num_classes == 7 and torch.equal(same.fc.bias, classifier.fc.bias)
    # The weights keep torchvision's names: a torchvision ResNet with a 7-class fc reads them as they are.
    net = resnet18(num_classes=7)
    reference = torchvision_resnet("resnet18", "cifar")
    net.conv1, net.maxpool = reference.conv1, reference.maxpool
    net.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), loaded(x))


def test_the_registry_checksum_guards_the_published_encoder_not_the_head(monkeypatch):
    info = registry.model_info(sslzoo.default_model())
    broken = type(info)(**{**info.__dict__, "sha256": "0" * 64})
    monkeypatch.setattr("sslzoo.loading.model_info", lambda name: broken)
    with pytest.raises(sslzoo.CorruptWeightsError, match="does not match the registry"):
        sslzoo.load(info.name, num_classes=7)


def test_bad_class_counts_are_refused():
    for bad in (-1, 2.5, True):
        with pytest.raises(sslzoo.ConfigError, match="num_classes"):
            sslzoo.Encoder(num_classes=bad)


def test_features_for_retrieval_and_evaluation_ignore_the_head(classifier, tmp_path):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    features, _ = extract_features(classifier, images)
    assert features.shape == (4, 512)
    extractor = FeatureExtractor(classifier, model_id="tuned")
    np.testing.assert_allclose(extractor.embed(images), classifier.embed(images).numpy(), atol=1e-6)


@pytest.mark.slow
def test_the_onnx_graph_of_a_fine_tuned_model_gives_its_features(classifier, tmp_path):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    report = export_onnx(classifier, tmp_path / "tuned.onnx")
    assert report["num_features"] == 512 and "num_classes" not in onnx_config(tmp_path / "tuned.onnx")
    batch = classifier.preprocess(images)
    (onnx_features,) = onnx_session(tmp_path / "tuned.onnx").run(None, {"images": batch.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_features, classifier.pooled_features(batch).numpy(), atol=1e-4)


def test_the_readme_fine_tuning_example_runs_as_written(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Fine-tuning and dense features", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) <= 11  # the ten-line example (plus its import line)
    monkeypatch.chdir(tmp_path)
    loader = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 6])) for _ in range(2)]
    namespace: dict = {"loader": loader}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["model"].num_classes == 7 and (tmp_path / "my-classifier" / "config.json").is_file()
    maps = namespace["maps"]
    assert {name: tuple(value.shape) for name, value in maps.items()} == {
        "layer1": (4, 64, 32, 32),
        "layer2": (4, 128, 16, 16),
        "layer3": (4, 256, 8, 8),
        "layer4": (4, 512, 4, 4),
    }
