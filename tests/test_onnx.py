"""ONNX export: one self-contained file, dynamic batch, metadata, parity enforced before writing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from sslzoo.export import onnx as sslzoo_onnx
from sslzoo.export.onnx import OnnxExportError, export_onnx, onnx_config, onnx_session

from sslzoo import ConfigError, Encoder

PROVENANCE = {"name": "simclr-resnet18-cifar10", "method": "simclr", "epochs": 2}


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder("resnet18", "cifar", input_size=32, provenance=PROVENANCE).eval()


@pytest.fixture(scope="module")
def exported(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return path, export_onnx(encoder, path)


def images(batch: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_parity_report_meets_the_fp32_bound_at_an_untraced_batch(exported):
    _, report = exported
    assert report["max_abs_diff"] <= 1e-4
    assert report["parity_batch"] == 3 and report["trace_batch"] == 2
    assert report["providers"] == ["CPUExecutionProvider"]
    assert report["num_features"] == 512 and report["opset"] == 18


def test_graph_is_one_file_with_named_dynamic_io(exported):
    path, report = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .data, no temp file left
    assert path.stat().st_size == report["bytes"] > 40_000_000  # 11.2M float32 weights inside
    model = onnx.load(path, load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    shape = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "images" and shape[1:] == [3, 32, 32] and isinstance(shape[0], str)
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out_shape = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert graph_output.name == "features" and out_shape[1] == 512 and isinstance(out_shape[0], str)
    onnx.checker.check_model(str(path), full_check=True)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnx_runtime_cpu_matches_pytorch_at_any_batch(exported, encoder, batch):
    path, _ = exported
    session = onnx_session(path, providers=["CPUExecutionProvider"], threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    x = images(batch)
    (features,) = session.run(["features"], {"images": x.numpy()})
    with torch.inference_mode():
        expected = encoder(x).numpy()
    assert features.shape == (batch, 512) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)


def test_metadata_holds_the_preprocessing_and_provenance(exported, encoder):
    path, _ = exported
    config = onnx_config(path)
    assert config == dict(encoder.config, num_features=512)
    assert onnx_config(onnx_session(path)) == config  # the same from a live session
    assert config["provenance"]["method"] == "simclr" and config["mean"] == [0.4914, 0.4822, 0.4465]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trace_batch": 1}, "trace_batch must be >= 2"),
        ({"parity_batch": 2}, "must be >= 1 and differ"),
        ({"opset": 16}, "too old"),
    ],
)
def test_bad_settings_are_refused_before_exporting(encoder, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_onnx(encoder, tmp_path / "model.onnx", **kwargs)
    assert not (tmp_path / "model.onnx").exists()


def test_cuda_is_asked_for_first_only_where_it_works(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sslzoo_onnx.default_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert sslzoo_onnx.default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnx_config_refuses_a_graph_without_sslzoo_metadata(tmp_path):
    plain = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(OnnxExportError, match="not an sslzoo ONNX export"):
        onnx_config(tmp_path / "plain.onnx")
