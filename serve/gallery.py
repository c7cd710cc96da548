"""Galleries: the labelled images a query is compared against.

The embedded default (1,000 CIFAR-10 test images, 100 per class) ships inside the package as
safetensors pixels plus a JSON sidecar, so the demo runs on a machine with no network and no
dataset download. Any folder of images works as well: one subfolder per class (the subfolder
names are the labels), or a flat folder of unlabelled images ("search my photos"), whose
neighbours are named by file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

from sslzoo.errors import ConfigError
from sslzoo.preprocessing import open_image, to_uint8_chw

from .defaults import DEFAULT_GALLERY_SPEC

DEFAULT_GALLERY_NAME = "cifar10-test-1000"
#: The label of every item of an unlabelled gallery (a flat folder of photos).
UNLABELLED = -1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: The files of a saved `GalleryIndex` (see `sslzoo.serve.index`).
INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.json"
#: `Gallery.extra` key of the folder holding the saved index a gallery was read from.
SAVED_INDEX_KEY = "index_dir"
_PIXELS_FILE = "cifar10_gallery.safetensors"
_META_FILE = "cifar10_gallery.json"
FEATURES_FILE = "cifar10_gallery_features.safetensors"


@dataclass
class Gallery:
    """Images, labelled or not: pixels held in memory (`images`) or files on disk (`paths`).

    An unlabelled gallery has no `class_names` and every label is `UNLABELLED`. `ids` name the
    items to users (a file's path relative to the gallery root, or the source
    index of an embedded image); `fingerprint` hashes the content, so a cached index is reused
    only for the very same gallery.
    """

    name: str
    class_names: list[str]
    labels: np.ndarray
    ids: list[str]
    fingerprint: str
    images: Sequence[np.ndarray] | None = None
    paths: list[str] | None = None
    provenance: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        count = len(self.ids)
        if (self.images is None) == (self.paths is None):
            raise ConfigError("A gallery holds either in-memory images or file paths (exactly one of them).")
        sizes = {len(self.labels), len(self.images if self.images is not None else self.paths)}
        if sizes != {count}:
            raise ConfigError(
                f"Gallery {self.name!r}: {count} ids but labels/images of lengths {sorted(sizes)}."
            )
        if count == 0:
            raise ConfigError(f"Gallery {self.name!r} is empty; it needs at least one image.")
        if not self.class_names:
            if (self.labels != UNLABELLED).any():
                raise ConfigError(f"Gallery {self.name!r} has labels but no class names.")
        elif self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise ConfigError(
                f"Gallery {self.name!r}: labels must index its {len(self.class_names)} class names."
            )

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, index: int) -> torch.Tensor | str:
        """What the extractor embeds for item `index`: a (3, H, W) uint8 tensor or a file path."""
        if self.images is not None:
            return torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        return self.paths[index]  # type: ignore[index]

    def items(self) -> list[torch.Tensor | str]:
        return [self.item(index) for index in range(len(self))]

    def image(self, index: int, max_side: int = 256) -> Image.Image:
        """Item `index` as an RGB image for display, shrunk to at most `max_side` pixels a side."""
        if self.images is not None:
            image = Image.fromarray(np.asarray(self.images[index]), mode="RGB")
        else:
            image = open_image(self.paths[index])  # type: ignore[index]
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side))
        return image

    @property
    def labelled(self) -> bool:
        """Whether items carry classes (class subfolders, CIFAR) or only file names (a photo folder)."""
        return bool(self.class_names)

    def class_name(self, index: int) -> str | None:
        return self.class_names[int(self.labels[index])] if self.labelled else None

    def display_name(self, index: int) -> str:
        """What a result shows: its class, or for an unlabelled gallery its file name."""
        return self.class_name(index) or Path(self.ids[index]).name

    def subset(self, indices: Sequence[int], name: str | None = None) -> Gallery:
        """A gallery of the chosen items (for quick demos and tests); its fingerprint changes with them."""
        indices = [int(i) for i in indices]
        digest = hashlib.sha256(f"{self.fingerprint}:{indices}".encode()).hexdigest()
        return Gallery(
            name=name or f"{self.name}[{len(indices)}]",
            class_names=list(self.class_names),
            labels=self.labels[indices],
            ids=[self.ids[i] for i in indices],
            fingerprint=digest,
            images=None if self.images is None else [self.images[i] for i in indices],
            paths=None if self.paths is None else [self.paths[i] for i in indices],
            provenance=self.provenance,
        )

    def first_per_class(self, count: int) -> Gallery:
        """The first `count` items of every class, in gallery order."""
        seen: dict[int, int] = {}
        chosen = []
        for index, label in enumerate(self.labels.tolist()):
            if seen.get(label, 0) < count:
                seen[label] = seen.get(label, 0) + 1
                chosen.append(index)
        return self.subset(chosen, name=f"{self.name}[{count}/class]")

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray | Sequence[np.ndarray],
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        ids: Sequence[str] | None = None,
        name: str = "arrays",
        provenance: str = "",
    ) -> Gallery:
        """A gallery from (N, H, W, 3) uint8 pixels (or a list of HWC arrays) and integer labels."""
        arrays = [_as_hwc_uint8(image) for image in images]
        labels = np.asarray(labels, dtype=np.int64)
        digest = hashlib.sha256()
        for array in arrays:
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        digest.update(labels.tobytes())
        digest.update(json.dumps(list(class_names)).encode())
        return cls(
            name=name,
            class_names=list(class_names),
            labels=labels,
            ids=list(ids) if ids is not None else [f"{name}-{i:05d}" for i in range(len(arrays))],
            fingerprint=digest.hexdigest(),
            images=arrays,
            provenance=provenance,
        )

    @classmethod
    def from_dataset(
        cls, dataset: Any, class_names: Sequence[str] | None = None, name: str = "dataset"
    ) -> Gallery:
        """A gallery from a torchvision-style dataset of `(image, label)` pairs (PIL, tensor or array images).

        Class names come from `class_names`, else the dataset's `classes` attribute, else the label numbers.
        """
        images, labels = [], []
        for image, label in dataset:
            images.append(to_uint8_chw(image).permute(1, 2, 0).numpy())
            labels.append(int(label))
        if class_names is None:
            class_names = getattr(dataset, "classes", None) or [str(c) for c in range(max(labels) + 1)]
        return cls.from_arrays(images, labels, class_names, name=name)

    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> Gallery:
        """A gallery from a folder: `root/<class name>/**/<image>` (each subfolder one class), or,
        when `root` itself holds image files, every image under it, unlabelled.
        """
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(
                f"Gallery folder {root} does not exist; pass a folder of images, or one with a "
                "subfolder of images per class."
            )
        flat = any(_is_image(path) for path in root.iterdir())
        if flat:
            groups = [(UNLABELLED, root)]
            class_names: list[str] = []
        else:
            class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            groups = list(enumerate(class_dirs))
            class_names = [d.name for d in class_dirs]
        paths, labels, ids = [], [], []
        digest = hashlib.sha256()
        for label, folder in groups:
            for path in sorted(folder.rglob("*")):
                relative_parts = path.relative_to(root).parts
                if not _is_image(path) or any(part.startswith(".") for part in relative_parts):
                    continue
                relative = path.relative_to(root).as_posix()
                stat = path.stat()
                digest.update(f"{relative}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                paths.append(str(path))
                labels.append(label)
                ids.append(relative)
        if not paths:
            raise ConfigError(
                f"No images found in {root}. A gallery folder holds image files "
                f"({', '.join(IMAGE_SUFFIXES)}), directly (unlabelled) or in one subfolder per class."
            )
        what = "unlabelled" if flat else f"{len(class_names)} classes"
        return cls(
            name=root.name,
            class_names=class_names,
            labels=np.asarray(labels),
            ids=ids,
            fingerprint=digest.hexdigest(),
            paths=paths,
            provenance=f"Image folder '{root.name}' ({len(paths)} images, {what}).",
            extra={"root": str(root)},
        )


def is_index_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a saved `GalleryIndex` (`index.faiss` and `metadata.json`)."""
    folder = Path(folder)
    return (folder / INDEX_FILE).is_file() and (folder / METADATA_FILE).is_file()


def gallery_of_index(folder: str | os.PathLike) -> Gallery:
    """The gallery a saved index was built from, read from its `metadata.json`; searched in that index.

    Its images are the files the index names (an index of in-memory pixels cannot be opened
    this way: it has no files to show).
    """
    folder = Path(folder).expanduser().resolve()
    path = folder / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
        described = metadata["gallery"]
        paths = metadata["paths"]
        gallery = Gallery(
            name=str(described["name"]),
            class_names=list(metadata["class_names"]),
            labels=np.asarray(metadata["labels"], dtype=np.int64),
            ids=list(metadata["ids"]),
            fingerprint=str(described["fingerprint"]),
            paths=paths,
            provenance=str(described.get("provenance") or ""),
            extra={SAVED_INDEX_KEY: str(folder)},
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path} is not an sslzoo index description ({error}).") from error
    if any(item is None for item in paths):
        raise ConfigError(
            f"The index in {folder} was built from in-memory images, not files, so it has nothing to show; "
            "index a folder of images instead (sslzoo-embed MODEL FOLDER --out INDEX_FOLDER)."
        )
    return gallery


def assets_dir() -> Path:
    """The package folder that holds the embedded gallery."""
    return Path(str(resources.files("sslzoo.serve").joinpath("assets")))


def write_gallery_assets(
    folder: Path,
    name: str,
    images: np.ndarray,
    labels: list[int],
    class_names: list[str],
    source_indices: list[int],
    provenance: str,
) -> list[Path]:
    """Store a gallery as safetensors pixels + JSON metadata (never pickle): the embedded default's format."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"Expected (N, H, W, 3) uint8 pixels, got {images.shape}.")
    folder.mkdir(parents=True, exist_ok=True)
    pixels_path, meta_path = folder / _PIXELS_FILE, folder / _META_FILE
    save_file({"images": images}, str(pixels_path), metadata={"name": name, "format": "NHWC uint8 RGB"})
    meta = {
        "name": name,
        "num_images": int(images.shape[0]),
        "image_shape": list(images.shape[1:]),
        "class_names": class_names,
        "labels": [int(label) for label in labels],
        "source_indices": [int(index) for index in source_indices],
        "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
        "provenance": provenance,
    }
    # One key a line, each value on its line: readable in a diff, small on disk.
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    meta_path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    for path in (pixels_path, meta_path):
        path.chmod(0o644)  # package data: readable by every user of an installation
    return [pixels_path, meta_path]


def load_default_gallery() -> Gallery:
    """The embedded CIFAR-10 gallery (1,000 test images, 100 per class)."""
    folder = assets_dir()
    pixels_path, meta_path = folder / _PIXELS_FILE, folder / _META_FILE
    if not pixels_path.is_file() or not meta_path.is_file():
        raise ConfigError(
            f"The embedded gallery is missing from {folder}; reinstall sslzoo, or rebuild it with "
            "`python -m sslzoo.serve.build_gallery CIFAR_ROOT`, or pass --gallery FOLDER."
        )
    meta = json.loads(meta_path.read_text())
    images = load_file(str(pixels_path))["images"]
    if hashlib.sha256(images.tobytes()).hexdigest() != meta["images_sha256"]:
        raise ConfigError(f"{pixels_path} does not match the checksum in {meta_path.name}; reinstall sslzoo.")
    return Gallery(
        name=meta["name"],
        class_names=meta["class_names"],
        labels=np.asarray(meta["labels"]),
        ids=[f"cifar10-test-{index:05d}" for index in meta["source_indices"]],
        fingerprint=meta["images_sha256"],
        images=images,
        provenance=meta["provenance"],
        # Its features under the default encoder ship too (`sslzoo.serve.precomputed`).
        extra={"source_indices": meta["source_indices"], "features_file": str(folder / FEATURES_FILE)},
    )


def resolve_gallery(spec: str | os.PathLike) -> Gallery:
    """`"default"` for the embedded CIFAR-10 gallery, a folder holding a saved index (e.g. one
    `sslzoo-embed` wrote: searched as it is), else a folder of images (`Gallery.from_folder`)."""
    if os.fspath(spec) == DEFAULT_GALLERY_SPEC:
        return load_default_gallery()
    if is_index_folder(spec):
        return gallery_of_index(spec)
    return Gallery.from_folder(spec)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")


def _as_hwc_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        raise ConfigError(f"Gallery pixels must be uint8 (got {array.dtype}).")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ConfigError(f"Gallery images must be (H, W, 3) arrays, got {array.shape}.")
    return np.ascontiguousarray(array)
