"""FeatureExtractor: batched unit-norm features, PyTorch and ONNX Runtime in agreement, cached exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sslzoo.export import onnx as export_onnx_module
from sslzoo.serve import extractor as extractor_module
from sslzoo.serve.extractor import FeatureExtractor, model_fingerprint

from sslzoo import ConfigError, Encoder


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder("resnet18", "cifar", input_size=32, provenance={"name": "tiny-r18"}).eval()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-cache")


@pytest.fixture(scope="module")
def onnx_extractor(encoder, cache_dir) -> FeatureExtractor:
    return FeatureExtractor(encoder, backend="onnx", batch_size=4, cache_dir=cache_dir, threads=1)


def mixed_images(tmp_path, count: int = 7) -> list:
    """Images in every form users pass: PIL of several sizes and modes, files, uint8 tensors and arrays."""
    rng = np.random.default_rng(3)
    images: list = []
    for index in range(count):
        pixels = rng.integers(0, 256, size=(24 + 8 * index, 40, 3), dtype=np.uint8)
        kind = index % 4
        if kind == 0:
            images.append(Image.fromarray(pixels))
        elif kind == 1:
            path = tmp_path / f"image{index}.png"
            Image.fromarray(pixels).convert("L").save(path)
            images.append(str(path))
        elif kind == 2:
            images.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
        else:
            images.append(pixels)
    return images


def test_features_are_unit_norm_float32_rows_one_per_image(encoder, tmp_path):
    extractor = FeatureExtractor(encoder, batch_size=3)
    features = extractor.embed(mixed_images(tmp_path))
    assert features.shape == (7, 512) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_features(encoder, tmp_path):
    images = mixed_images(tmp_path)
    one_batch = FeatureExtractor(encoder, batch_size=16).embed(images)
    small_batches = FeatureExtractor(encoder, batch_size=2).embed(images)
    np.testing.assert_allclose(one_batch, small_batches, atol=1e-5)


def test_torch_features_match_the_encoders_own_embed(encoder, tmp_path):
    images = mixed_images(tmp_path, count=3)
    expected = encoder.embed(images).numpy()
    np.testing.assert_allclose(FeatureExtractor(encoder).embed(images), expected, atol=1e-6)


def test_onnx_and_torch_backends_agree_within_1e_4(encoder, onnx_extractor, tmp_path):
    images = mixed_images(tmp_path)
    torch_features = FeatureExtractor(encoder, batch_size=4).embed(images)
    onnx_features = onnx_extractor.embed(images)
    assert onnx_features.shape == torch_features.shape == (7, 512)
    assert np.abs(onnx_features - torch_features).max() <= 1e-4
    assert onnx_extractor._session.get_providers() == ["CPUExecutionProvider"]


def test_onnx_export_is_cached_by_fingerprint_and_reused(encoder, onnx_extractor, cache_dir, monkeypatch):
    assert onnx_extractor.onnx_path.parent == cache_dir / "onnx"
    assert onnx_extractor.onnx_path.name.startswith(onnx_extractor.fingerprint[:24])

    def must_not_export(*args, **kwargs):
        raise AssertionError("the cached ONNX file should have been reused")

    monkeypatch.setattr(export_onnx_module, "export_onnx", must_not_export)
    again = FeatureExtractor(encoder, backend="onnx", cache_dir=cache_dir)
    assert again.onnx_path == onnx_extractor.onnx_path


def test_a_damaged_cached_onnx_file_is_exported_afresh(encoder, tmp_path):
    damaged = tmp_path / "onnx" / f"{model_fingerprint(encoder)[:24]}.onnx"
    damaged.parent.mkdir()
    damaged.write_bytes(b"not an onnx graph")
    second = FeatureExtractor(encoder, backend="onnx", cache_dir=tmp_path)
    assert second.onnx_path == damaged and damaged.stat().st_size > 1_000_000
    image = Image.new("RGB", (32, 32), (200, 30, 90))
    np.testing.assert_allclose(second.embed([image]), FeatureExtractor(encoder).embed([image]), atol=1e-4)


def test_fingerprint_follows_weights_and_preprocessing_not_provenance(encoder):
    base = model_fingerprint(encoder)
    same_weights = Encoder(provenance={"method": "other"})
    same_weights.load_state_dict(encoder.state_dict())
    assert model_fingerprint(same_weights) == base
    other_std = Encoder(std=(0.5, 0.5, 0.5))
    other_std.load_state_dict(encoder.state_dict())
    assert model_fingerprint(other_std) != base
    with torch.no_grad():
        same_weights.layer4[1].conv2.weight[0, 0, 0, 0] += 1e-3
    assert model_fingerprint(same_weights) != base


def test_loads_a_model_folder_by_path_and_names_it_after_the_folder(encoder, tmp_path):
    folder = tmp_path / "my-encoder"
    encoder.save_pretrained(folder)
    extractor = FeatureExtractor(folder)
    assert extractor.model_id == "my-encoder"
    assert extractor.fingerprint == model_fingerprint(encoder)
    assert extractor.describe()["feature_dim"] == 512


def test_rejects_unknown_backend_and_bad_batch_size(encoder):
    with pytest.raises(ConfigError, match="backend"):
        FeatureExtractor(encoder, backend="tensorrt")
    with pytest.raises(ConfigError, match="batch_size"):
        FeatureExtractor(encoder, batch_size=0)


def test_a_background_export_answers_with_pytorch_until_onnx_is_ready(
    encoder, onnx_extractor, tmp_path, monkeypatch
):
    import shutil
    import threading

    gate, exported_copies = threading.Event(), []

    def slow_export(module, path, fingerprint):  # the real export, already made once: copied when let through
        assert fingerprint == onnx_extractor.fingerprint
        gate.wait(60)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_extractor.onnx_path, path)
        exported_copies.append(path)

    monkeypatch.setattr(extractor_module, "_export_in_a_process", slow_export)
    extractor = FeatureExtractor(encoder, backend="onnx", cache_dir=tmp_path, onnx_in_background=True)
    images = mixed_images(tmp_path, count=3)
    expected = FeatureExtractor(encoder).embed(images)
    assert extractor.running_backend == "torch" and not extractor.wait_for_backend(timeout=0.05)
    np.testing.assert_allclose(extractor.embed(images), expected, atol=1e-6)
    gate.set()
    assert extractor.wait_for_backend(timeout=60) and extractor.running_backend == "onnx"
    assert exported_copies == [extractor.onnx_path]
    np.testing.assert_allclose(extractor.embed(images), expected, atol=1e-4)


def test_a_failed_background_export_keeps_pytorch_running(encoder, tmp_path, monkeypatch, caplog):
    def broken_export(module, path, fingerprint):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(extractor_module, "_export_in_a_process", broken_export)
    extractor = FeatureExtractor(
        encoder, backend="onnx", cache_dir=tmp_path, onnx_in_background=True, model_id="tiny"
    )
    assert not extractor.wait_for_backend(timeout=60) and extractor.running_backend == "torch"
    assert "exporter broke" in caplog.text and "PyTorch" in caplog.text
    image = Image.new("RGB", (32, 32), (10, 200, 90))
    np.testing.assert_allclose(extractor.embed([image]), FeatureExtractor(encoder).embed([image]), atol=1e-6)


@pytest.mark.slow
def test_the_background_export_runs_in_a_process_of_its_own(encoder, tmp_path):
    extractor = FeatureExtractor(encoder, backend="onnx", cache_dir=tmp_path, onnx_in_background=True)
    assert extractor.wait_for_backend(timeout=300) and extractor.onnx_path.stat().st_size > 1_000_000
    image = Image.new("RGB", (32, 32), (90, 20, 200))
    np.testing.assert_allclose(extractor.embed([image]), FeatureExtractor(encoder).embed([image]), atol=1e-4)
