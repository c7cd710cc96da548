"""int8 ONNX graphs for fast CPU serving: ONNX Runtime's static quantization, calibrated on the
model's own training distribution.

`quantize_int8` runs `quant_pre_process` (shape inference and graph optimisation), then
`quantize_static` in QDQ format: activations uint8 (per tensor, ranges from MinMax calibration),
weights int8 per output channel. Measured on the bundled CIFAR-10 SimCLR ResNet-18 (a shared,
loaded 2-core CPU, 1 thread; calibration on 256 CIFAR-10 training images; kNN leave-one-out
over the embedded 1,000-image gallery, fp32: 43.3 at k=200, 44.1 at k=20):

| variant (activations/weights)         | img/s at batch 1 / 16 / 64 | kNN top-1 k=200 / k=20 |
|---------------------------------------|----------------------------|------------------------|
| PyTorch eager                         | 49 / 74 / 60               | -                      |
| fp32 ONNX Runtime                     | 48 / 52 / 78               | 43.3 / 44.1            |
| QDQ, per channel (the choice)         | 258 / 319 / 232            | 43.3 / 43.6            |
| QDQ, per tensor                       | 129 / 164 / 182            | 43.1 / 43.8            |
| QOperator, per channel                | 135 / 196 / 192            | 43.3 / 43.6            |
| QOperator, per tensor                 | 143 / 180 / 201            | 43.1 / 43.8            |
| QDQ, per channel, 512 images          | 141 / 203 / 176 (run 2)    | 43.1 / 43.7            |
| ... with the first conv in fp32       | 78 / 112 / 100 (run 2)     | 43.2 / 43.8            |

QDQ lets ONNX Runtime fuse each DequantizeLinear-Conv-QuantizeLinear into its u8s8 integer kernel
and was the fastest format here; uint8 weights are no faster than fp32 on AVX2. Keeping the first
convolution in fp32 (a common remedy for accuracy) cost two thirds of the speed, since at 32 px it
is the most expensive layer, for no measurable kNN gain, so every layer is quantized. With the
512 calibration images of `CALIBRATION_SIZE` the default's kNN moves by -0.2 / -0.4 points
(recorded on its card).

A quantized graph is kept only if its features stay close to the fp32 graph's on held-out
images (`MIN_MEAN_COSINE`); it carries the fp32 graph's metadata plus what it was calibrated on.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.evaluation import KNN_PROTOCOLS, batch_preprocess, knn_key, topk_accuracy
from sslzoo.preprocessing import ImageLike

from . import CALIBRATION_SIZE
from .onnx import INPUT_NAME, OnnxExportError, onnx_config, onnx_metadata, onnx_session

INT8_NAME = "model.int8.onnx"
# CALIBRATION_SIZE (in the package's __init__, for the command line): calibration images drawn from
# the training split, a few hundred, as ONNX Runtime advises.
#: Images, disjoint from the calibration set, on which int8 and fp32 features are compared.
HOLDOUT_SIZE = 64
#: Mean cosine similarity to the fp32 features below which a quantized graph is refused.
MIN_MEAN_COSINE = 0.99
#: metadata_props key holding the quantization record (JSON).
QUANTIZATION_KEY = "quantization"
#: metadata_props key holding the fingerprint of the encoder the graph was quantized from.
FINGERPRINT_KEY = "sslzoo_fingerprint"


def calibration_images(
    encoder: Encoder,
    *,
    images: Sequence[ImageLike] | str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    count: int = CALIBRATION_SIZE,
    holdout: int = HOLDOUT_SIZE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(calibration batch, held-out batch, where they came from): normalised float32 (N, 3, S, S).

    Sources, first that applies: `images` (paths, PIL images, tensors, or a folder / glob / file
    list as `sslzoo-embed` reads them); a seeded random sample of the training split of the
    model's dataset found in `data_dir` (default `$SSLZOO_HOME/datasets`); for a CIFAR-10 model,
    the embedded gallery's CIFAR-10 test images, which the record then says (kNN on that gallery
    is measured on the images the graph was calibrated on).
    """
    if count < 1:
        raise ConfigError(f"count must be at least 1 calibration image (got {count}).")
    wanted = count + holdout
    generator = torch.Generator().manual_seed(seed)
    dataset = encoder.provenance.get("dataset")
    if images is not None:
        batch = _preprocessed(encoder, images)
        source = {"source": "images given", "dataset": None}
        if len(batch) < 2:
            raise ConfigError(f"Calibration needs at least 2 readable images (got {len(batch)}).")
    else:
        pixels, source = _training_pixels(encoder, dataset, data_dir, wanted, generator)
        batch = batch_preprocess(encoder, pixels).numpy()
    order = torch.randperm(len(batch), generator=generator).numpy()
    kept = max(1, min(holdout, len(batch) // 4)) if holdout else 0
    calibration, held = batch[order[kept : kept + count]], batch[order[:kept]]
    source.update(images=int(len(calibration)), holdout_images=int(len(held)), seed=seed)
    return np.ascontiguousarray(calibration), np.ascontiguousarray(held), source


def quantize_int8(
    encoder: Encoder,
    fp32_path: str | os.PathLike,
    path: str | os.PathLike,
    calibration: np.ndarray,
    holdout: np.ndarray,
    source: dict[str, Any],
    *,
    per_channel: bool = True,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Quantize the fp32 graph `fp32_path` (an `export_onnx` output of `encoder`) into `path`.

    Returns the record stored in the graph's metadata and in results.json: format, calibration
    source, cosine similarity of its features to the fp32 graph's on `holdout`, size. Raises
    `OnnxExportError` (and writes nothing) when they agree less than `MIN_MEAN_COSINE`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from sslzoo.serve.extractor import model_fingerprint

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sslzoo-int8-") as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=True)
        quantize_static(
            os.fspath(prepared),
            os.fspath(quantized),
            _Batches(calibration, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        agreement = _agreement(fp32_path, quantized, holdout) if len(holdout) else None
        if agreement is not None and not agreement["mean"] >= MIN_MEAN_COSINE:
            raise OnnxExportError(
                f"The int8 graph's features agree with the fp32 graph's only to a mean cosine similarity of "
                f"{agreement['mean']:.4f} (< {MIN_MEAN_COSINE}) on {len(holdout)} held-out images; it was not "
                "written. Serve the fp32 graph (--backend onnx), or calibrate on other images."
            )
        import onnxruntime

        record = {
            "format": "QDQ",
            "activations": "uint8, per tensor, MinMax calibration",
            "weights": "int8, " + ("per output channel" if per_channel else "per tensor"),
            "calibration": source,
            "cosine_to_fp32": agreement,
            "onnxruntime": onnxruntime.__version__,
        }
        model = onnx.load(os.fspath(quantized))
        props = {
            **onnx_metadata(encoder),
            QUANTIZATION_KEY: json.dumps(record),
            FINGERPRINT_KEY: model_fingerprint(encoder),
        }
        onnx.helper.set_model_props(model, props)
        model.doc_string = f"sslzoo int8 ({record['weights']} weights) encoder, from {Path(fp32_path).name}."
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            onnx.save_model(model, os.fspath(temporary))
            record["bytes"] = temporary.stat().st_size
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return record


def int8_record(path: str | os.PathLike) -> tuple[dict[str, Any], str | None]:
    """The quantization record and the source encoder's fingerprint stored in an int8 graph."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    if QUANTIZATION_KEY not in props:
        raise OnnxExportError(f"{path}: not an sslzoo int8 graph (its metadata has no {QUANTIZATION_KEY!r}).")
    return json.loads(props[QUANTIZATION_KEY]), props.get(FINGERPRINT_KEY)


def leave_one_out_knn(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    protocols: Sequence[tuple[int, float]] = KNN_PROTOCOLS,
) -> dict[str, float]:
    """Weighted kNN top-1 (percent) of every item against all the others: the gallery's own accuracy.

    The same vote as `sslzoo.evaluation.knn_scores` (the k most cosine-similar items, weights
    exp(similarity / t)), with each item left out of its own neighbours.
    """
    features = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    similarity = features @ features.T
    similarity.fill_diagonal_(-float("inf"))
    k_max = min(max(k for k, _ in protocols), len(features) - 1)
    top_similarity, top_index = similarity.topk(k_max, dim=1)
    result = {}
    for k, temperature in protocols:
        k = min(k, k_max)
        scores = torch.zeros(len(features), num_classes)
        scores.scatter_add_(1, labels[top_index[:, :k]], (top_similarity[:, :k] / temperature).exp())
        result[knn_key(k, temperature)] = topk_accuracy(scores, labels, ks=(1,))["top1"]
    return result


def gallery_knn(
    fp32_path: str | os.PathLike, int8_path: str | os.PathLike, record: dict[str, Any], threads: int | None = None
) -> dict[str, Any]:
    """Leave-one-out kNN top-1 of the fp32 and the int8 graph on the embedded CIFAR-10 gallery.

    `record` is the int8 graph's quantization record: whether it was calibrated on these very
    images is stated in the result (`calibrated_on_these_images`).
    """
    from sslzoo.serve.gallery import load_default_gallery

    gallery = load_default_gallery()
    config = onnx_config(fp32_path)
    pixels = torch.from_numpy(np.asarray(gallery.images)).permute(0, 3, 1, 2).contiguous()
    images = batch_preprocess(_Preprocessing(config), pixels).numpy()
    result: dict[str, Any] = {
        "gallery": gallery.name,
        "images": len(gallery),
        "protocol": "leave-one-out weighted kNN on cosine similarity",
        "calibrated_on_these_images": record.get("calibration", {}).get("gallery") == gallery.name,
    }
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        session = onnx_session(path, providers=["CPUExecutionProvider"], threads=threads)
        features = np.concatenate(
            [session.run(None, {INPUT_NAME: images[start : start + 64]})[0] for start in range(0, len(images), 64)]
        )
        result[name] = leave_one_out_knn(features, gallery.labels, len(gallery.class_names))
    return result


class _Preprocessing:
    """The attributes `batch_preprocess` reads, from an ONNX graph's metadata."""

    def __init__(self, config: dict[str, Any]):
        self.input_size = int(config["input_size"])
        self.mean, self.std = config["mean"], config["std"]
        self.interpolation = config["interpolation"]


class _Batches:
    """`CalibrationDataReader` over a preprocessed array, `batch_size` images at a time."""

    def __init__(self, images: np.ndarray, batch_size: int):
        self._chunks = iter([images[start : start + batch_size] for start in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {INPUT_NAME: chunk}


def _agreement(fp32_path: str | os.PathLike, int8_path: Path, images: np.ndarray) -> dict[str, float]:
    providers = ["CPUExecutionProvider"]
    (reference,) = onnx_session(fp32_path, providers=providers).run(None, {INPUT_NAME: images})
    (quantized,) = onnx_session(int8_path, providers=providers).run(None, {INPUT_NAME: images})
    cosine = F.cosine_similarity(torch.from_numpy(reference), torch.from_numpy(quantized), dim=1)
    return {"mean": round(float(cosine.mean()), 6), "min": round(float(cosine.min()), 6), "images": len(images)}


def _preprocessed(encoder: Encoder, images: Sequence[ImageLike] | str | os.PathLike) -> np.ndarray:
    if isinstance(images, (str, os.PathLike)):
        from sslzoo.serve.image_files import find_images

        files, _ = find_images([images])
        items: list[Any] = [str(image.path) for image in files]
    else:
        items = list(images)
    batches = []
    for item in items:
        try:
            batches.append(encoder.preprocess([item]))
        except ConfigError:  # an unreadable file: calibration does without it
            continue
    return torch.cat(batches).numpy() if batches else np.zeros((0, 3, encoder.input_size, encoder.input_size))


def _training_pixels(
    encoder: Encoder, dataset: str | None, data_dir: str | os.PathLike | None, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, Any]]:
    """`count` random uint8 training images of the model's dataset, else the embedded CIFAR-10 gallery."""
    from sslzoo.train.datasets import DATASETS, ImageTensors, load_split

    if dataset in DATASETS and dataset != "fake":
        try:
            data = load_split(dataset, "train", data_dir=data_dir, input_size=encoder.input_size)
        except ConfigError:
            data = None  # not on this machine: the fallback below, or the error that says what to pass
        if data is not None:
            pick = torch.randperm(len(data), generator=generator)[:count].sort().values
            if isinstance(data, ImageTensors):
                pixels = data.images[pick]
            else:
                pixels = torch.stack([data[int(index)][0] for index in pick])
            return pixels, {"source": f"{dataset} training split", "dataset": dataset}
    if dataset == "cifar10":
        from sslzoo.serve.gallery import load_default_gallery

        gallery = load_default_gallery()
        pixels = torch.from_numpy(np.asarray(gallery.images)).permute(0, 3, 1, 2)
        pick = torch.randperm(len(pixels), generator=generator)[:count].sort().values
        return pixels[pick].contiguous(), {
            "source": f"embedded gallery {gallery.name} (CIFAR-10 test images, not the training split)",
            "dataset": "cifar10",
            "gallery": gallery.name,
        }
    where = f"the {dataset} training split was not found" if dataset else "the model records no dataset"
    raise ConfigError(
        f"int8 quantization calibrates on images of the model's training distribution, and {where}. "
        "Pass calibration images (sslzoo-export --calibration FOLDER), or --data-dir with the dataset."
    )
