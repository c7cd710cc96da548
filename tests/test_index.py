"""GalleryIndex and galleries: exact cosine search, ANN options, persistence that refuses other models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sslzoo.serve.extractor import FeatureExtractor
from sslzoo.serve.gallery import Gallery, load_default_gallery, resolve_gallery
from sslzoo.serve.index import GalleryIndex, IndexMismatchError

from sslzoo import ConfigError, Encoder

CLASSES = ("apple", "boat", "cloud")


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.manual_seed(0)
    return FeatureExtractor(Encoder(provenance={"name": "tiny-a"}), batch_size=8, model_id="tiny-a")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """root/<class>/<n>.png, three classes of distinct random textures, plus a non-image file to skip."""
    root = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for item in range(3):
            pixels = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
            pixels[..., label] = 255  # each class leans to one colour channel
            Image.fromarray(pixels).save(root / name / f"{item}.png")
    (root / "boat" / "notes.txt").write_text("not an image")
    return root


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fake_gallery(count: int, classes: int = 4) -> Gallery:
    pixels = np.zeros((count, 2, 2, 3), dtype=np.uint8)
    pixels[:, 0, 0, 0] = np.arange(count) % 256
    pixels[:, 0, 0, 1] = np.arange(count) // 256
    return Gallery.from_arrays(pixels, np.arange(count) % classes, [f"c{i}" for i in range(classes)])


def test_folder_gallery_takes_labels_from_subfolders_and_finds_each_image_first(extractor, image_folder):
    index = GalleryIndex.from_folder(extractor, image_folder)
    assert len(index) == 9 and index.class_names == list(CLASSES)
    query = image_folder / "boat" / "1.png"
    (result,) = index.search([str(query)], k=4)
    assert len(result) == 4
    assert result.ids[0] == "boat/1.png" and result.paths[0] == str(query)
    assert result.labels[0] == 1 and result.class_names[0] == "boat"
    assert result.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert result.scores == sorted(result.scores, reverse=True)


def test_flat_search_is_exact_cosine_ranking():
    features, queries = unit_rows(200, 32, seed=1), unit_rows(5, 32, seed=2)
    index = GalleryIndex.from_features(features, fake_gallery(200), model={"id": "x", "fingerprint": "f"})
    results = index.search_features(queries * 3.0, k=10)  # scale must not matter: cosine
    similarities = queries @ features.T
    for row, result in zip(similarities, results):
        expected = np.argsort(-row)[:10]
        assert result.positions == expected.tolist()
        np.testing.assert_allclose(result.scores, row[expected], atol=1e-5)


@pytest.mark.parametrize(("kind", "options"), [("ivf", {"nlist": 8, "nprobe": 8}), ("hnsw", {"m": 16})])
def test_approximate_indexes_find_the_query_itself(kind, options):
    features = unit_rows(400, 32, seed=3)
    index = GalleryIndex.from_features(
        features, fake_gallery(400), model={"id": "x", "fingerprint": "f"}, kind=kind, **options
    )
    results = index.search_features(features[:20], k=5)
    assert [result.positions[0] for result in results] == list(range(20))
    assert index.metadata["kind"] == kind and index.metadata["settings"]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_index_gives_its_vectors_back_after_a_save(kind, tmp_path):
    features = unit_rows(100, 16, seed=4)
    index = GalleryIndex.from_features(features, fake_gallery(100), model={"id": "x", "fingerprint": "f"}, kind=kind)
    index.save(tmp_path / "idx")
    np.testing.assert_allclose(GalleryIndex.load(tmp_path / "idx").stored_features(), features, atol=1e-6)


def test_a_saved_index_of_files_opens_as_its_gallery_and_one_of_pixels_is_refused(extractor, image_folder, tmp_path):
    built = GalleryIndex.from_folder(extractor, image_folder)
    built.save(tmp_path / "files")
    gallery = resolve_gallery(tmp_path / "files")
    assert (gallery.ids, gallery.class_names, gallery.fingerprint) == (
        built.gallery.ids,
        list(CLASSES),
        built.gallery.fingerprint,
    )
    assert GalleryIndex.cached(extractor, gallery, tmp_path / "cache").metadata == built.metadata
    GalleryIndex.from_features(unit_rows(4, 512, 0), fake_gallery(4), model={"id": "x"}).save(tmp_path / "pixels")
    with pytest.raises(ConfigError, match="in-memory images"):
        resolve_gallery(tmp_path / "pixels")


def test_unknown_index_kind_and_options_are_refused():
    with pytest.raises(ConfigError, match="Unknown index kind"):
        GalleryIndex.from_features(unit_rows(4, 8, 0), fake_gallery(4), model={}, kind="lsh")
    with pytest.raises(ConfigError, match="nlist"):
        GalleryIndex.from_features(unit_rows(4, 8, 0), fake_gallery(4), model={}, kind="ivf", m=3)


def test_k_larger_than_the_gallery_returns_every_item(extractor, image_folder):
    index = GalleryIndex.from_folder(extractor, image_folder)
    (result,) = index.search([str(image_folder / "apple" / "0.png")], k=50)
    assert sorted(result.positions) == list(range(9))


def test_save_and_load_round_trip_gives_the_same_answers(extractor, image_folder, tmp_path):
    index = GalleryIndex.from_folder(extractor, image_folder, kind="hnsw", ef_search=32)
    index.save(tmp_path / "idx")
    metadata = json.loads((tmp_path / "idx" / "metadata.json").read_text())
    assert metadata["model"]["id"] == "tiny-a" and metadata["model"]["fingerprint"] == extractor.fingerprint
    assert metadata["feature_dim"] == 512 and metadata["class_names"] == list(CLASSES)
    assert metadata["ids"][0] == "apple/0.png" and metadata["labels"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    loaded = GalleryIndex.load(tmp_path / "idx", extractor)
    assert loaded.index.hnsw.efSearch == 32
    query = [str(image_folder / "cloud" / "2.png")]
    assert loaded.search(query, k=5) == index.search(query, k=5)


def test_loading_with_another_model_is_refused_with_both_names(extractor, image_folder, tmp_path):
    GalleryIndex.from_folder(extractor, image_folder).save(tmp_path / "idx")
    torch.manual_seed(1)  # other weights than the fixture's (seed 0)
    other = FeatureExtractor(Encoder(), model_id="tiny-b")
    with pytest.raises(IndexMismatchError, match=r"'tiny-a'.*'tiny-b'.*rebuild"):
        GalleryIndex.load(tmp_path / "idx", other)
    with pytest.raises(IndexMismatchError):
        GalleryIndex.load(tmp_path / "idx", expected_model="0" * 64)
    assert len(GalleryIndex.load(tmp_path / "idx", expected_model=extractor.fingerprint)) == 9


def test_cached_builds_once_then_loads(extractor, image_folder, tmp_path, monkeypatch):
    gallery = Gallery.from_folder(image_folder)
    first = GalleryIndex.cached(extractor, gallery, tmp_path, progress=False)
    monkeypatch.setattr(extractor, "embed", lambda *a, **k: pytest.fail("the cached index should be loaded"))
    second = GalleryIndex.cached(extractor, gallery, tmp_path, progress=False)
    assert second.metadata == first.metadata and len(list((tmp_path / "indexes").iterdir())) == 1


def test_array_and_dataset_galleries(extractor):
    pixels = np.random.default_rng(5).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    by_arrays = GalleryIndex.from_arrays(extractor, pixels, [0, 1, 0, 1, 0, 1], ["even", "odd"])
    dataset = [(Image.fromarray(image), label) for image, label in zip(pixels, [0, 1, 0, 1, 0, 1])]
    by_dataset = GalleryIndex.build(
        extractor, Gallery.from_dataset(dataset, class_names=["even", "odd"]), progress=False
    )
    (result,) = by_arrays.search([pixels[3]], k=2)
    assert result.positions[0] == 3 and result.class_names[0] == "odd"
    assert by_dataset.search([pixels[3]], k=2)[0].positions == result.positions


def test_the_embedded_default_gallery_is_100_cifar10_test_images_per_class():
    gallery = resolve_gallery("default")
    assert (
        len(gallery) == 1000
        and gallery.images.shape == (1000, 32, 32, 3)
        and gallery.images.dtype == np.uint8
    )
    assert gallery.class_names == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert np.bincount(gallery.labels).tolist() == [100] * 10
    sources = gallery.extra["source_indices"]
    assert (
        sources == sorted(sources)
        and len(set(sources)) == 1000
        and gallery.ids[0] == f"cifar10-test-{sources[0]:05d}"
    )
    assert "CIFAR-10 test" in gallery.provenance
    assert gallery.images.std() > 30  # real photographs, not a blank placeholder
    assert len(load_default_gallery().first_per_class(2)) == 20


def test_an_empty_or_missing_folder_is_refused_with_advice(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Gallery.from_folder(tmp_path / "nope")
    (tmp_path / "cats").mkdir()
    with pytest.raises(ConfigError, match="one subfolder per class"):
        Gallery.from_folder(tmp_path)


def test_a_flat_folder_is_an_unlabelled_gallery_named_by_file(extractor, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "2024").mkdir()
    for name in ("beach.jpg", "cake.png", "2024/dog.png"):
        Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / ".hidden.png").write_bytes(b"skipped")
    (tmp_path / "notes.txt").write_text("not an image")
    gallery = resolve_gallery(str(tmp_path))
    assert not gallery.labelled and gallery.class_names == []
    assert gallery.ids == ["2024/dog.png", "beach.jpg", "cake.png"]  # subfolders are searched too
    assert [gallery.display_name(i) for i in range(3)] == ["dog.png", "beach.jpg", "cake.png"]
    assert "unlabelled" in gallery.provenance
    index = GalleryIndex.build(extractor, gallery, progress=False)
    (result,) = index.search([str(tmp_path / "cake.png")], k=3)
    assert result.ids[0] == "cake.png" and result.class_names == [None, None, None]
    assert {row["label"] for row in result.as_dicts()} == {None}


def test_the_shipped_default_features_match_a_fresh_computation_and_only_that_model():
    """The embedded gallery's features under the bundled default: equal to embedding afresh (a
    sample of 50, float16 rounding apart), and refused for another model or weights file."""
    from sslzoo.serve.precomputed import features_path, load_features

    from sslzoo.registry import default_model, model_info

    gallery = load_default_gallery()
    default = FeatureExtractor(default_model(), model_id=default_model())
    shipped = load_features(default, gallery, features_path())
    assert shipped is not None and shipped.shape == (1000, 512)
    sample = list(range(0, 1000, 20))
    fresh = default.embed([gallery.item(i) for i in sample])
    np.testing.assert_allclose(shipped[sample], fresh, atol=2e-3)
    assert (np.sum(shipped[sample] * fresh, axis=1) > 0.9999).all()
    assert default.encoder.weights_sha256 == model_info(default_model()).sha256

    other = FeatureExtractor(Encoder(), model_id="random")
    assert load_features(other, gallery, features_path()) is None
    default.encoder.weights_sha256 = "0" * 64  # same tensors, another file: a stale record
    assert load_features(default, gallery, features_path()) is None
    assert load_features(default, gallery.first_per_class(2), features_path()) is None


def test_cached_indexes_the_default_gallery_from_its_shipped_features(tmp_path, monkeypatch):
    from sslzoo.registry import default_model

    gallery = load_default_gallery()
    default = FeatureExtractor(default_model(), model_id=default_model())
    monkeypatch.setattr(default, "embed", lambda *a, **k: pytest.fail("the shipped features should be used"))
    index = GalleryIndex.cached(default, gallery, tmp_path, progress=False)
    assert len(index) == 1000 and index.metadata["model"]["fingerprint"] == default.fingerprint
