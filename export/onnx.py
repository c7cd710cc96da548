"""ONNX export of an `Encoder`, checked against PyTorch before anything is written.

The graph takes `images` (N, 3, H, W) float32, already normalised with the encoder's mean/std,
and returns `features` (N, D). N is dynamic. The preprocessing constants and the provenance
travel inside the file (`metadata_props`), so a runtime that only has `model.onnx` can still
feed it correctly (`onnx_config` reads them back).

Exporter choice, measured on a 2-core CPU with torch 2.15 (CIFAR-stem ResNet-18, 32 px):
`torch.onnx.export(dynamo=True)` took 1.4-3.4 s, the legacy TorchScript path 0.9 s. Both gave
a dynamic batch axis and parity of about 2e-6; the legacy path warns that it will be removed,
so sslzoo uses the torch.export-based exporter, traced at batch >= 2 (torch.export specialises
size-1 dimensions, which would freeze the batch axis).
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError, SslzooError
from sslzoo.extras import require

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

ONNX_NAME = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "features"
MIN_OPSET = 17

#: fp32 graphs must reproduce PyTorch's features to this max absolute difference.
FP32_TOLERANCE = 1e-4
#: fp16 graphs keep about three significant digits, so their bound is relative to the feature
#: scale: max |onnx - torch| <= FP16_RELATIVE_TOLERANCE * max |torch|. Measured on a CIFAR-stem
#: ResNet-18: 5e-4 of the scale, a cosine similarity of 0.9999998 to the fp32 features.
FP16_RELATIVE_TOLERANCE = 1e-2

#: metadata_props keys holding JSON values; every other key holds a plain string.
_JSON_KEYS = ("input_size", "mean", "std", "provenance", "num_features")


def _onnx() -> ModuleType:
    return require("onnx", "export", "ONNX export")


def _ort() -> ModuleType:
    return require("onnxruntime", "export", "ONNX Runtime")


class OnnxExportError(SslzooError):
    """The exporter, the ONNX checker or the parity check refused the model; nothing was written."""


def export_onnx(
    encoder: Encoder,
    path: str | os.PathLike,
    *,
    opset: int = 18,
    fp16: bool = False,
    parity_batch: int = 3,
    trace_batch: int = 2,
) -> dict[str, Any]:
    """Write `encoder` to `path` as one self-contained ONNX file, and return the parity report.

    The graph is traced at `trace_batch`, checked with `onnx.checker` (full check), then run in
    ONNX Runtime's CPU provider at `parity_batch` (a different batch size, proving the dynamic
    axis) next to PyTorch. Only a graph that passes lands at `path` (written to a temporary file
    beside it, then moved), so a failed export never leaves a file behind.

    `fp16=True` stores weights and activations in half precision (half the file size); inputs
    and outputs stay float32 and parity is checked with `FP16_RELATIVE_TOLERANCE`.
    """
    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset {opset} is too old; use {MIN_OPSET} or newer.")
    if trace_batch < 2:
        raise ConfigError(
            "trace_batch must be >= 2: torch.export fixes size-1 dimensions, freezing the batch axis."
        )
    if parity_batch < 1 or parity_batch == trace_batch:
        raise ConfigError(
            f"parity_batch ({parity_batch}) must be >= 1 and differ from trace_batch ({trace_batch}), "
            "so the check proves the batch axis is dynamic."
        )
    onnx = _onnx()
    require("onnxscript", "export", "ONNX export")  # torch.onnx.export(dynamo=True) builds the graph with it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = copy.deepcopy(encoder).float().cpu().eval()
    size = reference.input_size

    graph: nn.Module = _PooledFeatures(reference) if reference.num_classes else reference
    model = _export(_Fp16Graph(graph) if fp16 else graph, _sample(reference, trace_batch, seed=1), opset)
    onnx.helper.set_model_props(model, onnx_metadata(reference))
    model.doc_string = (
        f"sslzoo {reference.backbone} encoder ({reference.provenance.get('method', 'untrained')}): "
        f"{INPUT_NAME} (N, 3, {size}, {size}) float32 normalised with the metadata's mean/std "
        f"-> {OUTPUT_NAME} (N, {reference.num_features})."
    )

    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        onnx.save_model(model, temporary, save_as_external_data=False)
        try:
            onnx.checker.check_model(temporary, full_check=True)
        except onnx.checker.ValidationError as error:
            raise OnnxExportError(f"The exported graph fails onnx.checker: {error}") from error
        report = _check_parity(reference, temporary, fp16=fp16, parity_batch=parity_batch)
        report.update(opset=opset, trace_batch=trace_batch, bytes=temporary.stat().st_size)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    report["path"] = str(path)
    return report


def onnx_session(
    path: str | os.PathLike,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> ort.InferenceSession:
    """An ONNX Runtime session for an exported encoder.

    By default it asks for CUDA first when a GPU is usable, then the CPU provider (always last,
    always explicit: onnxruntime-gpu lists CUDA even on machines without a GPU). Check
    `session.get_providers()` for what it got. `threads` caps intra-op threads (None: ORT's default).
    """
    ort = _ort()
    if providers is None:
        providers = default_providers()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)


def default_providers() -> list[str]:
    """`["CUDAExecutionProvider", "CPUExecutionProvider"]` where CUDA really works, else the CPU provider."""
    usable_cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in _ort().get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if usable_cuda else ["CPUExecutionProvider"]


def onnx_metadata(encoder: Encoder) -> dict[str, str]:
    """The strings stored in `metadata_props`: the encoder's config plus feature width."""
    config = dict(encoder.config, num_features=encoder.num_features)
    config.pop("num_classes", None)  # the graph gives features, head or not
    return {key: json.dumps(value) if key in _JSON_KEYS else str(value) for key, value in config.items()}


def onnx_config(source: str | os.PathLike | ort.InferenceSession) -> dict[str, Any]:
    """Read an exported graph's preprocessing and provenance back (from a file or a session).

    Returns the `Encoder.config` keys (backbone, stem, input_size, mean, std, interpolation,
    provenance) plus `num_features`, typed as in Python. `eval_transform(**...)` then rebuilds
    the exact preprocessing the graph expects.
    """
    if hasattr(source, "get_modelmeta"):  # an onnxruntime.InferenceSession
        props = dict(source.get_modelmeta().custom_metadata_map)
    else:
        model = _onnx().load(os.fspath(source), load_external_data=False)
        props = {prop.key: prop.value for prop in model.metadata_props}
    missing = [
        key for key in ("backbone", "stem", "input_size", "mean", "std", "interpolation") if key not in props
    ]
    if missing:
        raise OnnxExportError(f"{source}: not an sslzoo ONNX export (metadata lacks {', '.join(missing)}).")
    return {key: json.loads(value) if key in _JSON_KEYS else value for key, value in props.items()}


class _PooledFeatures(nn.Module):
    """An encoder with a classification head, exported as what the graph promises: its features."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled_features(images)


class _Fp16Graph(nn.Module):
    """Half-precision weights and activations behind a float32 interface."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = copy.deepcopy(encoder).half().eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.half()).float()


def _sample(encoder: Encoder, batch: int, seed: int) -> torch.Tensor:
    """Images as the graph sees them in use: uniform pixels normalised with the encoder's mean/std."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, encoder.input_size, encoder.input_size, generator=generator)
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _export(module: nn.Module, sample: torch.Tensor, opset: int) -> onnx.ModelProto:
    try:
        program = torch.onnx.export(
            module.eval(),
            (sample,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: "batch"},),
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    except Exception as error:  # the exporter raises many types; all mean "this graph cannot be exported"
        raise OnnxExportError(f"torch.onnx.export failed: {type(error).__name__}: {error}") from error
    return program.model_proto


def _check_parity(reference: Encoder, path: Path, *, fp16: bool, parity_batch: int) -> dict[str, Any]:
    images = _sample(reference, parity_batch, seed=2)
    with torch.inference_mode():
        expected = reference.pooled_features(images).numpy()
    session = onnx_session(path, providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    if actual.shape != expected.shape:
        raise OnnxExportError(f"ONNX output has shape {actual.shape}, PyTorch {expected.shape}.")
    max_abs_diff = float(np.abs(actual - expected).max())
    scale = float(np.abs(expected).max())
    tolerance = FP16_RELATIVE_TOLERANCE * scale if fp16 else FP32_TOLERANCE
    if not max_abs_diff <= tolerance:  # also catches NaN
        raise OnnxExportError(
            f"ONNX Runtime and PyTorch disagree at batch {parity_batch}: max |diff| {max_abs_diff:.3g} > "
            f"{tolerance:.3g} ({'fp16' if fp16 else 'fp32'} bound); the graph was not written."
        )
    return {
        "max_abs_diff": max_abs_diff,
        "tolerance": tolerance,
        "tolerance_rule": (
            f"max |diff| <= {FP16_RELATIVE_TOLERANCE} * max |feature|"
            if fp16
            else f"max |diff| <= {FP32_TOLERANCE}"
        ),
        "feature_scale": scale,
        "parity_batch": parity_batch,
        "fp16": fp16,
        "providers": session.get_providers(),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "num_features": int(expected.shape[1]),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "onnxruntime": _ort().__version__,
    }
