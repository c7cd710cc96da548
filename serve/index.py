"""`GalleryIndex`: k-nearest-neighbour search over a gallery's features, on FAISS.

Features are L2-normalised, so inner product is cosine similarity. The default index is exact
(`IndexFlatIP`): at gallery sizes up to tens of thousands of images exact search costs about a
millisecond per query on CPU, and approximate indexes only pay off beyond that (`kind="ivf"` or
`"hnsw"`). An index on disk records the model that made its features and refuses any other.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from sslzoo.errors import ConfigError, SslzooError
from sslzoo.preprocessing import ImageLike

from .defaults import INDEX_KINDS
from .extractor import FeatureExtractor
from .gallery import INDEX_FILE, METADATA_FILE, SAVED_INDEX_KEY, Gallery
from .precomputed import load_features

#: 2: gallery files are embedded upright (EXIF) and decoded at the size the encoder needs; indexes
#: saved before hold features of the old decoding and are rebuilt on first use.
FORMAT_VERSION = 2


class IndexMismatchError(SslzooError, ValueError):
    """A saved index whose features came from another model than the one asked to search it."""


@dataclass(frozen=True)
class SearchResult:
    """The k neighbours of one query, best first (`class_names` are None in an unlabelled gallery)."""

    ids: list[str]
    scores: list[float]
    labels: list[int]
    class_names: list[str | None]
    paths: list[str | None]
    positions: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def top(self, k: int) -> SearchResult:
        """The best `k` of these neighbours (a batch is searched once, at its largest k)."""
        return SearchResult(
            self.ids[:k],
            self.scores[:k],
            self.labels[:k],
            self.class_names[:k],
            self.paths[:k],
            self.positions[:k],
        )

    def as_dicts(self) -> list[dict[str, Any]]:
        return [
            {"rank": rank, "id": id_, "label": name, "label_index": label, "score": round(score, 6)}
            for rank, (id_, name, label, score) in enumerate(
                zip(self.ids, self.class_names, self.labels, self.scores), start=1
            )
        ]


class GalleryIndex:
    """A FAISS index over a gallery's features plus what is needed to explain each hit.

    Build with `GalleryIndex.build(extractor, gallery)` (or `from_folder` / `from_arrays`), query
    with `search(images, k)`, persist with `save(dir)` and `GalleryIndex.load(dir, extractor)`.
    """

    def __init__(
        self,
        index: faiss.Index,
        metadata: dict[str, Any],
        extractor: FeatureExtractor | None = None,
        gallery: Gallery | None = None,
    ):
        self.index = index
        self.metadata = metadata
        self.extractor = extractor
        self.gallery = gallery
        self._labels = np.asarray(metadata["labels"], dtype=np.int64)

    # ---------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        extractor: FeatureExtractor,
        gallery: Gallery,
        kind: str = "flat",
        progress: bool = True,
        **options: int,
    ) -> GalleryIndex:
        """Embed every gallery image and index the features.

        Options: `nlist` and `nprobe` for `kind="ivf"`; `m` and `ef_search` for `kind="hnsw"`.
        """
        features = extractor.embed(gallery.items(), progress=progress, description=f"indexing {gallery.name}")
        return cls.from_features(
            features, gallery, model=extractor.describe(), kind=kind, extractor=extractor, **options
        )

    @classmethod
    def from_folder(
        cls, extractor: FeatureExtractor, folder: str | os.PathLike, kind: str = "flat", **options: int
    ) -> GalleryIndex:
        """Index `folder/<class>/<image>`; labels are the subfolder names."""
        return cls.build(extractor, Gallery.from_folder(folder), kind=kind, **options)

    @classmethod
    def from_arrays(
        cls,
        extractor: FeatureExtractor,
        images: np.ndarray | Sequence[np.ndarray],
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        kind: str = "flat",
        **options: int,
    ) -> GalleryIndex:
        """Index (N, H, W, 3) uint8 pixels with integer labels (e.g. a dataset's `data`/`targets`)."""
        return cls.build(extractor, Gallery.from_arrays(images, labels, class_names), kind=kind, **options)

    @classmethod
    def from_features(
        cls,
        features: np.ndarray,
        gallery: Gallery,
        model: dict[str, Any],
        kind: str = "flat",
        extractor: FeatureExtractor | None = None,
        **options: int,
    ) -> GalleryIndex:
        """Index precomputed features (one row per gallery item); `model` is `extractor.describe()`."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != len(gallery):
            raise ConfigError(
                f"Expected ({len(gallery)}, D) features for gallery {gallery.name!r}, got {features.shape}."
            )
        faiss.normalize_L2(features)  # cosine = inner product on unit vectors; harmless if already unit
        index, settings = _make_index(kind, features, **options)
        index.add(features)
        metadata = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "settings": settings,
            "metric": "inner_product_on_l2_normalised_features",
            "model": model,
            "feature_dim": int(features.shape[1]),
            "gallery": {
                "name": gallery.name,
                "fingerprint": gallery.fingerprint,
                "provenance": gallery.provenance,
            },
            "class_names": list(gallery.class_names),
            "ids": list(gallery.ids),
            "paths": list(gallery.paths) if gallery.paths is not None else [None] * len(gallery),
            "labels": gallery.labels.tolist(),
        }
        return cls(index, metadata, extractor=extractor, gallery=gallery)

    # ---------------------------------------------------------------- searching
    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def class_names(self) -> list[str]:
        return self.metadata["class_names"]

    def stored_features(self) -> np.ndarray:
        """The (N, D) unit vectors the index holds, read back from FAISS (no image is embedded again)."""
        if self.metadata["kind"] == "ivf":
            faiss.extract_index_ivf(self.index).make_direct_map()  # IVF lists keep no id -> vector map
        return self.index.reconstruct_n(0, self.index.ntotal)

    def search(self, images: ImageLike | Sequence[ImageLike], k: int = 10) -> list[SearchResult]:
        """The k nearest gallery items of each image, by cosine similarity, best first."""
        if self.extractor is None:
            raise ConfigError(
                "This index was loaded without an extractor; pass one to GalleryIndex.load to search images."
            )
        return self.search_features(self.extractor.embed(images), k)

    def search_features(self, features: np.ndarray, k: int = 10) -> list[SearchResult]:
        """Like `search`, for features already computed by the index's model."""
        features = np.ascontiguousarray(np.atleast_2d(features), dtype=np.float32)
        if features.shape[1] != self.metadata["feature_dim"]:
            raise ConfigError(
                f"Query features have {features.shape[1]} dims; "
                f"this index holds {self.metadata['feature_dim']}."
            )
        if k < 1:
            raise ConfigError(f"k must be at least 1 (got {k}).")
        faiss.normalize_L2(features)
        scores, positions = self.index.search(features, min(int(k), len(self)))
        return [
            self._result(row_scores, row_positions) for row_scores, row_positions in zip(scores, positions)
        ]

    def _result(self, scores: np.ndarray, positions: np.ndarray) -> SearchResult:
        keep = positions >= 0  # IVF/HNSW return -1 when fewer than k items were reached
        positions, scores = positions[keep].tolist(), scores[keep].tolist()
        labels = self._labels[positions].tolist()
        return SearchResult(
            ids=[self.metadata["ids"][p] for p in positions],
            scores=[float(s) for s in scores],
            labels=labels,
            class_names=[self.class_names[label] if label >= 0 else None for label in labels],
            paths=[self.metadata["paths"][p] for p in positions],
            positions=positions,
        )

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `index.faiss` (FAISS's own format) and `metadata.json` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Write beside, then rename: a reader never sees a half-written index.
        with tempfile.TemporaryDirectory(dir=directory, prefix=".save-") as scratch:
            faiss.write_index(self.index, str(Path(scratch) / INDEX_FILE))
            (Path(scratch) / METADATA_FILE).write_text(json.dumps(self.metadata) + "\n")
            os.replace(Path(scratch) / INDEX_FILE, directory / INDEX_FILE)
            os.replace(Path(scratch) / METADATA_FILE, directory / METADATA_FILE)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        extractor: FeatureExtractor | None = None,
        expected_model: str | None = None,
        gallery: Gallery | None = None,
    ) -> GalleryIndex:
        """Read an index saved by `save`, refusing it if it was built by another model.

        The model is checked by fingerprint (weights and preprocessing): `expected_model`, or
        `extractor.fingerprint` when an extractor is given.
        """
        directory = Path(directory)
        index_path, metadata_path = directory / INDEX_FILE, directory / METADATA_FILE
        if not index_path.is_file() or not metadata_path.is_file():
            raise ConfigError(
                f"{directory} holds no saved index ({INDEX_FILE} and {METADATA_FILE}); build one first."
            )
        try:
            metadata = json.loads(metadata_path.read_text())
            built_by = metadata["model"]
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"{metadata_path} is not an sslzoo index description ({error}); "
                f"delete {directory} and rebuild."
            ) from error
        if metadata.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"{directory} was saved in index format {metadata.get('format')}; delete it and rebuild."
            )
        expected = expected_model or (extractor.fingerprint if extractor is not None else None)
        if expected is not None and built_by.get("fingerprint") != expected:
            serving = extractor.model_id if extractor is not None else expected[:12]
            raise IndexMismatchError(
                f"The index in {directory} holds features of model {built_by.get('id')!r} "
                f"(fingerprint {str(built_by.get('fingerprint'))[:12]}), not of {serving!r} "
                f"(fingerprint {expected[:12]}). Features of different models are not comparable: "
                "rebuild the index with this model, or load the model it was built with."
            )
        if gallery is not None and gallery.fingerprint != metadata["gallery"]["fingerprint"]:
            raise IndexMismatchError(
                f"The index in {directory} was built from another gallery than {gallery.name!r}; rebuild it."
            )
        index = faiss.read_index(str(index_path))
        if index.ntotal != len(metadata["ids"]) or index.d != metadata["feature_dim"]:
            raise ConfigError(
                f"{index_path} does not match {metadata_path.name}; delete {directory} and rebuild."
            )
        _apply_search_settings(index, metadata["kind"], metadata.get("settings", {}))
        return cls(index, metadata, extractor=extractor, gallery=gallery)

    @classmethod
    def cached(
        cls,
        extractor: FeatureExtractor,
        gallery: Gallery,
        cache_dir: str | os.PathLike,
        kind: str = "flat",
        progress: bool = True,
        **options: int,
    ) -> GalleryIndex:
        """Load the index of (model, gallery, kind) from `cache_dir`, building and saving it on first use.

        A gallery opened from a saved index (`Gallery.from_index_folder`, e.g. one `sslzoo-embed`
        wrote) is searched in that index, whatever `kind` says: nothing is embedded again, and an
        extractor of another model is refused (`IndexMismatchError`). A gallery that ships its
        features (`gallery.extra["features_file"]`, the embedded default) is indexed from them
        when they were made by this very model, instead of embedded afresh.
        """
        saved = gallery.extra.get(SAVED_INDEX_KEY)
        if saved is not None:
            return cls.load(saved, extractor=extractor, gallery=gallery)
        settings = "-".join(f"{key}{value}" for key, value in sorted(options.items()))
        key = f"{gallery.fingerprint[:16]}-{extractor.fingerprint[:16]}-{kind}"
        if settings:
            key += f"-{settings}"
        directory = Path(cache_dir) / "indexes" / key
        if (directory / INDEX_FILE).is_file():
            try:
                return cls.load(directory, extractor=extractor, gallery=gallery)
            except (ConfigError, RuntimeError):
                pass  # unreadable cache entry: rebuild it below
        shipped = gallery.extra.get("features_file")
        features = load_features(extractor, gallery, Path(shipped)) if shipped else None
        if features is not None:
            index = cls.from_features(
                features, gallery, model=extractor.describe(), kind=kind, extractor=extractor, **options
            )
        else:
            index = cls.build(extractor, gallery, kind=kind, progress=progress, **options)
        index.save(directory)
        return index


def _apply_search_settings(index: faiss.Index, kind: str, settings: dict[str, int]) -> None:
    """Query-time knobs, set explicitly after loading rather than trusting the file format to keep them."""
    if kind == "ivf" and "nprobe" in settings:
        faiss.extract_index_ivf(index).nprobe = int(settings["nprobe"])
    if kind == "hnsw" and "ef_search" in settings:
        index.hnsw.efSearch = int(settings["ef_search"])


def _make_index(kind: str, features: np.ndarray, **options: int) -> tuple[faiss.Index, dict[str, int]]:
    count, dim = features.shape
    if kind == "flat":
        if options:
            raise ConfigError(f"kind='flat' takes no options (got {sorted(options)}).")
        return faiss.IndexFlatIP(dim), {}
    if kind == "ivf":
        unknown = set(options) - {"nlist", "nprobe"}
        if unknown:
            raise ConfigError(f"kind='ivf' takes nlist and nprobe (got {sorted(unknown)}).")
        # FAISS wants ~39 training points per list; sqrt(N) lists is the usual starting point.
        nlist = int(options.get("nlist") or max(1, min(int(math.sqrt(count)), count // 39)))
        if nlist > count:
            raise ConfigError(f"nlist={nlist} needs at least that many gallery images (got {count}).")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(features)
        index.nprobe = int(options.get("nprobe") or max(1, nlist // 4))
        return index, {"nlist": nlist, "nprobe": index.nprobe}
    if kind == "hnsw":
        unknown = set(options) - {"m", "ef_search", "ef_construction"}
        if unknown:
            raise ConfigError(f"kind='hnsw' takes m, ef_construction and ef_search (got {sorted(unknown)}).")
        m = int(options.get("m") or 32)
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(options.get("ef_construction") or 80)
        index.hnsw.efSearch = int(options.get("ef_search") or 64)
        return index, {"m": m, "ef_construction": index.hnsw.efConstruction, "ef_search": index.hnsw.efSearch}
    raise ConfigError(f"Unknown index kind {kind!r}; choose one of {list(INDEX_KINDS)}.")
