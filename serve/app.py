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
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import Counter
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
from sslzoo.references import anchors, method_reference, num_classes
from sslzoo.registry import list_models, model_info
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
    "unavailable_models",
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
#sslzoo-examples .grid-container {
  grid-template-columns: repeat(5, minmax(0, 1fr)); grid-template-rows: none; grid-auto-rows: auto;
}
#sslzoo-examples .thumbnail-item { aspect-ratio: 1; }
#sslzoo-examples img { image-rendering: pixelated; }
#sslzoo-examples .caption-label { font-size: 11px; padding: 0 2px; max-width: 100%; }
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
    """Every encoder this machine can serve: `extra` (the served one) first, then the registry's
    bundled weights, every `$SSLZOO_HOME/<name>/` folder that holds `config.json` and
    `model.safetensors`, and the registry's Hub-published models (downloaded when chosen).

    Registry entries without published weights are left out: choosing one could only fail.
    `unavailable_models` counts them for the page.
    """
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
    for name in list_models(trained=True):
        if model_info(name).weights == "hub":
            choices.append(ModelChoice(name, f"{name} (Hub, downloaded when chosen)", name))
    unique: dict[str, ModelChoice] = {}
    for choice in choices:
        unique.setdefault(choice.key, choice)
    return list(unique.values())


def unavailable_models() -> list[str]:
    """Registry entries with no published weights yet: not servable, named on the page."""
    return list_models(trained=False)


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
    """How the served model was trained and what it scores, from its own provenance record only,
    with the scores' context: chance and what fully trained models of its method reach."""
    encoder, provenance = extractor.encoder, extractor.provenance
    running = extractor.running_backend
    backend = (
        extractor.backend
        if running == extractor.backend
        else f"{running} (until the {extractor.backend} export is ready)"
    )
    lines = [
        f"**Model** `{html.escape(extractor.model_id)}`: {encoder.backbone} ({encoder.stem} stem), "
        f"{encoder.num_features}-d features, {encoder.input_size} px input, backend {backend}."
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
    context = scores_context_markdown(provenance, encoder.backbone)
    if context:
        lines.append(context)
    return "\n\n".join(lines)


def scores_context_markdown(provenance: dict[str, Any], backbone: str | None) -> str:
    """A small table: this model's top-1 beside chance and the published numbers of its method
    (`sslzoo.references`), so "kNN 50 %" reads as "five times chance, well short of a full run"."""
    from sslzoo.export.results import normalise_metrics

    try:
        canonical = normalise_metrics(provenance.get("metrics") or {})
    except (TypeError, ValueError, KeyError, AttributeError):
        canonical = {}
    dataset = canonical.get("dataset") or provenance.get("dataset")
    method = provenance.get("method")
    classes = canonical.get("num_classes") or num_classes(dataset)
    published, whose = anchors(method, dataset, backbone), str(method)
    if not published and provenance.get("host") and provenance.get("host") != method:
        whose = f"{provenance['host']} (the host method)"
        published = anchors(provenance["host"], dataset, backbone)
    knn, linear = canonical.get("knn") or [], canonical.get("linear") or []
    if not (knn or linear) or not (classes or published):
        return ""

    def cell(entries: list[dict[str, Any]]) -> str:
        if not entries:
            return "–"
        entry = entries[0]
        how = f" (k={entry['k']})" if entry.get("k") is not None else ""
        how = how or (f" ({entry['protocol']} protocol)" if entry.get("protocol") else "")
        return f"**{entry['top1']:.2f} %**{how}"

    epochs = provenance.get("epochs")
    trained = f", {_fmt(epochs)} epoch{'' if epochs == 1 else 's'}" if epochs is not None else ""
    rows = [f"| this model{trained} | {cell(knn)} | {cell(linear)} |"]
    if classes:
        chance = f"{100 / classes:.3g} %"
        rows.append(f"| chance ({classes} classes) | {chance} | {chance} |")
    for anchor in published:
        batch = f", batch {anchor.batch_size}" if anchor.batch_size else ""
        note = f"; {anchor.note}" if anchor.note else ""
        who = f"{whose}, {anchor.epochs} epochs{batch} ([{anchor.source}]({anchor.source_url}){note})"
        value = f"{anchor.top1:g} %" + (f" (k={anchor.k})" if anchor.k else "")
        rows.append(
            f"| {who} | {value if anchor.metric == 'knn' else '–'} | "
            f"{value if anchor.metric == 'linear' else '–'} |"
        )
    if not published:
        rows.append(f"| {whose}: no published {backbone} number on {dataset} on file | – | – |")
    split = canonical.get("split") or "test"
    head = (
        f"**In context** (top-1 on the {dataset} {split} split; the published models are {backbone}s "
        "trained to the end):"
    )
    return head + "\n\n| | kNN | linear probe |\n|---|---|---|\n" + "\n".join(rows)


def links_markdown(choice: ModelChoice, provenance: dict[str, Any]) -> str:
    """Links to the model's card (on the Hub, or bundled and shown on this page), its paper and code."""
    parts = []
    name = choice.ref if isinstance(choice.ref, str) and choice.ref in list_models() else None
    info = model_info(name) if name else None
    if info is not None and info.weights == "hub":
        parts.append(f"[model card](https://huggingface.co/{info.hub_repo})")
    elif isinstance(choice.ref, str) and choice.ref.startswith(HUB_PREFIX):
        repo = choice.ref.removeprefix(HUB_PREFIX).partition("@")[0]
        parts.append(f"[model card](https://huggingface.co/{repo})")
    elif model_card_text(choice):
        parts.append("model card (bundled: open *Model card* on the right)")
    reference = method_reference(provenance.get("method") or (info.method if info else None))
    if reference is not None:
        parts.append(f"[paper]({reference.paper_url}) (arXiv:{reference.arxiv})")
        parts.append(f"[official code]({reference.code})" if reference.code else "no official code published")
    return " · ".join(parts)


def model_card_text(choice: ModelChoice) -> str:
    """The README that came with the model's weights (bundled or in its folder), without its
    metadata header and images, or "" when there is none."""
    ref = choice.ref
    if isinstance(ref, Encoder):
        return ""
    folder = bundled_weights_dir(ref) if ref in list_models() else Path(ref).expanduser()
    readme = folder / "README.md"
    if not readme.is_file():
        return ""
    text = readme.read_text(errors="replace")
    if text.startswith("---"):
        _, _, text = text[3:].partition("\n---")
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)  # its figures are files this page does not serve
    return text.strip()


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
    if not gallery.labelled:
        return (
            f"**Gallery** `{gallery.name}`: {len(gallery):,} unlabelled images; results show their file "
            f"names. {gallery.provenance}"
        )
    counts = np.bincount(gallery.labels, minlength=len(gallery.class_names))
    return (
        f"**Gallery** `{gallery.name}`: {len(gallery):,} images, {len(gallery.class_names)} classes "
        f"({', '.join(f'{n} {c}' for c, n in zip(gallery.class_names, counts.tolist()))}). "
        f"{gallery.provenance}"
    )


#: Example queries taken from an unlabelled gallery (a labelled one gives one per class).
UNLABELLED_EXAMPLES = 4


def write_examples(gallery: Gallery, folder: Path, extra: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Example queries as PNG files in `folder`: `extra` files, else the first image of each class
    (of an unlabelled gallery: its first few). A file's name says what it shows (`example_label`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in extra:
        target = folder / Path(source).name
        shutil.copyfile(source, target)
        paths.append(str(target))
    if not paths:
        seen: set[int] = set()
        for index, label in enumerate(gallery.labels.tolist()):
            if gallery.labelled and label in seen:
                continue
            seen.add(label)
            target = folder / f"{Path(gallery.display_name(index)).stem}.png"
            gallery.image(index).save(target)
            paths.append(str(target))
            if not gallery.labelled and len(paths) == UNLABELLED_EXAMPLES:
                break
    return paths


def example_label(path: str | os.PathLike) -> str:
    """What an example shows, from its file name: `example-cat.png` and `cat.png` are "cat"."""
    return Path(path).stem.removeprefix("example-").replace("_", " ")


def top_class(result: SearchResult, num_classes: int) -> dict[str, Any] | None:
    """The most common class among the neighbours (ties: the one ranked first), how many share it,
    and how many would by chance; None for an unlabelled gallery, where there are no classes."""
    names = [name for name in result.class_names if name is not None]
    if not names or num_classes < 1:
        return None
    label, count = Counter(names).most_common(1)[0]
    return {"label": label, "count": count, "of": len(names), "chance": round(len(names) / num_classes, 2)}


def neighbour_summary(top: dict[str, Any] | None, num_classes: int) -> str:
    """E.g. "**5 of 8** neighbours are **cat** (chance: about 0.8 of 8 ...)"; "" without classes."""
    if not top:
        return ""
    return (
        f"**{top['count']} of {top['of']}** neighbours are **{html.escape(top['label'])}** "
        f"(chance: about {top['chance']:g} of {top['of']} with {num_classes} equally common classes)."
    )


def build_app(
    service: RetrievalService,
    examples: Sequence[str] = (),
    title: str = "sslzoo image retrieval",
) -> gr.Blocks:
    """The demo page. Its event functions are also the named API endpoints `/search` and `/embed`."""
    gallery = service.gallery
    max_k = min(MAX_K, len(gallery))
    service.index(service.default_key)  # built before the page exists: the first query is fast
    thumbnails = Thumbnails(gallery)
    map_view = MapView(service)  # the gallery's 2-D map, fitted once per model (sslzoo.serve.gallery_map)
    classes = len(gallery.class_names)

    def search(image: str | None, k: float, model: str | None) -> tuple[list, dict, str]:
        """Top-k gallery neighbours of the query image, with class (or file name) and cosine similarity."""
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
        if not gallery.labelled:
            for row, path in zip(neighbours, result.ids):
                row["file"] = Path(path).name
        images = [
            (thumbnails.path(position), f"{gallery.display_name(position)} · {score:.3f}")
            for position, score in zip(result.positions, result.scores)
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
        top = top_class(result, classes)
        if top is not None:
            details["top_class"] = top
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

    def pick_example(selected: gr.SelectData) -> str:
        return examples[selected.index]

    def summarise(details: dict[str, Any] | None) -> str:
        return neighbour_summary((details or {}).get("top_class"), classes)

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

    def describe(model: str | None) -> tuple[str, str, str]:
        try:
            extractor = service.index(model).extractor
        except (QueryInputError, SslzooError) as error:
            raise gr.Error(str(error), print_exception=False) from error
        choice = service.choices[model or service.default_key]
        return (
            model_card_markdown(extractor),
            links_markdown(choice, extractor.provenance),
            model_card_text(choice) or "No model card came with these weights.",
        )

    choices = [(choice.label, choice.key) for choice in service.choices.values()]
    missing = unavailable_models()
    menu_note = (
        f"{len(missing)} more zoo entries have no published weights yet, so they are not listed."
        if missing
        else None
    )
    first_card, first_links, first_text = describe(service.default_key)
    example_help = "an example (its label is its true class)" if gallery.labelled else "an example"
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\nDrop in an image or pick {example_help}: the encoder embeds it and the "
            "gallery's nearest neighbours appear."
        )
        links = gr.Markdown(first_links, elem_id="sslzoo-links")
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Image(
                    label="Query image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=200,
                    elem_id="sslzoo-query",
                )
                if examples:  # a gallery, not gr.Examples: that shows either the images or labels, not both
                    gr.Markdown(
                        f"**Examples**: click one{' (labelled with its class)' if gallery.labelled else ''}"
                    )
                    picks = gr.Gallery(
                        value=[(path, example_label(path)) for path in examples],
                        show_label=False,
                        columns=5,
                        height=172,
                        object_fit="contain",
                        allow_preview=False,
                        buttons=[],
                        elem_id="sslzoo-examples",
                    )
                k = gr.Slider(
                    1, max_k, value=min(DEFAULT_K, max_k), step=1, label="Neighbours (k)", elem_id="sslzoo-k"
                )
                model = gr.Dropdown(
                    choices=choices,
                    value=service.default_key,
                    label="Model",
                    info=menu_note,
                    elem_id="sslzoo-model",
                )
                run = gr.Button("Search", variant="primary", elem_id="sslzoo-search")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="sslzoo-summary")
                what = "class" if gallery.labelled else "file name"
                gr.Markdown(
                    f"**Nearest neighbours** ({what} · cosine similarity)", elem_id="sslzoo-results-title"
                )
                results = gr.Gallery(
                    show_label=False,  # its label badge would sit on the first result
                    columns=4,
                    height=400,
                    object_fit="contain",
                    allow_preview=True,
                    elem_id="sslzoo-results",
                )
                timing = gr.Markdown(elem_id="sslzoo-timing")
                card = gr.Markdown(first_card, elem_id="sslzoo-model-card")
                with gr.Accordion("Model card", open=False, elem_id="sslzoo-card-text"):
                    card_text = gr.Markdown(first_text)
                with gr.Accordion("Results as JSON", open=False):
                    details = gr.JSON(label="Neighbours", elem_id="sslzoo-details")
                with gr.Accordion("Embedding", open=False):
                    embed_button = gr.Button("Embed the query image")
                    embedding = gr.JSON(label="Feature vector")
                with gr.Accordion("Map of the gallery: its embeddings in 2-D (PCA), the query a star", open=True):
                    gallery_map = map_view.component()
        gr.Markdown(gallery_markdown(gallery))

        shared = {"concurrency_id": "retrieval", "concurrency_limit": service.concurrency}
        outputs = [results, details, timing]
        quick = {"queue": False, "show_progress": "hidden"}
        # The map is drawn after the answer, in its own queue: the /search API never waits for it.
        redraw = {"fn": map_view.show, "inputs": [query, k, model], "outputs": gallery_map, "api_name": False}
        redraw.update(concurrency_id="map", concurrency_limit=1)
        run.click(search, [query, k, model], outputs, api_name="search", **shared).then(**redraw)
        query.change(search_if_image, [query, k, model], outputs, api_name=False, **shared).then(**redraw)
        details.change(summarise, details, summary, api_name=False, **quick)
        embed_button.click(embed, [query, model], embedding, api_name="embed", **shared)
        if examples:
            picks.select(pick_example, None, query, api_name=False, **quick)
        model.change(describe, model, [card, links, card_text], api_name=False, **shared).then(
            search_if_image, [query, k, model], outputs, api_name=False, **shared
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
