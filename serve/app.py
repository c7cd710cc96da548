"""The retrieval demo: a Gradio Blocks page and its `/search` and `/embed` API endpoints.

Pieces, from the inside out: `load_query_image` turns whatever a client uploaded into an RGB
image or a clear refusal; `RetrievalService` holds the gallery and, per model, an extractor and
its index (built on first use, cached on disk); `build_app` lays out the page; `launch` starts
it with the limits that keep the server up (upload cap, bounded queue, no extra readable paths).
"""

from __future__ import annotations

import atexit
import html
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from sslzoo.encoder import Encoder
from sslzoo.errors import SslzooError
from sslzoo.hub import CONFIG_NAME, HUB_PREFIX, WEIGHTS_NAME
from sslzoo.loading import bundled_weights_dir, sslzoo_home
from sslzoo.preprocessing import MAX_PIXELS, to_rgb
from sslzoo.registry import list_models

from .extractor import FeatureExtractor
from .gallery import Gallery
from .index import GalleryIndex, SearchResult

DEFAULT_MAX_FILE_SIZE = "10mb"
DEFAULT_K = 8
MAX_K = 50
#: Requests waiting beyond this are refused with "queue full" instead of piling up in memory.
QUEUE_SIZE = 256
THUMBNAIL_SIDE = 128
SUPPORTED_FORMATS = "PNG, JPEG, WebP, BMP, GIF or TIFF"

_CSS = """
#sslzoo-results img { image-rendering: pixelated; }
#sslzoo-query img { image-rendering: pixelated; min-width: 50%; object-fit: contain; }
#sslzoo-timing { min-height: 1.5em; }
"""


class QueryInputError(SslzooError, ValueError):
    """An upload that is not a usable image; the message is safe to show to the client."""


# ------------------------------------------------------------------------------------------ inputs
def load_query_image(path: str | os.PathLike, input_size: int) -> Image.Image:
    """Decode an uploaded file into an RGB image no larger than needed, or raise `QueryInputError`.

    Grayscale, palette, RGBA and 16-bit images are converted; files that are not images, are
    truncated, or exceed `MAX_PIXELS` are refused before they cost memory. Large images are
    shrunk while decoding (JPEG draft mode, then a box reduce), so a 40 MP upload costs one
    decode and no full-size float copy.
    """
    name = html.escape(Path(path).name)  # messages may be rendered as HTML: never echo raw input
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise QueryInputError(
                    f"'{name}' is {image.width}x{image.height} pixels, more than the {MAX_PIXELS:,} "
                    "this server decodes. Downscale it and try again."
                )
            if image.width < 1 or image.height < 1:
                raise QueryInputError(f"'{name}' has no pixels.")
            if image.format == "JPEG":
                image.draft("RGB", (2 * input_size, 2 * input_size))
            image.load()
            rgb = to_rgb(image)
    except QueryInputError:
        raise
    except Image.DecompressionBombError as error:
        raise QueryInputError(f"'{name}' is too large to decode safely ({error}).") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise QueryInputError(
            f"'{name}' is not a readable image (it is corrupt, truncated or not a picture). "
            f"Upload a {SUPPORTED_FORMATS} file."
        ) from error
    factor = min(rgb.size) // (2 * input_size)
    if factor >= 2:  # cheap box reduction first; the encoder's antialiased resize finishes the job
        rgb = rgb.reduce(factor)
    return rgb


def guard_decoding(component: gr.Image) -> gr.Image:
    """Make an upload that Gradio itself cannot open reach the client as a clear message.

    Gradio opens uploaded images before the event function runs, and what that raises would
    reach the client as a bare "Error". The component's `preprocess` is wrapped on the instance:
    a subclass would make Gradio write a `.pyi` stub beside this module at import time.
    """
    preprocess = component.preprocess

    def guarded(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Image.DecompressionBombError as error:
            raise gr.Error(
                f"The upload is too large to decode safely ({error}).", print_exception=False
            ) from error
        except Exception as error:
            name = (
                getattr(payload, "orig_name", None)
                or Path(str(getattr(payload, "path", "") or "upload")).name
            )
            raise gr.Error(
                f"'{html.escape(name)}' is not a readable image (it is corrupt, truncated or not a picture). "
                f"Upload a {SUPPORTED_FORMATS} file.",
                print_exception=False,
            ) from error

    component.preprocess = guarded  # type: ignore[method-assign]
    return component


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

    Safe to call from Gradio's worker threads: loading is serialised, searching is not.
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
    ):
        if not choices:
            raise SslzooError("No model to serve: pass one (a registry name, a folder or hf-hub:org/repo).")
        self.gallery = gallery
        self.choices = {choice.key: choice for choice in choices}
        self.default_key = choices[0].key
        self.backend, self.device, self.kind = backend, device, kind
        self.batch_size, self.threads = batch_size, threads
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._indexes: dict[str, GalleryIndex] = {}
        self._lock = threading.Lock()

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
                )
                cache_dir = self.cache_dir or extractor.cache_dir
                self._indexes[key] = GalleryIndex.cached(
                    extractor, self.gallery, cache_dir, kind=self.kind, progress=progress
                )
            return self._indexes[key]

    def search(self, image_path: str, k: int, key: str | None) -> tuple[SearchResult, dict[str, float]]:
        """The k (clamped to 1..MAX_K) neighbours of one uploaded file, with per-stage timings in ms."""
        index = self.index(key)
        started = time.perf_counter()
        image = load_query_image(image_path, index.extractor.encoder.input_size)
        decoded = time.perf_counter()
        features = index.extractor.embed([image])
        embedded = time.perf_counter()
        result = index.search_features(features, max(1, min(int(k), MAX_K)))[0]
        searched = time.perf_counter()
        timings = {
            "decode_ms": 1000 * (decoded - started),
            "embed_ms": 1000 * (embedded - decoded),
            "search_ms": 1000 * (searched - embedded),
        }
        return result, timings

    def embed(self, image_path: str, key: str | None) -> np.ndarray:
        index = self.index(key)
        image = load_query_image(image_path, index.extractor.encoder.input_size)
        return index.extractor.embed([image])[0]


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
        timings["render_ms"] = 1000 * (time.perf_counter() - rendered_at)
        total = sum(timings.values())
        details = {
            "model": model or service.default_key,
            "k": len(neighbours),
            "neighbours": neighbours,
            "timing_ms": {key.removesuffix("_ms"): round(value, 2) for key, value in timings.items()},
        }
        timing = (
            f"Query took **{total:.0f} ms** (decode {timings['decode_ms']:.0f} ms, "
            f"embed {timings['embed_ms']:.0f} ms, search {timings['search_ms']:.1f} ms, "
            f"render {timings['render_ms']:.0f} ms) for {len(neighbours)} neighbours."
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
                query = guard_decoding(
                    gr.Image(
                        label="Query image",
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        height=280,
                        elem_id="sslzoo-query",
                    )
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
        gr.Markdown(gallery_markdown(gallery))

        shared = {"concurrency_id": "retrieval", "concurrency_limit": 1}
        run.click(search, [query, k, model], [results, details, timing], api_name="search", **shared)
        query.change(search_if_image, [query, k, model], [results, details, timing], api_name=False, **shared)
        embed_button.click(embed, [query, model], embedding, api_name="embed", **shared)
        model.change(describe, model, card, api_name=False, **shared).then(
            search_if_image, [query, k, model], [results, details, timing], api_name=False, **shared
        )
    demo.queue(max_size=QUEUE_SIZE)
    return demo


class Thumbnails:
    """Gallery items rendered once as PNG files, reused by every answer that shows them.

    Returning files rather than PIL images matters under load: Gradio rewrites a PIL output's
    cache file on every request, so concurrent answers showing the same neighbour can serve a
    half-written image; a file is copied into its cache once, atomically.
    """

    def __init__(self, gallery: Gallery, folder: Path | None = None):
        self.gallery = gallery
        # Inside the system temp dir, which Gradio already lets the app return files from.
        self.folder = folder or _temporary_folder("sslzoo-thumbnails-")

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
) -> str:
    """Start the server and return its local URL.

    Uploads above `max_file_size` are refused; clients can read only what the app itself
    produced (no `allowed_paths`: example files sit in a temporary folder Gradio already trusts).
    """
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=max_file_size,
        prevent_thread_lock=not block,
        share=False,
        show_error=False,
        quiet=quiet,
        allowed_paths=[],
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        footer_links=["api"],
        css=_CSS,
    )
    return url


def examples_folder() -> Path:
    """A fresh temporary folder for example files (inside the system temp dir, which Gradio serves from)."""
    return _temporary_folder("sslzoo-examples-")


def _temporary_folder(prefix: str) -> Path:
    """A folder in the system temp dir, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
