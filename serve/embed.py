"""Embed many image files into one output: what `sslzoo-embed` runs, callable from Python.

Outputs:

- `FILE.safetensors` (tensor `embeddings`, (N, D) float32, L2-normalised) or `FILE.npy`, plus the
  sidecar `FILE.json`: the model (id, fingerprint, preprocessing), each row's path, id, class,
  size and mtime, and the files that could not be read, with why;
- a folder: a FAISS index in `GalleryIndex`'s format (`index.faiss`, `metadata.json`) plus the same
  sidecar as `embedding.json`, which `sslzoo-serve --gallery FOLDER` searches without embedding
  anything again.

Every image goes through the encoder's own `Encoder.preprocess`, the one `Encoder.embed` uses,
so a row equals `encoder.embed([path])` (within float rounding; 1e-4 for ONNX Runtime). Files
are decoded by a few threads while the model runs. A file that cannot be read is skipped and
listed. Running again over the same output embeds only what is new or changed (by size and
mtime) and drops rows of files no longer there, and refuses an output made by another model.
Progress is saved every `save_every` seconds and on Ctrl+C, so an interrupted run continues
where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sslzoo
from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.progress import progress_bar

from .defaults import EMBED_FORMATS, EMBED_SAVE_EVERY
from .extractor import FeatureExtractor
from .image_files import ImageFile, find_images

OUTPUT_FORMATS = EMBED_FORMATS
EMBEDDINGS_KEY = "embeddings"
#: The sidecar of a FAISS output folder (a file output's sidecar is FILE.json).
FOLDER_SIDECAR = "embedding.json"
SIDECAR_KIND = "sslzoo-embeddings"
SIDECAR_FORMAT = 1
#: Seconds between two saves of the work done so far.
SAVE_EVERY = EMBED_SAVE_EVERY


class EmbeddingMismatchError(ConfigError):
    """An existing output made by another model than the one asked to extend it."""


@dataclass(frozen=True)
class Skipped:
    """A file that was not embedded, and why."""

    path: str
    reason: str


@dataclass
class EmbedReport:
    """What `embed_images` wrote."""

    out: Path
    sidecar: Path
    format: str
    rows: int
    dim: int
    embedded: int  # rows computed by this call
    reused: int  # rows kept from the output as it was
    dropped: int  # rows of files no longer among the inputs (or changed, then embedded again)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def output_format(out: str | os.PathLike, format: str | None = None) -> str:
    """The format `out` asks for: its suffix (.safetensors, .npy), else a folder holding a FAISS index."""
    if format is not None:
        if format not in OUTPUT_FORMATS:
            raise ConfigError(f"Unknown output format {format!r}; choose one of {list(OUTPUT_FORMATS)}.")
        return format
    suffix = Path(out).suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".npy":
        return "npy"
    if suffix == ".parquet":
        raise ConfigError("Parquet is not supported; write .safetensors or .npy (with a JSON sidecar).")
    if suffix and not Path(out).is_dir():
        raise ConfigError(
            f"{out}: unknown output suffix {suffix!r}. Write FILE.safetensors, FILE.npy, or a folder (no "
            "suffix) for a FAISS index that sslzoo-serve --gallery opens."
        )
    return "faiss"


def sidecar_path(out: str | os.PathLike, format: str) -> Path:
    out = Path(out)
    return out / FOLDER_SIDECAR if format == "faiss" else out.with_name(out.name + ".json")


def embed_images(
    model: FeatureExtractor | Encoder | str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    format: str | None = None,
    backend: str = "torch",
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    index_kind: str = "flat",
    progress: bool = True,
    save_every: float = SAVE_EVERY,
    cache_dir: str | os.PathLike | None = None,
) -> EmbedReport:
    """Embed the images `inputs` name (see `find_images`) into `out`; returns what was written.

    `model` is a `FeatureExtractor`, an `Encoder` or anything `sslzoo.load` takes; `backend`,
    `device`, `batch_size`, `threads` and `cache_dir` build the extractor when it is not one.
    `workers` threads decode files (default: up to 4). An existing `out` is extended (see the
    module docstring) unless `overwrite`. Raises `ConfigError` when no input image is readable.
    """
    started = time.perf_counter()
    format = output_format(out, format)
    out = Path(out).expanduser()
    extractor = (
        model
        if isinstance(model, FeatureExtractor)
        else FeatureExtractor(
            model, backend=backend, device=device, batch_size=batch_size, threads=threads, cache_dir=cache_dir
        )
    )
    files, missing = find_images(inputs)
    if not files and not missing:
        raise ConfigError(f"No image files found in {', '.join(map(os.fspath, inputs))}.")
    writer = _Writer(out, format, extractor, inputs, index_kind)
    previous, notes = ({}, []) if overwrite else writer.read_previous()
    stats = {image.path: _stat(image.path) for image in files}
    skipped = [Skipped(item.path, item.reason) for item in missing]
    vectors: dict[Path, np.ndarray] = {}
    todo: list[ImageFile] = []
    for image in files:
        known = previous.get(image.path)
        if stats[image.path] is None:
            skipped.append(Skipped(str(image.path), "no such file (removed while listing)"))
        elif known is not None and known[0] == stats[image.path]:
            vectors[image.path] = known[1]
        else:
            todo.append(image)
    reused = len(vectors)
    dropped = len(previous) - reused

    def save(complete: bool) -> None:
        rows = [image for image in files if image.path in vectors]
        writer.write(rows, [vectors[image.path] for image in rows], stats, skipped, complete)

    last_save = time.monotonic()
    try:
        with progress_bar(
            total=len(todo), desc=f"embedding into {out.name}", unit="img", disable=not progress or not todo
        ) as bar:
            for chunk, batch, failures in _decoded_batches(
                extractor.encoder, todo, extractor.batch_size, workers
            ):
                skipped.extend(failures)
                if batch is not None:
                    for image, vector in zip(chunk, extractor.embed_tensor(batch)):
                        vectors[image.path] = vector
                bar.update(len(chunk) + len(failures))
                if skipped:
                    bar.set_postfix(skipped=len(skipped), refresh=False)
                if time.monotonic() - last_save >= save_every:
                    save(complete=False)
                    last_save = time.monotonic()
    except BaseException:  # Ctrl+C, SIGTERM, a failure: keep what is done, the next call continues
        if vectors:
            save(complete=False)
        raise
    if not vectors:
        raise ConfigError(
            "None of the input files is a readable image:\n"
            + "\n".join(f"  {item.path}: {item.reason}" for item in skipped)
        )
    save(complete=True)
    return EmbedReport(
        out=out,
        sidecar=writer.sidecar,
        format=format,
        rows=len(vectors),
        dim=extractor.num_features,
        embedded=len(vectors) - reused,
        reused=reused,
        dropped=dropped,
        skipped=skipped,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def read_embeddings(out: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The (N, D) embeddings and the sidecar of an output `embed_images` wrote (file or FAISS folder)."""
    out = Path(out)
    format = output_format(out)
    sidecar = _read_sidecar(sidecar_path(out, format))
    return _read_matrix(out, format), sidecar


# ------------------------------------------------------------------------------------------ decoding
def _decoded_batches(
    encoder: Encoder, files: list[ImageFile], batch_size: int, workers: int | None
) -> Iterator[tuple[list[ImageFile], torch.Tensor | None, list[Skipped]]]:
    """Batches of preprocessed images, decoded by a thread pool two batches ahead of the model.

    Yields (the files of the batch that were read, their (B, 3, S, S) batch or None, the files
    of the batch that were not, with why).
    """
    workers = workers or min(4, os.cpu_count() or 1)
    starts = iter(range(0, len(files), batch_size))
    queue: deque[tuple[list[ImageFile], list[Future]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sslzoo-decode") as pool:

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = files[start : start + batch_size]
                queue.append((chunk, [pool.submit(_preprocess, encoder, image.path) for image in chunk]))

        submit()
        submit()
        try:
            while queue:
                chunk, futures = queue.popleft()
                submit()
                read, tensors, failures = [], [], []
                for image, future in zip(chunk, futures):
                    result = future.result()
                    if isinstance(result, str):
                        failures.append(Skipped(str(image.path), result))
                    else:
                        read.append(image)
                        tensors.append(result)
                yield read, (torch.stack(tensors) if tensors else None), failures
        finally:
            for _, futures in queue:
                for future in futures:
                    future.cancel()


def _preprocess(encoder: Encoder, path: Path) -> torch.Tensor | str:
    """The encoder's own preprocessing of one file (as `Encoder.embed` does it), or why it failed."""
    try:
        return encoder.preprocess([str(path)])[0]
    except MemoryError:
        raise
    except Exception as error:  # any file may be broken in its own way; one must not stop the rest
        reason = str(error) or type(error).__name__
        return reason.removeprefix(f"{path}: ")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


# ------------------------------------------------------------------------------------------ writing
class _Writer:
    """Reads back and (re)writes one output and its sidecar; each file replaced atomically."""

    def __init__(
        self,
        out: Path,
        format: str,
        extractor: FeatureExtractor,
        inputs: Sequence[str | os.PathLike],
        index_kind: str,
    ):
        self.out, self.format, self.extractor, self.index_kind = out, format, extractor, index_kind
        self.inputs = [os.fspath(spec) for spec in inputs]
        self.sidecar = sidecar_path(out, format)

    def read_previous(self) -> tuple[dict[Path, tuple[tuple[int, int], np.ndarray]], list[str]]:
        """{path: ((size, mtime_ns), vector)} of the rows the output holds; refuses another model's."""
        if not self.out.exists():
            return {}, []
        if self.format == "faiss" and self.out.is_dir() and not any(self.out.iterdir()):
            return {}, []
        if not self.sidecar.is_file():
            raise ConfigError(
                f"{self.out} exists but {self.sidecar.name} does not: it was not written by sslzoo-embed. "
                "Choose another --out, or pass --overwrite to replace it."
            )
        sidecar = _read_sidecar(self.sidecar)
        model = sidecar.get("model") or {}
        if model.get("fingerprint") != self.extractor.fingerprint:
            raise EmbeddingMismatchError(
                f"{self.out} holds embeddings of model {model.get('id')!r} (fingerprint "
                f"{str(model.get('fingerprint'))[:12]}), not of {self.extractor.model_id!r} "
                f"({self.extractor.fingerprint[:12]}). Embeddings of different models are not comparable: "
                "choose another --out, or pass --overwrite to embed everything again with this model."
            )
        files = sidecar["files"]
        try:
            matrix = _read_matrix(self.out, self.format)
        except (OSError, ValueError, RuntimeError, ConfigError) as error:
            note = f"{self.out} could not be read ({error}); every file is embedded again."
            return {}, [note]
        if matrix.shape != (len(files["paths"]), self.extractor.num_features):
            note = (
                f"{self.out} holds {matrix.shape[0]} rows but {self.sidecar.name} lists {len(files['paths'])} "
                "files (a run was killed while saving?); every file is embedded again."
            )
            return {}, [note]
        rows = zip(files["paths"], files["sizes"], files["mtimes_ns"], matrix)
        return {Path(path): ((size, mtime), vector) for path, size, mtime, vector in rows}, []

    def write(
        self,
        rows: list[ImageFile],
        vectors: list[np.ndarray],
        stats: dict[Path, tuple[int, int] | None],
        skipped: list[Skipped],
        complete: bool,
    ) -> None:
        dim = self.extractor.num_features
        matrix = (
            np.stack(vectors).astype(np.float32, copy=False) if vectors else np.zeros((0, dim), np.float32)
        )
        class_names = sorted({image.label for image in rows})
        positions = {name: index for index, name in enumerate(class_names)}
        labels = [positions[image.label] for image in rows]
        files = {
            "paths": [str(image.path) for image in rows],
            "ids": [image.id for image in rows],
            "labels": labels,
            "sizes": [stats[image.path][0] for image in rows],  # type: ignore[index]
            "mtimes_ns": [stats[image.path][1] for image in rows],  # type: ignore[index]
        }
        model = self.extractor.describe()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "faiss":
            self._write_index(matrix, files, class_names, model)
        else:
            self._write_matrix(matrix, model)
        sidecar = {
            "kind": SIDECAR_KIND,
            "format": SIDECAR_FORMAT,
            "embeddings": EMBEDDINGS_KEY if self.format != "faiss" else "index.faiss",
            "output_format": self.format,
            "complete": complete,
            "rows": int(matrix.shape[0]),
            "dim": dim,
            "normalised": "L2",
            "model": model,
            "inputs": self.inputs,
            "class_names": class_names,
            "files": files,
            "skipped": [{"path": item.path, "reason": item.reason} for item in skipped],
            "sslzoo_version": sslzoo.__version__,
        }
        _atomic_write(self.sidecar, lambda handle: handle.write(json.dumps(sidecar).encode() + b"\n"))

    def _write_matrix(self, matrix: np.ndarray, model: dict[str, Any]) -> None:
        if self.format == "npy":
            _atomic_write(self.out, lambda handle: np.save(handle, matrix, allow_pickle=False))
            return
        from safetensors.numpy import save

        metadata = {
            "kind": SIDECAR_KIND,
            "model_id": str(model["id"]),
            "model_fingerprint": model["fingerprint"],
        }
        data = save({EMBEDDINGS_KEY: np.ascontiguousarray(matrix)}, metadata=metadata)
        _atomic_write(self.out, lambda handle: handle.write(data))

    def _write_index(
        self, matrix: np.ndarray, files: dict[str, list], class_names: list[str], model: dict[str, Any]
    ) -> None:
        from .gallery import Gallery
        from .index import GalleryIndex

        digest = hashlib.sha256()
        for path, size, mtime in zip(files["paths"], files["sizes"], files["mtimes_ns"]):
            digest.update(f"{path}\0{size}\0{mtime}\n".encode())
        gallery = Gallery(
            name=self.out.name,
            class_names=class_names,
            labels=np.asarray(files["labels"], dtype=np.int64),
            ids=files["ids"],
            fingerprint=digest.hexdigest(),
            paths=files["paths"],
            provenance=f"{len(files['paths'])} images embedded by sslzoo-embed from {', '.join(self.inputs)}.",
        )
        index = GalleryIndex.from_features(matrix, gallery, model=model, kind=self.index_kind)
        index.save(self.out)


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads(path.read_text())
        if sidecar.get("kind") != SIDECAR_KIND:
            raise ValueError(f"kind is {sidecar.get('kind')!r}, not {SIDECAR_KIND!r}")
        sidecar["files"]["paths"]  # noqa: B018  # the one key every use needs
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"{path} is not an sslzoo-embed sidecar ({error}); pass --overwrite to embed everything again."
        ) from error
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise ConfigError(
            f"{path} is in sidecar format {sidecar.get('format')}; pass --overwrite to rewrite it."
        )
    return sidecar


def _read_matrix(out: Path, format: str) -> np.ndarray:
    if format == "npy":
        return np.load(out, allow_pickle=False)
    if format == "safetensors":
        from safetensors.numpy import load_file

        return load_file(str(out))[EMBEDDINGS_KEY]
    from .index import GalleryIndex

    return GalleryIndex.load(out).stored_features()


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write `path` through a temporary file beside it, then rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
