"""The gallery as a 2-D map of its embeddings, coloured by class, with a query and its neighbours marked.

The map is a PCA of the gallery's features (`torch.pca_lowrank`, seeded): a linear projection, so
a query lands in the same plane with one matrix product, and fitting takes milliseconds for
thousands of images. t-SNE cannot place a new point without refitting, and UMAP would add
umap-learn and numba for a fit of seconds; both draw tighter clusters, but a map that moves
with every query would mislead more than a flatter one. The two components' share of the variance
is printed on the map, so nobody reads more into distances than they carry.

A map is fitted once per (gallery, model) and cached beside the index (`GalleryMap.cached`);
`MapView` is the demo page's panel. Matplotlib draws off-screen (Agg).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors.numpy import load_file, save_file

from sslzoo.errors import ConfigError

MAP_FILE = "map.safetensors"
#: Gallery points drawn at most (a seeded sample beyond it): past this a scatter is a blur that costs seconds.
MAX_DRAWN = 20_000
#: The colour of the points of an unlabelled gallery, which has no classes to colour by.
UNLABELLED_COLOUR = "0.45"
#: Random-projection iterations of `torch.pca_lowrank`: enough for two components to match an exact SVD.
_POWER_ITERATIONS = 6


@dataclass
class GalleryMap:
    """A fitted projection: `points` (N, 2) of the gallery, and what projects new features the same way."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, 2)
    points: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,)
    class_names: list[str]
    explained: tuple[float, float]  # share of the features' variance along each axis

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: Sequence[int], class_names: Sequence[str], seed: int = 0
    ) -> GalleryMap:
        """PCA of (N, D) `features` onto two axes (signs fixed, so the same features give the same map)."""
        x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        if x.ndim != 2 or len(x) < 3:
            raise ConfigError(f"A map needs at least 3 feature vectors (got shape {tuple(x.shape)}).")
        mean = x.mean(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, singular, vectors = torch.pca_lowrank(x, q=min(6, *x.shape), center=True, niter=_POWER_ITERATIONS)
        components = vectors[:, :2]
        signs = torch.sign(components[components.abs().argmax(0), torch.arange(2)])
        components = components * signs
        total = (x - mean).pow(2).sum()
        explained = tuple(float(value) for value in (singular[:2] ** 2 / total).clamp(0, 1))
        points = ((x - mean) @ components).float().numpy()
        return cls(
            mean=mean.float().numpy(),
            components=components.float().numpy(),
            points=points,
            labels=np.asarray(labels, dtype=np.int64),
            class_names=list(class_names),
            explained=(explained[0], explained[1]),
        )

    @classmethod
    def cached(cls, index: Any, directory: str | os.PathLike) -> GalleryMap:
        """The map of a `GalleryIndex`'s stored features, fitted once and kept in `directory`."""
        path = Path(directory) / MAP_FILE
        key = f"{index.gallery.fingerprint}:{index.extractor.fingerprint}" if index.gallery is not None else None
        if key and path.is_file():
            try:
                return cls.load(path, key)
            except Exception:  # noqa: BLE001 - a damaged or stale cache entry (any reader error): fit again
                pass
        fitted = cls.fit(index.stored_features(), index.metadata["labels"], index.class_names)
        if key:
            fitted.save(path, key)
        return fitted

    def project(self, features: np.ndarray) -> np.ndarray:
        """(M, 2) positions of (M, D) features in this map."""
        return (np.asarray(features, dtype=np.float32) - self.mean) @ self.components

    def save(self, path: str | os.PathLike, key: str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "mean": self.mean,
            "components": self.components,
            "points": self.points,
            "labels": self.labels,
            "explained": np.asarray(self.explained, dtype=np.float64),
        }
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(temporary), metadata={"key": key, "class_names": "\n".join(self.class_names)})
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | os.PathLike, key: str) -> GalleryMap:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("key") != key:
            raise ConfigError(f"{path}: the map of another gallery or model.")
        tensors = load_file(str(path))
        explained = tensors["explained"]
        return cls(
            mean=tensors["mean"],
            components=tensors["components"],
            points=tensors["points"],
            labels=tensors["labels"],
            class_names=metadata["class_names"].split("\n") if metadata["class_names"] else [],
            explained=(float(explained[0]), float(explained[1])),
        )

    # ------------------------------------------------------------------------------ drawing
    def figure(
        self,
        query: np.ndarray | None = None,
        neighbours: Sequence[int] = (),
        title: str = "",
        size: tuple[float, float] = (7.0, 5.6),
    ) -> Figure:
        """The map: gallery points by class; `neighbours` (gallery positions) ringed, `query` a star."""
        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        count = len(self.class_names)
        colours = _palette(count)
        faded = len(neighbours) > 0 or query is not None
        drawn = np.ones(len(self.points), dtype=bool)
        if len(self.points) > MAX_DRAWN:
            drawn[:] = False
            drawn[np.random.default_rng(0).choice(len(self.points), MAX_DRAWN, replace=False)] = True
        # An unlabelled gallery (a folder of photos) is one grey group of points.
        groups = [(label, colours[label], self.class_names[label]) for label in range(count)]
        for label, colour, name in groups or [(-1, UNLABELLED_COLOUR, None)]:
            chosen = (self.labels == label) & drawn
            axes.scatter(
                *self.points[chosen].T,
                s=10,
                color=colour,
                alpha=0.45 if faded else 0.75,
                linewidths=0,
                label=name if count <= 20 else None,
            )
        if len(neighbours):
            picked = np.asarray(list(neighbours), dtype=np.int64)
            axes.scatter(
                *self.points[picked].T,
                s=70,
                color=[colours[label] if label >= 0 else UNLABELLED_COLOUR for label in self.labels[picked]],
                edgecolors="black",
                linewidths=1.4,
                zorder=3,
            )
            axes.scatter([], [], s=70, color="white", edgecolors="black", linewidths=1.4,
                         label=f"its {len(picked)} neighbours")
        if query is not None:
            spot = self.project(np.asarray(query).reshape(1, -1))[0]
            if len(neighbours):
                for position in np.asarray(list(neighbours), dtype=np.int64):
                    axes.plot(*np.stack([spot, self.points[position]]).T, color="black", lw=0.5, alpha=0.4, zorder=2)
            axes.scatter(*spot, s=340, marker="*", color="#E4002B", edgecolors="white", linewidths=1.2,
                         zorder=4, label="query")
        first, second = self.explained
        axes.set_xlabel(f"PC 1 ({100 * first:.1f} % of the variance)")
        axes.set_ylabel(f"PC 2 ({100 * second:.1f} % of the variance)")
        axes.set_xticks([])
        axes.set_yticks([])
        shown = f"{len(self.points):,} images" + (f", {MAX_DRAWN:,} drawn" if len(self.points) > MAX_DRAWN else "")
        axes.set_title(title or f"Gallery embeddings ({shown}, PCA)", fontsize=11)
        if (0 < count <= 20) or len(neighbours) or query is not None:
            legend = axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
            for handle in legend.legend_handles:
                handle.set_alpha(1.0)
        return figure

    def render(self, query: np.ndarray | None = None, neighbours: Sequence[int] = (), title: str = "") -> np.ndarray:
        """`figure(...)` as an (H, W, 3) uint8 image, for a Gradio `Image`."""
        figure = self.figure(query, neighbours, title)
        canvas = figure.canvas
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def save_png(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(**kwargs).savefig(path, dpi=110)
        return path


def _palette(count: int) -> list[Any]:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    if count <= 20:
        return [colormaps["tab20"](index) for index in range(count)]
    return [colormaps["turbo"](index / max(count - 1, 1)) for index in range(count)]


class MapView:
    """The demo page's map panel: one cached map per model, redrawn with each query's neighbours.

    `component()` places the image in the page being built; `show(image, k, model)` is its event
    function (the page chains it after a search, so the `/search` API never waits for drawing).
    """

    def __init__(self, service: Any):
        self.service = service
        self._maps: dict[str, GalleryMap] = {}
        self._lock = threading.Lock()

    def map_of(self, key: str | None) -> GalleryMap:
        key = key or self.service.default_key
        index = self.service.index(key)
        with self._lock:
            if key not in self._maps:
                cache = self.service.cache_dir or index.extractor.cache_dir
                folder = Path(cache) / "maps" / f"{index.gallery.fingerprint[:16]}-{index.extractor.fingerprint[:16]}"
                self._maps[key] = GalleryMap.cached(index, folder)
            return self._maps[key]

    def drawable(self, key: str | None) -> bool:
        """A map needs at least 3 gallery images; smaller galleries go without one."""
        return len(self.service.index(key)) >= 3

    def component(self) -> Any:
        import gradio as gr

        drawable = self.drawable(None)
        return gr.Image(
            value=self.map_of(None).render() if drawable else None,
            visible=drawable,
            label="The gallery's embeddings (PCA; the query a star, its neighbours ringed)",
            show_label=False,  # the page's accordion says what it is; a label would cover the title
            type="numpy",
            interactive=False,
            buttons=["download", "fullscreen"],
            elem_id="sslzoo-map",
        )

    def show(self, image: str | None, k: float | None, model: str | None) -> np.ndarray | None:
        if not self.drawable(model):
            return None
        gallery_map = self.map_of(model)
        if not image:
            return gallery_map.render()
        index = self.service.index(model)
        try:
            features = self.service.embed(image, model)
        except Exception:  # the search event already told the user what is wrong with the image
            return gallery_map.render()
        k = max(1, min(int(k or 1), len(index)))
        result = index.search_features(features[None], k)[0]
        return gallery_map.render(query=features, neighbours=result.positions)


def write_map_png(
    model: str | os.PathLike, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The map of `model`'s embeddings of the embedded gallery as a PNG (the model card's figure)."""
    from .extractor import FeatureExtractor, default_cache_dir
    from .gallery import load_default_gallery
    from .index import GalleryIndex

    extractor = FeatureExtractor(model)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    index = GalleryIndex.cached(extractor, load_default_gallery(), cache)
    folder = cache / "maps" / f"{index.gallery.fingerprint[:16]}-{extractor.fingerprint[:16]}"
    return GalleryMap.cached(index, folder).save_png(path)


if __name__ == "__main__":
    import click

    @click.command()
    @click.argument("model")
    @click.argument("png", type=click.Path(dir_okay=False, path_type=Path))
    def _main(model: str, png: Path) -> None:
        """Draw MODEL's map of the embedded gallery into PNG (for its model card)."""
        click.echo(f"Wrote {write_map_png(model, png)}")

    _main()
