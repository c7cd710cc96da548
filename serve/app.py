"""The retrieval demo: a Gradio Blocks page and its `/search` and `/embed` API endpoints.

Pieces, from the inside out: `load_query_image` (`.uploads`) turns whatever a client uploaded
into an RGB image or a clear refusal; `RetrievalService` holds the gallery and, per model, an
extractor and its index (built on first use, cached on disk), and batches concurrent queries
into one forward pass (`.batching`); `build_app` lays out the page; `launch` starts it with the
limits that keep the server up, whatever the page holds: the same upload limits on every route
(`.guards`, `.http_limits`), expiring uploads in a bounded space, a bounded queue, no extra
readable paths, and a login when asked for.
"""

from __future__ import annotations

import contextlib
import html
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from gradio.utils import _parse_file_size
from PIL import Image
from starlette.middleware import Middleware

from sslzoo.encoder import Encoder
from sslzoo.errors import SslzooError
from sslzoo.hub import CONFIG_NAME, HUB_PREFIX, WEIGHTS_NAME
from sslzoo.loading import bundled_weights_dir, sslzoo_home
from sslzoo.registry import list_models
from sslzoo.scratch import scratch_folder

from .batching import MicroBatcher
from .defaults import DEFAULT_MAX_FILE_SIZE, DEFAULT_QUERY_BATCH, DEFAULT_UPLOAD_SPACE, UPLOAD_TTL_S
from .extractor import FeatureExtractor
from .gallery import Gallery
from .gallery_map import MapView
from .guards import secure
from .http_limits import RequestLimits, UploadSpace
from .index import GalleryIndex, SearchResult
from .uploads import (
    SUPPORTED_FORMATS,
    DecodeBudget,
    QueryInputError,
    Upload,
    UploadLimits,
    load_query_image,
    too_large,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "ModelChoice",
    "QueryInputError",
    "RetrievalService",
    "Upload",
    "UploadLimits",
    "build_app",
    "examples_folder",
    "launch",
    "load_query_image",
    "local_models",
    "write_examples",
]

DEFAULT_K = 8
MAX_K = 50
#: Requests waiting beyond this are refused with "queue full" instead of piling up in memory.
QUEUE_SIZE = 256
THUMBNAIL_SIDE = 128
#: Old uploads are swept this often (`UPLOAD_TTL_S`, `DEFAULT_UPLOAD_SPACE`: `sslzoo.serve.defaults`).
UPLOAD_SWEEP_S = 60

_CSS = """
#sslzoo-results img { image-rendering: pixelated; }
#sslzoo-query img { image-rendering: pixelated; min-width: 50%; object-fit: contain; }
#sslzoo-timing { min-height: 1.5em; }
"""


# ------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model dropdown: `key` is what clients send, `ref` what `sslzoo.load` gets."""

    key: str
    label: str
    ref: str | Encoder


def local_models(
    extra: str | os.PathLike | Encoder | None = None, extra_key: str | None = None
) -> list[ModelChoice]:
    """Models usable without a network: `extra` (the served one) first, then bundled weights, then
    every `$SSLZOO_HOME/<name>/` folder that holds `config.json` and `model.safetensors`."""
    choices: list[ModelChoice] = []
    if extra is not None:
        key = extra_key or _key_of(extra)
        label = f"{key} (served)"
        choices.append(ModelChoice(key, label, extra if isinstance(extra, Encoder) else os.fspath(extra)))
    for name in list_models():
        if (bundled_weights_dir(name) / WEIGHTS_NAME).is_file():
            choices.append(ModelChoice(name, f"{name} (bundled)", name))
    home = sslzoo_home()
    if home.is_dir():
        for folder in sorted(home.iterdir()):
            if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
                choices.append(ModelChoice(folder.name, f"{folder.name} ($SSLZOO_HOME)", str(folder)))
    unique: dict[str, ModelChoice] = {}
    for choice in choices:
        unique.setdefault(choice.key, choice)
    return list(unique.values())


def _key_of(ref: str | os.PathLike | Encoder) -> str:
    if isinstance(ref, Encoder):
        return str(ref.provenance.get("name") or "encoder")
    text = os.fspath(ref)
    if text.startswith(HUB_PREFIX):
        return text
    if os.sep in text or Path(text).is_dir():
        return Path(text).expanduser().resolve().name
    return text


class RetrievalService:
    """The gallery plus, per model, an extractor and its index: loaded on first use, then kept.

    Safe to call from Gradio's worker threads: loading is serialised; with `max_query_batch`
    above 1, each thread decodes and preprocesses its own query and the queries waiting at the
    same moment share one forward pass and one FAISS search (`MicroBatcher`); with 1, each query
    runs alone, and the page answers one query at a time.
    """

    def __init__(
        self,
        gallery: Gallery,
        choices: Sequence[ModelChoice],
        backend: str = "torch",
        device: str = "cpu",
        cache_dir: str | os.PathLike | None = None,
        kind: str = "flat",
        batch_size: int = 64,
        threads: int | None = None,
        max_query_batch: int = DEFAULT_QUERY_BATCH,
        limits: UploadLimits | None = None,
    ):
        if not choices:
            raise SslzooError("No model to serve: pass one (a registry name, a folder or hf-hub:org/repo).")
        if max_query_batch < 1:
            raise SslzooError(f"max_query_batch must be at least 1 (got {max_query_batch}).")
        self.gallery = gallery
        self.choices = {choice.key: choice for choice in choices}
        self.default_key = choices[0].key
        self.backend, self.device, self.kind = backend, device, kind
        self.batch_size, self.threads = batch_size, threads
        self.max_query_batch = int(max_query_batch)
        self.limits = limits or UploadLimits()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._indexes: dict[str, GalleryIndex] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        self._lock = threading.Lock()
        self._decoding = DecodeBudget(self.limits.max_pixels)

    @property
    def concurrency(self) -> int:
        """How many page events may run at once: enough threads to fill two batches."""
        return 1 if self.max_query_batch == 1 else 2 * self.max_query_batch

    def index(self, key: str | None, progress: bool = True) -> GalleryIndex:
        """The index of model `key`, building it (and its extractor) on first use."""
        key = key or self.default_key
        if key not in self.choices:
            raise QueryInputError(
                f"Unknown model {html.escape(str(key))!r}; choose one of: {', '.join(self.choices)}."
            )
        with self._lock:
            if key not in self._indexes:
                choice = self.choices[key]
                extractor = FeatureExtractor(
                    choice.ref,
                    backend=self.backend,
                    device=self.device,
                    batch_size=self.batch_size,
                    cache_dir=self.cache_dir,
                    model_id=key,
                    threads=self.threads,
                    onnx_in_background=True,  # answer with PyTorch while the first export runs
                )
                cache_dir = self.cache_dir or extractor.cache_dir
                index = GalleryIndex.cached(
                    extractor, self.gallery, cache_dir, kind=self.kind, progress=progress
                )
                self._batchers[key] = MicroBatcher(
                    lambda items, index=index: _embed_and_search(index, items),
                    max_batch_size=self.max_query_batch,
                    name=f"sslzoo-queries-{key}",
                )
                self._indexes[key] = index
            return self._indexes[key]

    def search(
        self, image: str | os.PathLike, k: int, key: str | None
    ) -> tuple[SearchResult, dict[str, float]]:
        """The k (clamped to 1..MAX_K) neighbours of one uploaded file, with per-stage timings in ms.

        Timings: decode (decode, checks and preprocessing), queue (waiting for a batch), embed and
        search (of the whole batch), and `batch`, the number of queries in it.
        """
        k = max(1, min(int(k), MAX_K))
        (_, result), timings = self._query(image, k, key)
        assert result is not None
        return result, timings

    def embed(self, image: str | os.PathLike, key: str | None) -> np.ndarray:
        (features, _), _ = self._query(image, 0, key)
        return features

    def _query(
        self, image: str | os.PathLike, k: int, key: str | None
    ) -> tuple[tuple[np.ndarray, SearchResult | None], dict[str, float]]:
        key = key or self.default_key
        index = self.index(key)
        started = time.perf_counter()
        decoded_image = load_query_image(
            Upload.of(image), index.extractor.encoder.input_size, self.limits, self._decoding
        )
        tensor = index.extractor.encoder.preprocess([decoded_image])[0]
        decoded = time.perf_counter()
        if self.max_query_batch == 1:
            (answer,), info = _embed_and_search(index, [(tensor, k)], timed=True)
            queue_ms, batch = 0.0, 1
        else:
            (answer, info), batch_info = self._batchers[key]((tensor, k))
            queue_ms, batch = batch_info.wait_ms, batch_info.size
        timings = {
            "decode_ms": 1000 * (decoded - started),
            "queue_ms": queue_ms,
            "embed_ms": info["embed_ms"],
            "search_ms": info["search_ms"],
            "batch": batch,
        }
        return answer, timings

    def close(self) -> None:
        """Stop the batching threads (queued queries are answered first)."""
        for batcher in self._batchers.values():
            batcher.close()


def _embed_and_search(index: GalleryIndex, items: list[tuple[torch.Tensor, int]], timed: bool = False) -> Any:
    """Features of preprocessed queries, each with its `k` best neighbours (k=0: features only).

    One forward pass and one search serve the whole batch; each answer carries the batch's
    embed and search time.
    """
    started = time.perf_counter()
    features = index.extractor.embed_tensor(torch.stack([tensor for tensor, _ in items]))
    embedded = time.perf_counter()
    k_max = max(k for _, k in items)
    results = index.search_features(features.copy(), k_max) if k_max > 0 else [None] * len(items)
    searched = time.perf_counter()
    info = {"embed_ms": 1000 * (embedded - started), "search_ms": 1000 * (searched - embedded)}
    answers = [
        (features[row], result.top(k) if result is not None and k > 0 else None)
        for row, ((_, k), result) in enumerate(zip(items, results))
    ]
    if timed:
        return answers, info
    return [(answer, info) for answer in answers]


# ------------------------------------------------------------------------------------------ page
#: Training facts worth a line on the page, as `sslzoo-train` records them in the provenance.
_TRAINING_DETAILS = {
    "recipe": "recipe {}",
    "batch_size": "batch {}",
    "steps": "{} steps",
    "precision": "{} precision",
    "world_size": "{} process(es)",
}


def model_card_markdown(extractor: FeatureExtractor) -> str:
    """How the served model was trained and what it scores, from its own provenance record only."""
    encoder, provenance = extractor.encoder, extractor.provenance
    lines = [
        f"**Model** `{html.escape(extractor.model_id)}`: {encoder.backbone} ({encoder.stem} stem), "
        f"{encoder.num_features}-d features, {encoder.input_size} px input, backend {extractor.backend}."
    ]
    if not provenance.get("method"):
        lines.append(
            "**Training:** none recorded. This encoder carries no provenance (it may be randomly "
            "initialised), so its neighbours say little about what a trained model finds."
        )
        return "\n\n".join(lines)
    facts = [str(provenance["method"])]
    if provenance.get("plugins"):
        facts[0] += " + " + " + ".join(str(plugin) for plugin in provenance["plugins"])
    if provenance.get("dataset"):
        facts.append(f"on {provenance['dataset']}")
    if provenance.get("epochs") is not None:
        epochs = provenance["epochs"]
        facts.append(f"for {_fmt(epochs)} epoch{'' if epochs == 1 else 's'}")
    if provenance.get("device"):
        facts.append(f"on {provenance['device']}")
    details = [
        template.format(_fmt(provenance[key]))
        for key, template in _TRAINING_DETAILS.items()
        if provenance.get(key) is not None
    ]
    if provenance.get("train_seconds") is not None:
        details.append(f"{float(provenance['train_seconds']) / 60:.1f} min of training")
    training = " ".join(facts) + (f" ({', '.join(details)})" if details else "")
    lines.append(f"**Training:** {html.escape(training)}.")
    scores = scores_text(provenance.get("metrics"), dataset=provenance.get("dataset"))
    lines.append(f"**Scores:** {html.escape(scores)}")
    return "\n\n".join(lines)


def scores_text(metrics: dict[str, Any] | None, dataset: str | None = None) -> str:
    """The recorded accuracies in words, read with the same normaliser the model cards use."""
    if not metrics:
        return "none recorded for this encoder."
    from sslzoo.export.results import normalise_metrics  # the project's one reader of metric records

    try:
        canonical = normalise_metrics(metrics)
    except (TypeError, ValueError, KeyError, AttributeError):
        canonical = {}
    parts = []
    for entry in canonical.get("knn", []):
        protocol = f" (k={entry['k']}, t={entry['t']})" if entry.get("k") is not None else ""
        parts.append(f"kNN top-1 {entry['top1']:.2f}%{protocol}")
    for entry in canonical.get("linear", []):
        protocol = f" ({entry['protocol']} protocol)" if entry.get("protocol") else " (protocol not recorded)"
        parts.append(f"linear probe top-1 {entry['top1']:.2f}%{protocol}")
    if not parts:  # a record in a shape the normaliser does not know: show it as it is
        return "; ".join(f"{key.replace('_', ' ')} {_fmt(value)}" for key, value in _flatten(metrics)) + "."
    where = " ".join(
        str(part) for part in (canonical.get("dataset") or dataset, canonical.get("split")) if part
    )
    return "; ".join(parts) + (f", on the {where} split." if where else ".")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and len(str(value)) <= 80


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_flatten(value, prefix=f"{name} "))
        elif _is_scalar(value):
            items.append((name, value))
    return items


def gallery_markdown(gallery: Gallery) -> str:
    counts = np.bincount(gallery.labels, minlength=len(gallery.class_names))
    return (
        f"**Gallery** `{gallery.name}`: {len(gallery):,} images, {len(gallery.class_names)} classes "
        f"({', '.join(f'{n} {c}' for c, n in zip(gallery.class_names, counts.tolist()))}). "
        f"{gallery.provenance}"
    )


def write_examples(gallery: Gallery, folder: Path, extra: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Example queries as PNG files in `folder`: `extra` files, else the first image of each class."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in extra:
        target = folder / Path(source).name
        shutil.copyfile(source, target)
        paths.append(str(target))
    if not paths:
        seen: set[int] = set()
        for index, label in enumerate(gallery.labels.tolist()):
            if label not in seen:
                seen.add(label)
                target = folder / f"{gallery.class_names[label]}.png"
                gallery.image(index).save(target)
                paths.append(str(target))
    return paths


def build_app(
    service: RetrievalService,
    examples: Sequence[str] = (),
    title: str = "sslzoo image retrieval",
) -> gr.Blocks:
    """The demo page. Its event functions are also the named API endpoints `/search` and `/embed`."""
    gallery = service.gallery
    max_k = min(MAX_K, len(gallery))
    first = service.index(service.default_key)  # built before the page exists: the first query is fast
    thumbnails = Thumbnails(gallery)
    map_view = MapView(service)  # the gallery's 2-D map, fitted once per model (sslzoo.serve.gallery_map)

    def search(image: str | None, k: float, model: str | None) -> tuple[list, dict, str]:
        """Top-k gallery neighbours of the query image, with class and cosine similarity."""
        if not image:
            raise gr.Error("Upload an image or pick an example first.", print_exception=False)
        try:
            k = DEFAULT_K if k is None else int(k)
        except (TypeError, ValueError) as error:
            raise gr.Error(f"k must be a whole number from 1 to {max_k}.", print_exception=False) from error
        try:
            result, timings = service.search(image, k, model)
        except (QueryInputError, SslzooError) as error:
            raise gr.Error(str(error), print_exception=False) from error
        rendered_at = time.perf_counter()
        neighbours = result.as_dicts()
        images = [
            (thumbnails.path(position), f"{name} · {score:.3f}")
            for position, name, score in zip(result.positions, result.class_names, result.scores)
        ]
        batch = int(timings.pop("batch"))
        timings["render_ms"] = 1000 * (time.perf_counter() - rendered_at)
        total = sum(timings.values())
        details = {
            "model": model or service.default_key,
            "k": len(neighbours),
            "neighbours": neighbours,
            "batch": batch,
            "timing_ms": {key.removesuffix("_ms"): round(value, 2) for key, value in timings.items()},
        }
        shared_with = f", in a batch of {batch} queries" if batch > 1 else ""
        timing = (
            f"Query took **{total:.0f} ms** (decode {timings['decode_ms']:.0f} ms, "
            f"queue {timings['queue_ms']:.0f} ms, embed {timings['embed_ms']:.0f} ms{shared_with}, "
            f"search {timings['search_ms']:.1f} ms, render {timings['render_ms']:.0f} ms) "
            f"for {len(neighbours)} neighbours."
        )
        return images, details, timing

    def search_if_image(image: str | None, k: float, model: str | None) -> tuple[Any, Any, Any]:
        if not image:
            return [], None, ""
        return search(image, k, model)

    def embed(image: str | None, model: str | None) -> dict[str, Any]:
        """The L2-normalised feature vector of the query image."""
        if not image:
            raise gr.Error("Upload an image first.", print_exception=False)
        try:
            vector = service.embed(image, model)
        except (QueryInputError, SslzooError) as error:
            raise gr.Error(str(error), print_exception=False) from error
        extractor = service.index(model).extractor
        return {
            "model": model or service.default_key,
            "fingerprint": extractor.fingerprint,
            "dim": int(vector.shape[0]),
            "embedding": [round(float(value), 7) for value in vector],
        }

    def describe(model: str | None) -> str:
        try:
            return model_card_markdown(service.index(model).extractor)
        except (QueryInputError, SslzooError) as error:
            raise gr.Error(str(error), print_exception=False) from error

    choices = [(choice.label, choice.key) for choice in service.choices.values()]
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\nDrop in an image: the encoder embeds it and the gallery's nearest neighbours appear."
        )
        card = gr.Markdown(model_card_markdown(first.extractor), elem_id="sslzoo-model-card")
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Image(
                    label="Query image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id="sslzoo-query",
                )
                k = gr.Slider(
                    1, max_k, value=min(DEFAULT_K, max_k), step=1, label="Neighbours (k)", elem_id="sslzoo-k"
                )
                model = gr.Dropdown(
                    choices=choices, value=service.default_key, label="Model", elem_id="sslzoo-model"
                )
                run = gr.Button("Search", variant="primary", elem_id="sslzoo-search")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[query], label="Examples")
            with gr.Column(scale=2):
                timing = gr.Markdown(elem_id="sslzoo-timing")
                results = gr.Gallery(
                    label="Nearest neighbours (class · cosine similarity)",
                    columns=4,
                    object_fit="contain",
                    allow_preview=True,
                    elem_id="sslzoo-results",
                )
                with gr.Accordion("Results as JSON", open=False):
                    details = gr.JSON(label="Neighbours", elem_id="sslzoo-details")
                with gr.Accordion("Embedding", open=False):
                    embed_button = gr.Button("Embed the query image")
                    embedding = gr.JSON(label="Feature vector")
                with gr.Accordion("Map of the gallery: its embeddings in 2-D (PCA), the query a star", open=True):
                    gallery_map = map_view.component()
        gr.Markdown(gallery_markdown(gallery))

        shared = {"concurrency_id": "retrieval", "concurrency_limit": service.concurrency}
        # The map is drawn after the answer, in its own queue: the /search API never waits for it.
        redraw = {"fn": map_view.show, "inputs": [query, k, model], "outputs": gallery_map, "api_name": False}
        redraw.update(concurrency_id="map", concurrency_limit=1)
        run.click(search, [query, k, model], [results, details, timing], api_name="search", **shared).then(
            **redraw
        )
        query.change(
            search_if_image, [query, k, model], [results, details, timing], api_name=False, **shared
        ).then(**redraw)
        embed_button.click(embed, [query, model], embedding, api_name="embed", **shared)
        model.change(describe, model, card, api_name=False, **shared).then(
            search_if_image, [query, k, model], [results, details, timing], api_name=False, **shared
        ).then(**redraw)
    demo.queue(max_size=QUEUE_SIZE)
    return demo


class Thumbnails:
    """Gallery items rendered once as PNG files, reused by every answer that shows them.

    Returning files rather than PIL images matters under load: Gradio rewrites a PIL output's
    cache file on every request, so concurrent answers showing the same neighbour can serve a
    half-written image. The folder is one of Gradio's static paths: answers point at the files
    where they are, which spares each answer a copy-and-hash into the cache per neighbour (a
    quarter of the cost of returning eight thumbnails, measured with Gradio 6.31).
    """

    def __init__(self, gallery: Gallery, folder: Path | None = None):
        self.gallery = gallery
        self.folder = folder or scratch_folder("sslzoo-thumbnails-")
        gr.set_static_paths([self.folder])  # only thumbnails live here, each written atomically

    def path(self, position: int) -> str:
        target = self.folder / f"{position:06d}.png"
        if not target.is_file():
            image = self.gallery.image(position, max_side=256)
            if max(image.size) < THUMBNAIL_SIDE:  # tiny CIFAR images: enlarge with crisp pixels
                scale = THUMBNAIL_SIDE // max(image.size)
                image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
            fd, staging = tempfile.mkstemp(dir=self.folder, suffix=".png")
            with os.fdopen(fd, "wb") as handle:
                image.save(handle, format="PNG")
            os.replace(staging, target)
        return str(target)


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    block: bool = True,
    quiet: bool = False,
    auth: Sequence[tuple[str, str]] | None = None,
    limits: UploadLimits | None = None,
    upload_space: str | int = DEFAULT_UPLOAD_SPACE,
    upload_ttl_s: int = UPLOAD_TTL_S,
) -> str:
    """Start the server and return its local URL.

    Every route into it meets the same limits: request bodies and uploads above `max_file_size`
    are refused, and every image input checks bytes, pixels and aspect ratio (`limits`, whose
    byte cap is `max_file_size`) before decoding (`.guards.secure`). Uploads and cached results
    expire after `upload_ttl_s` seconds; new uploads are refused while those of that window
    would exceed `upload_space`. Clients can read only what the app itself produced: no
    `allowed_paths`, whatever `GRADIO_ALLOWED_PATHS` says. `auth` lists (user, password) pairs
    that must log in.
    """
    max_bytes = _parse_file_size(max_file_size)
    limits = replace(limits or UploadLimits(), max_bytes=max_bytes)
    sweep_s = max(1, min(UPLOAD_SWEEP_S, upload_ttl_s))
    space = UploadSpace(_parse_file_size(upload_space), window_s=upload_ttl_s + sweep_s)
    secure(demo, limits, space)
    demo.delete_cache = (sweep_s, upload_ttl_s)
    body_limit = Middleware(
        RequestLimits, max_bytes=max_bytes, body_message=too_large("The upload", max_bytes), space=space
    )
    # The server checks pixel counts itself, before decoding: Pillow's warning would only add noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    with _without_env("GRADIO_ALLOWED_PATHS"):
        _, url, _ = demo.launch(
            server_name=host,
            server_port=port,
            max_file_size=max_file_size,
            prevent_thread_lock=not block,
            share=False,
            show_error=False,
            quiet=quiet,
            allowed_paths=[],
            auth=list(auth) if auth else None,
            enable_monitoring=False,
            mcp_server=False,
            ssr_mode=False,
            num_workers=0,
            footer_links=["api"],
            css=_CSS,
            app_kwargs={"middleware": [body_limit]},
        )
    return url


@contextlib.contextmanager
def _without_env(name: str) -> Iterator[None]:
    """Hide an environment variable while Gradio reads its settings (it would widen them)."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def examples_folder() -> Path:
    """A fresh temporary folder for example files (inside the system temp dir, which Gradio serves from)."""
    return scratch_folder("sslzoo-examples-")
