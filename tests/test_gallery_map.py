"""The gallery map: a PCA of the gallery's embeddings, fitted once and cached, that places queries in the
same plane and marks their neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sslzoo.serve import gallery_map
from sslzoo.serve.app import RetrievalService, local_models
from sslzoo.serve.gallery import assets_dir, load_default_gallery
from sslzoo.serve.gallery_map import GalleryMap, MapView

from sslzoo import ConfigError, Encoder

QUERY_RED = np.array([0xE4, 0x00, 0x2B])


def clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(3, 32)) * 4
    labels = np.arange(90) % 3
    return (centres[labels] + generator.normal(size=(90, 32))).astype(np.float32), labels


def red_pixels(image: np.ndarray) -> int:
    return int((np.abs(image.astype(int) - QUERY_RED).sum(axis=2) < 40).sum())


def test_the_map_is_the_exact_two_component_pca_and_projects_new_points_alike():
    features, labels = clustered()
    fitted = GalleryMap.fit(features, labels, ["a", "b", "c"])
    centred = features - features.mean(0)
    _, singular, axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    for axis in range(2):  # the same axes as an exact SVD, up to sign
        assert abs(float(axes[axis] @ fitted.components[:, axis])) > 0.999
    np.testing.assert_allclose(fitted.explained, singular[:2] ** 2 / (singular**2).sum(), rtol=1e-3)
    np.testing.assert_allclose(fitted.project(features), fitted.points, atol=1e-4)
    again = GalleryMap.fit(features, labels, ["a", "b", "c"])
    np.testing.assert_array_equal(again.points, fitted.points)  # seeded and sign-fixed: the same map
    centres = [fitted.points[labels == label].mean(0) for label in range(3)]
    spread = max(np.linalg.norm(fitted.points[labels == 0] - centres[0], axis=1))
    assert min(np.linalg.norm(centres[0] - centres[1]), np.linalg.norm(centres[0] - centres[2])) > spread
    with pytest.raises(ConfigError, match="at least 3"):
        GalleryMap.fit(features[:2], labels[:2], ["a"])


def test_the_drawing_marks_the_query_and_its_neighbours_only_when_asked():
    features, labels = clustered()
    fitted = GalleryMap.fit(features, labels, ["a", "b", "c"])
    plain = fitted.render()
    marked = fitted.render(query=features[0] + 0.1, neighbours=[3, 6, 9])
    assert plain.dtype == np.uint8 and plain.ndim == 3 and plain.shape[2] == 3
    assert red_pixels(plain) == 0 and red_pixels(marked) > 50  # the query's red star


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-map"
    Encoder(input_size=16, provenance={"name": "tiny-map"}).save_pretrained(folder)
    gallery = load_default_gallery().first_per_class(3)
    return RetrievalService(gallery, local_models(extra=folder), cache_dir=tmp_path_factory.mktemp("cache"))


def test_the_map_of_a_model_is_fitted_once_and_kept_on_disk(service, monkeypatch):
    view = MapView(service)
    first = view.map_of(None)
    assert len(first.points) == len(service.gallery) and first.class_names == service.index(None).class_names
    np.testing.assert_array_equal(first.labels, service.index(None).metadata["labels"])
    assert view.map_of(None) is first  # in memory
    files = list(service.cache_dir.glob("maps/*/map.safetensors"))
    assert len(files) == 1
    monkeypatch.setattr(GalleryMap, "fit", classmethod(lambda *a, **k: pytest.fail("fitted again")))
    reloaded = MapView(service).map_of(None)  # a restarted page: read back, not refitted
    np.testing.assert_array_equal(reloaded.points, first.points)
    assert reloaded.class_names == first.class_names and reloaded.explained == pytest.approx(first.explained)
    monkeypatch.undo()
    files[0].write_bytes(b"damaged")
    np.testing.assert_allclose(MapView(service).map_of(None).points, first.points, atol=1e-5)  # refitted
    with pytest.raises(ConfigError, match="another gallery or model"):
        GalleryMap.load(files[0], "another key")


def test_the_panel_shows_the_query_among_the_gallery(service):
    view = MapView(service)
    empty = view.show(None, 5, None)
    shown = view.show(str(assets_dir() / "example-cat.png"), 5, None)
    assert red_pixels(empty) == 0 and red_pixels(shown) > 50
    broken = service.cache_dir / "broken.png"
    broken.write_bytes(b"not an image")
    assert red_pixels(view.show(str(broken), 5, None)) == 0  # the search reports the error; the map stays
    assert gallery_map.MAP_FILE == "map.safetensors"


def test_the_card_figure_is_the_map_of_the_embedded_gallery(tmp_path, monkeypatch):
    from sslzoo.serve import gallery as gallery_module
    from sslzoo.serve.gallery_map import write_map_png

    torch.manual_seed(0)
    Encoder(input_size=16, provenance={"name": "tiny"}).save_pretrained(tmp_path / "model")
    small = load_default_gallery().first_per_class(1)
    monkeypatch.setattr(gallery_module, "load_default_gallery", lambda: small)
    path = write_map_png(tmp_path / "model", tmp_path / "card" / "map.png", cache_dir=tmp_path / "cache")
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600
    assert len(list((tmp_path / "cache").glob("maps/*/map.safetensors"))) == 1


def test_a_gallery_too_small_for_a_map_goes_without_one(tmp_path):
    torch.manual_seed(0)
    Encoder(input_size=16, provenance={"name": "tiny-two"}).save_pretrained(tmp_path / "tiny-two")
    two = load_default_gallery().first_per_class(1).subset([0, 1])
    view = MapView(RetrievalService(two, local_models(extra=tmp_path / "tiny-two"), cache_dir=tmp_path))
    assert not view.drawable(None) and view.show(str(assets_dir() / "example-cat.png"), 1, None) is None
