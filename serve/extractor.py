"""`FeatureExtractor`: batched, L2-normalised embeddings from an encoder, via PyTorch or ONNX Runtime.

Both backends share the encoder's own preprocessing, so they differ only in the network run:
their features agree within 1e-4. ONNX Runtime is the faster choice on CPU (see
`benchmarks/serve_latency.py`); the ONNX file comes from `sslzoo.export.onnx` and is cached by
the model's fingerprint, so it is exported once per model. The first export takes up to a minute
on CPU; a server has it made in a background process (`onnx_in_background=True`) and answers
with PyTorch meanwhile, which is safe because the two backends' features agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.loading import load, sslzoo_home
from sslzoo.preprocessing import ImageLike, as_batch
from sslzoo.progress import progress_bar
from sslzoo.weight_files import sha256_of

from .defaults import BACKENDS

_LOG = logging.getLogger("sslzoo.serve")

#: Config keys that change what an encoder computes (provenance does not).
_FEATURE_CONFIG_KEYS = ("backbone", "stem", "input_size", "mean", "std", "interpolation")


def default_cache_dir() -> Path:
    """Where indexes and exported ONNX files are cached unless told otherwise."""
    return sslzoo_home() / "serve-cache"


def model_fingerprint(encoder: Encoder) -> str:
    """sha256 over the preprocessing config and every weight: equal iff the features are equal.

    Indexes record it, so an index is never searched with features from another model.
    """
    digest = hashlib.sha256()
    config = {key: encoder.config[key] for key in _FEATURE_CONFIG_KEYS}
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        if name.endswith("num_batches_tracked"):  # a training counter: no effect on features
            continue
        tensor = tensor.detach().cpu().contiguous().flatten()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureExtractor:
    """Embeds images with an sslzoo encoder: `extractor.embed(images) -> (N, D)` float32, unit norm.

    `model` is an `Encoder`, or anything `sslzoo.load` takes (registry name, folder,
    `hf-hub:org/repo`). `backend="onnx"` exports the encoder once (cached under `cache_dir/onnx/`)
    and runs it with ONNX Runtime on CPU, or CUDA when `device` is a GPU; `threads` caps ONNX
    Runtime's intra-op threads (PyTorch follows `torch.set_num_threads`). With
    `onnx_in_background=True` a missing fp32 export is made in a background process and PyTorch
    embeds until it is ready (`running_backend` says which one runs now, `wait_for_backend`
    waits); if the export fails, PyTorch stays, and the log says why.

    `backend="onnx-int8"` runs a statically quantized graph on the CPU, several times faster than
    fp32 there (`sslzoo.export.quantize`, `benchmarks/serve_latency.py`): the `model.int8.onnx` an
    `sslzoo-export --quantize int8` folder holds, else one quantized on first use (cached),
    calibrated on `calibration` images or, by default, on the model's training distribution
    (`calibration_images`); `int8_graph` names such a file directly (it must come from this
    encoder). Its features differ slightly from fp32, so its `fingerprint` does
    too: an index is searched only with the backend that built it.
    """

    def __init__(
        self,
        model: Encoder | str | os.PathLike,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        cache_dir: str | os.PathLike | None = None,
        model_id: str | None = None,
        threads: int | None = None,
        calibration: Sequence[ImageLike] | str | os.PathLike | None = None,
        int8_graph: str | os.PathLike | None = None,
        onnx_in_background: bool = False,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"Unknown backend {backend!r}; choose one of {list(BACKENDS)}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {batch_size}).")
        self.device = torch.device(device)
        if backend == "onnx-int8" and self.device.type != "cpu":
            raise ConfigError("The onnx-int8 backend runs on the CPU; use --backend onnx on a GPU.")
        if isinstance(model, Encoder):
            self.encoder = model.to(self.device).eval()
            self.model_id = model_id or str(model.provenance.get("name") or "encoder")
        else:
            self.encoder = load(model, device=self.device)
            self.model_id = model_id or _model_id_of(model)
        self.backend = backend
        self.batch_size = int(batch_size)
        self.threads = threads
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.fingerprint = model_fingerprint(self.encoder)
        self.onnx_path: Path | None = None
        self.quantization: dict[str, Any] | None = None
        self._session: Any = None
        self._backend_ready = threading.Event()
        if backend == "torch":
            self._backend_ready.set()
        elif backend == "onnx":
            if onnx_in_background and not self._onnx_file().is_file():
                self.onnx_path = self._onnx_file()
                threading.Thread(
                    target=self._prepare_onnx_quietly, name="sslzoo-onnx-export", daemon=True
                ).start()
            else:
                self._prepare_onnx()
        elif backend == "onnx-int8":
            self.onnx_path = self._int8_graph(model, calibration, int8_graph)
            from sslzoo.export.onnx import onnx_session

            try:
                self._session = onnx_session(self.onnx_path, providers=["CPUExecutionProvider"], threads=threads)
            except Exception as error:
                raise ConfigError(f"ONNX Runtime cannot open {self.onnx_path}: {error}") from error
            self._input_name = self._session.get_inputs()[0].name
            digest = hashlib.sha256(f"{self.fingerprint}:onnx-int8:".encode())
            digest.update(sha256_of(self.onnx_path).encode())
            self.fingerprint = digest.hexdigest()
            self._backend_ready.set()

    @property
    def running_backend(self) -> str:
        """The backend that embeds now: `backend`, or "torch" while the ONNX export is being made."""
        return self.backend if self._session is not None else "torch"

    def wait_for_backend(self, timeout: float | None = None) -> bool:
        """Wait until the chosen backend runs (or its preparation has given up); True if it runs."""
        self._backend_ready.wait(timeout)
        return self.running_backend == self.backend

    def _prepare_onnx(self, encoder: Encoder | None = None) -> None:
        self.onnx_path = self._cached_onnx(encoder)
        session = self._open_session(self.onnx_path, encoder)
        self._input_name = session.get_inputs()[0].name
        self._session = session  # set last: embed_tensor switches over only to a complete session
        self._backend_ready.set()

    def _prepare_onnx_quietly(self) -> None:
        try:
            _export_in_a_process(self.encoder, self._onnx_file(), self.fingerprint)
            self._prepare_onnx()
            _LOG.info("%s: ONNX Runtime export ready, queries now run in ONNX Runtime", self.model_id)
        except Exception as error:  # noqa: BLE001 - any failure leaves a working PyTorch backend
            _LOG.warning(
                "%s: the ONNX export failed (%s); queries keep running in PyTorch", self.model_id, error
            )
        finally:
            self._backend_ready.set()

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    @property
    def provenance(self) -> dict[str, Any]:
        return self.encoder.provenance

    def embed(
        self,
        images: ImageLike | Sequence[ImageLike],
        progress: bool = False,
        description: str = "embedding",
    ) -> np.ndarray:
        """(N, D) float32 L2-normalised features; images are decoded and preprocessed a batch at a time."""
        items = _as_list(images)
        chunks = []
        starts = range(0, len(items), self.batch_size)
        for start in progress_bar(starts, desc=description, unit="batch", disable=not progress or len(starts) < 2):
            batch = self.encoder.preprocess(items[start : start + self.batch_size])
            chunks.append(self.embed_tensor(batch))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_features), np.float32)

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Features of an already preprocessed (B, 3, S, S) float batch."""
        session = self._session
        if session is not None:
            features = session.run(None, {self._input_name: batch.numpy().astype(np.float32, copy=False)})[0]
            features = torch.from_numpy(np.asarray(features, dtype=np.float32))
        else:
            with torch.inference_mode():
                features = self.encoder.pooled_features(batch.to(self.device)).float().cpu()
        return F.normalize(features, dim=1).numpy()

    def describe(self) -> dict[str, Any]:
        """What an index records about the model that made its features."""
        return {
            "id": self.model_id,
            "fingerprint": self.fingerprint,
            "feature_dim": self.num_features,
            "config": {key: self.encoder.config[key] for key in _FEATURE_CONFIG_KEYS},
            "backend": self.backend,
        }

    def _onnx_file(self) -> Path:
        return self.cache_dir / "onnx" / f"{self.fingerprint[:24]}.onnx"

    def _cached_onnx(self, encoder: Encoder | None = None) -> Path:
        from sslzoo.export.onnx import export_onnx  # the project's one ONNX exporter (parity-checked)

        path = self._onnx_file()
        if not path.is_file():  # export_onnx writes atomically: a crash never leaves half a file here
            export_onnx(encoder or self.encoder, path)
        return path

    def _int8_graph(
        self,
        model: Encoder | str | os.PathLike,
        calibration: Sequence[ImageLike] | str | os.PathLike | None,
        given: str | os.PathLike | None,
    ) -> Path:
        """`given`, else the int8 graph an export folder ships for this very encoder, else one
        quantized here once (cached)."""
        from sslzoo.export.quantize import INT8_NAME, calibration_images, int8_record, quantize_int8

        base = model_fingerprint(self.encoder)
        if given is not None:
            given = Path(given).expanduser()
            try:
                record, fingerprint = int8_record(given)
            except Exception as error:
                raise ConfigError(f"{given}: not an int8 graph sslzoo-export wrote ({error}).") from error
            if fingerprint != base:
                raise ConfigError(f"{given} was quantized from another model than {self.model_id}.")
            self.quantization = record
            return given
        if not isinstance(model, Encoder) and calibration is None:
            shipped = Path(os.fspath(model)).expanduser() / INT8_NAME
            if shipped.is_file():
                record, fingerprint = int8_record(shipped)
                if fingerprint == base:
                    self.quantization = record
                    return shipped
        calibration_set, holdout, source = calibration_images(self.encoder, images=calibration)
        digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(calibration_set).tobytes())
        path = self.cache_dir / "onnx" / f"{base[:24]}.int8-{digest.hexdigest()[:12]}.onnx"
        if path.is_file():
            try:
                self.quantization = int8_record(path)[0]
                return path
            except Exception:  # a damaged cache entry: quantize again below
                path.unlink(missing_ok=True)
        self.quantization = quantize_int8(self.encoder, self._cached_onnx(), path, calibration_set, holdout, source)
        return path

    def _open_session(self, path: Path, encoder: Encoder | None = None) -> Any:
        from sslzoo.export.onnx import onnx_session

        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            return onnx_session(path, providers=providers, threads=self.threads)
        except Exception as error:  # a foreign or damaged file in the cache: export afresh, once
            path.unlink(missing_ok=True)
            try:
                return onnx_session(self._cached_onnx(encoder), providers=providers, threads=self.threads)
            except Exception:
                raise ConfigError(f"ONNX Runtime cannot open {path}: {error}") from error


def _export_in_a_process(encoder: Encoder, path: Path, fingerprint: str) -> None:
    """Export `encoder` to `path` in a child process at low priority.

    Not in a thread: tracing holds the GIL for most of the export, so a server exporting in a
    thread of its own answers nothing meanwhile (measured: the first search of a fresh
    `sslzoo-serve` came after 19 s with a thread, 12 s with this process, on a busy 2-core CPU).
    """
    with tempfile.TemporaryDirectory(prefix="sslzoo-onnx-") as scratch:
        encoder.save_pretrained(scratch)
        command = [sys.executable, "-c", "from sslzoo.serve.extractor import export_worker; export_worker()"]
        result = subprocess.run(
            [*command, scratch, str(path), fingerprint], capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout or "no output").strip().splitlines()
        raise ConfigError(f"the export process failed: {lines[-1] if lines else result.returncode}")


def export_worker() -> None:
    """The child of `_export_in_a_process`; argv: the saved encoder's folder, the target, its fingerprint."""
    from sslzoo.export.onnx import export_onnx

    folder, target, fingerprint = sys.argv[1:4]
    if hasattr(os, "nice"):
        os.nice(10)  # the server's queries come first
    torch.set_num_threads(1)
    encoder = load(folder)
    if model_fingerprint(encoder) != fingerprint:
        raise SystemExit("the saved encoder does not match the one being served")
    export_onnx(encoder, target)


def _model_id_of(ref: str | os.PathLike) -> str:
    text = os.fspath(ref)
    if os.sep in text or Path(text).is_dir():
        return Path(text).expanduser().resolve().name
    return text


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    return list(as_batch(images))
