"""int8 ONNX graphs: static quantization calibrated on the model's training distribution, its checks,
the export that ships it, and the serving backend that runs it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sslzoo.export import quantize
from sslzoo.export.cli import main as export_main
from sslzoo.export.folder import export_folder
from sslzoo.export.onnx import INPUT_NAME, OnnxExportError, onnx_config, onnx_session
from sslzoo.export.quantize import (
    INT8_NAME,
    calibration_images,
    int8_record,
    leave_one_out_knn,
    quantize_int8,
)
from sslzoo.serve.extractor import FeatureExtractor, model_fingerprint
from sslzoo.train.datasets import ImageTensors

from sslzoo import ConfigError, Encoder

SIZE = 16  # a full ResNet-18 on 16 px images: the real graph, a quarter of the CIFAR cost


def tiny_encoder(dataset: str | None = "cifar10") -> Encoder:
    torch.manual_seed(0)
    return Encoder(input_size=SIZE, provenance={"name": "tiny", "dataset": dataset}).eval()


def pixels(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(encoder, export folder): `export_folder(..., quantize="int8")` calibrated on a folder of 10 PNGs
    and a broken file, done once (the fp32 export is the expensive part)."""
    root = tmp_path_factory.mktemp("int8")
    encoder = tiny_encoder()
    images = root / "calibration"
    images.mkdir()
    for index, image in enumerate(pixels(10)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(images / f"{index}.png")
    (images / "broken.png").write_bytes(b"not a png")
    export_folder(encoder, root / "out", to="onnx", quantize="int8", calibration=images, progress=False)
    return encoder, root / "out"


@pytest.fixture(scope="module")
def graphs(exported):
    """(encoder, fp32 graph, int8 graph, its record)."""
    encoder, folder = exported
    record = json.loads((folder / "results.json").read_text())["int8"]
    return encoder, folder / "model.onnx", folder / INT8_NAME, record


def test_the_int8_graph_holds_int8_weights_and_gives_the_fp32_features_closely(graphs):
    encoder, fp32, int8, record = graphs
    model = onnx.load(str(int8))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ format
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(np.prod(t.dims) for t in int8_weights) > 0.95 * sum(p.numel() for p in encoder.parameters())
    assert int8.stat().st_size < 0.35 * fp32.stat().st_size and record["bytes"] == int8.stat().st_size

    images = encoder.preprocess(list(pixels(6, seed=7))).numpy()
    (reference,) = onnx_session(fp32, providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: images})
    (quantized,) = onnx_session(int8, providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: images})
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(reference), torch.from_numpy(quantized))
    assert cosine.min() > 0.98 and not np.allclose(reference, quantized, atol=1e-6)  # close, yet quantized


def test_the_graph_carries_its_preprocessing_calibration_and_source_fingerprint(graphs):
    encoder, _, int8, record = graphs
    assert onnx_config(int8)["input_size"] == SIZE  # what FeatureExtractor / the ONNX snippet read
    stored, fingerprint = int8_record(int8)
    assert stored == {key: value for key, value in record.items() if key not in ("bytes", "gallery_knn")}
    assert fingerprint == model_fingerprint(encoder)
    assert record["format"] == "QDQ" and record["weights"] == "int8, per output channel"
    assert record["calibration"] == {  # the broken file is skipped; a quarter is held out
        "source": "images given", "dataset": None, "images": 8, "holdout_images": 2, "seed": 0
    }
    assert record["cosine_to_fp32"]["images"] == 2 and record["cosine_to_fp32"]["mean"] >= 0.99


def test_a_graph_that_strays_from_fp32_is_refused_and_nothing_is_written(graphs, tmp_path, monkeypatch):
    encoder, fp32, _, _ = graphs
    calibration, holdout, source = calibration_images(encoder, images=list(pixels(8)), holdout=2)
    monkeypatch.setattr(quantize, "MIN_MEAN_COSINE", 1.5)
    with pytest.raises(OnnxExportError, match="mean cosine similarity"):
        quantize_int8(encoder, fp32, tmp_path / INT8_NAME, calibration, holdout, source)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OnnxExportError, match="not an sslzoo int8 graph"):
        int8_record(fp32)


def test_calibration_draws_a_seeded_sample_of_the_training_split(monkeypatch):
    encoder = tiny_encoder("cifar10")
    train = ImageTensors(pixels(200, seed=3), torch.zeros(200, dtype=torch.long), num_classes=10)
    asked = []

    def load_split(dataset, split, data_dir=None, input_size=None):
        asked.append((dataset, split, data_dir))
        return train

    monkeypatch.setattr("sslzoo.train.datasets.load_split", load_split)
    calibration, holdout, source = calibration_images(encoder, data_dir="somewhere", count=20, holdout=5)
    assert asked == [("cifar10", "train", "somewhere")]
    assert calibration.shape == (20, 3, SIZE, SIZE) and holdout.shape == (5, 3, SIZE, SIZE)
    assert source["source"] == "cifar10 training split" and source["images"] == 20
    rows = {row.tobytes() for row in encoder.preprocess(list(train.images)).numpy()}
    assert all(row.tobytes() in rows for row in np.concatenate([calibration, holdout]))  # the model's preprocessing
    assert not {row.tobytes() for row in calibration} & {row.tobytes() for row in holdout}
    again, _, _ = calibration_images(encoder, data_dir="somewhere", count=20, holdout=5)
    np.testing.assert_array_equal(again, calibration)


def test_without_the_training_split_cifar10_falls_back_to_the_embedded_gallery_and_others_are_told(tmp_path):
    calibration, _, source = calibration_images(tiny_encoder("cifar10"), data_dir=tmp_path, count=16, holdout=4)
    assert len(calibration) == 16 and "embedded gallery" in source["source"] and source["gallery"]
    for dataset in ("cifar100", None):
        with pytest.raises(ConfigError, match="--calibration"):
            calibration_images(tiny_encoder(dataset), data_dir=tmp_path, count=16)


def test_leave_one_out_knn_votes_without_the_item_itself():
    angles = np.radians([0, 10, 90, 80, 60])  # the last one (class 0) sits next to class 1
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 1, 1, 0])  # with itself among its neighbours every item would be right
    assert leave_one_out_knn(features, labels, 2, protocols=[(1, 0.1)]) == {"k1_t0.1": 80.0}


def test_export_records_the_int8_graph_and_both_gallery_knn_in_results_and_card(exported):
    encoder, folder = exported
    results = json.loads((folder / "results.json").read_text())
    assert {"model.onnx", INT8_NAME} <= set(results["files"])
    knn = results["int8"]["gallery_knn"]  # a CIFAR-10 model: both graphs' kNN on the embedded gallery
    assert set(knn["fp32"]) == set(knn["int8"]) == {"k200_t0.1", "k20_t0.07"} and knn["images"] == 1000
    assert not knn["calibrated_on_these_images"]
    card = (folder / "README.md").read_text()
    assert INT8_NAME in card and "--backend onnx-int8" in card
    for key in knn["fp32"]:
        assert f"{knn['fp32'][key]:.2f} | {knn['int8'][key]:.2f}" in card

    with pytest.raises(ConfigError, match="--to onnx"):
        export_folder(encoder, folder.parent / "x", to="safetensors", quantize="int8")
    with pytest.raises(ConfigError, match="int8"):
        export_folder(encoder, folder.parent / "x", to="onnx", quantize="int4")


def test_the_cli_refuses_calibration_without_quantize(tmp_path):
    result = CliRunner().invoke(
        export_main, ["simclr-resnet18-cifar10", "--out", str(tmp_path / "o"), "--calibration", "x"]
    )
    assert result.exit_code != 0 and "only apply with --quantize int8" in result.output
    assert "--quantize" in CliRunner().invoke(export_main, ["--help"]).output


def test_the_int8_backend_serves_a_shipped_graph_without_quantizing_again(graphs, tmp_path, monkeypatch):
    encoder, fp32, int8, record = graphs
    shipped = tmp_path / "export"
    encoder.save_pretrained(shipped)
    (shipped / INT8_NAME).write_bytes(int8.read_bytes())

    def refuse(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(quantize, "quantize_int8", refuse)
    extractor = FeatureExtractor(shipped, backend="onnx-int8", cache_dir=tmp_path / "cache", model_id="tiny")
    assert extractor.onnx_path == shipped / INT8_NAME and extractor.quantization == int8_record(int8)[0]
    images = list(pixels(4, seed=9))
    features, reference = extractor.embed(images), FeatureExtractor(encoder, model_id="tiny").embed(images)
    assert features.shape == (4, encoder.num_features)
    assert (features * reference).sum(1).min() > 0.98  # both L2-normalised
    assert extractor.describe()["backend"] == "onnx-int8"
    assert extractor.fingerprint != model_fingerprint(encoder)  # an index never mixes int8 and fp32 rows


def test_the_int8_backend_quantizes_once_and_caches_the_graph(graphs, tmp_path, monkeypatch):
    encoder, fp32, _, _ = graphs
    cache = tmp_path / "cache"
    (cache / "onnx").mkdir(parents=True)  # the fp32 graph it quantizes, as exported before
    (cache / "onnx" / f"{model_fingerprint(encoder)[:24]}.onnx").write_bytes(fp32.read_bytes())
    first = FeatureExtractor(encoder, backend="onnx-int8", cache_dir=cache, calibration=list(pixels(8)))
    assert first.onnx_path.is_file() and first.onnx_path.parent == cache / "onnx"
    assert first.quantization["calibration"]["source"] == "images given"
    monkeypatch.setattr(quantize, "quantize_int8", lambda *a, **k: pytest.fail("quantized again"))
    second = FeatureExtractor(encoder, backend="onnx-int8", cache_dir=cache, calibration=list(pixels(8)))
    assert second.onnx_path == first.onnx_path and second.fingerprint == first.fingerprint
    with pytest.raises(ConfigError, match="CPU"):
        FeatureExtractor(encoder, backend="onnx-int8", device="meta", cache_dir=cache)


def test_a_named_int8_graph_must_come_from_the_same_encoder(graphs, tmp_path):
    encoder, fp32, int8, _ = graphs
    extractor = FeatureExtractor(encoder, backend="onnx-int8", cache_dir=tmp_path, int8_graph=int8)
    assert extractor.onnx_path == int8 and not (tmp_path / "onnx").exists()  # nothing exported or quantized
    torch.manual_seed(1)
    other = Encoder(input_size=SIZE, provenance={"name": "other"})
    with pytest.raises(ConfigError, match="another model"):
        FeatureExtractor(other, backend="onnx-int8", cache_dir=tmp_path, int8_graph=int8)
    with pytest.raises(ConfigError, match="not an int8 graph"):
        FeatureExtractor(encoder, backend="onnx-int8", cache_dir=tmp_path, int8_graph=fp32)
