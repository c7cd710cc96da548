"""Model cards written from measured results only, with huggingface_hub's `ModelCard`.

A card's numbers come from the registry (`sslzoo/zoo.json`, see `sslzoo.export.results`) or,
for a model outside the registry, from the provenance stored with its weights; where there are
none the card says "not yet measured". The YAML front matter carries `model-index` results
whose metric names state the protocol ("kNN top-1 (k=200, t=0.1)"), so the Hub shows them as
evaluation results and readers know exactly what was measured.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sslzoo import registry
from sslzoo.backbones import num_features as backbone_width
from sslzoo.encoder import Encoder
from sslzoo.hub import WEIGHTS_NAME
from sslzoo.references import method_references
from sslzoo.weight_files import INDEX_NAME

from .curves import plot_training_curves
from .onnx import ONNX_NAME
from .quantize import INT8_NAME
from .results import (
    TRAINING_KEYS,
    knn_key_label,
    knn_label,
    linear_label,
    model_name,
    normalise_metrics,
    plain_number,
)

LICENSE = "mit"
RESULTS_NAME = "results.json"
TASK_NAME = "Image classification on frozen features"


@dataclass(frozen=True)
class DatasetFacts:
    title: str
    hub_id: str
    pretraining: str

    @property
    def key(self) -> str:
        return next((name for name, facts in DATASETS.items() if facts == self), self.title)


DATASETS = {
    "cifar10": DatasetFacts(
        "CIFAR-10", "uoft-cs/cifar10", "the 50,000 training images of CIFAR-10 (32x32, 10 classes)"
    ),
    "cifar100": DatasetFacts(
        "CIFAR-100", "uoft-cs/cifar100", "the 50,000 training images of CIFAR-100 (32x32, 100 classes)"
    ),
    "stl10": DatasetFacts(
        "STL-10", "tanganke/stl10", "the 5,000 labelled and 100,000 unlabelled images of STL-10 (96x96)"
    ),
    "imagenet100": DatasetFacts(
        "ImageNet-100", "clane9/imagenet-100", "the training images of ImageNet-100 (100 ImageNet classes)"
    ),
}

#: arXiv ids of the papers the registry names, for the citation section (`sslzoo/references.json`).
ARXIV = {name: reference.arxiv for name, reference in method_references().items()}
#: Registry fields a model outside the registry may carry in its provenance.
_DESCRIPTIVE_KEYS = (
    "name",
    "method",
    "host",
    "plugins",
    "supervised",
    "paper",
    "dataset",
    "recipe",
    "hub_repo",
)
#: Methods without public reference code: sslzoo implements its reading of the paper.
INTERPRETED = {"minc", "batchfusion", "iecl"}
STEMS = {
    "cifar": "CIFAR stem (3x3 stride-1 conv, no max-pool)",
    "imagenet": "ImageNet stem (7x7 stride-2 conv, max-pool)",
}
SSLZOO_BIBTEX = """@software{sslzoo,
  title = {sslzoo: a model zoo of self-supervised image encoders},
  url = {https://huggingface.co/sslzoo}
}"""


def model_facts(encoder: Encoder | None = None, info: registry.ModelInfo | None = None) -> dict[str, Any]:
    """Everything a card says about a model, from its registry entry and/or its weights' provenance.

    The registry wins for numbers (it is their one source); the weights' own config wins for
    preprocessing (it is what the file really expects).
    """
    if encoder is None and info is None:
        raise ValueError("model_facts needs an encoder, a registry entry, or both.")
    facts: dict[str, Any] = dataclasses.asdict(info) if info is not None else {}
    facts["registered"] = info is not None
    if encoder is not None:
        provenance = encoder.provenance
        facts.update({key: value for key, value in encoder.config.items() if key != "provenance"})
        for key in _DESCRIPTIVE_KEYS:
            if facts.get(key) is None and provenance.get(key) is not None:
                facts[key] = provenance[key]
        if not facts.get("metrics"):  # sslzoo-train stores percentages
            facts["metrics"] = normalise_metrics(provenance.get("metrics"), percent=True)
        from_weights = {key: provenance[key] for key in TRAINING_KEYS if provenance.get(key) is not None}
        facts["training"] = {**from_weights, **(facts.get("training") or {})}
        facts["num_features"] = encoder.num_features
    else:
        facts["num_features"] = backbone_width(facts["backbone"])
    if not facts.get("paper") and facts.get("method"):  # a run outside the registry: its method's paper
        relatives = registry.list_models(f"{facts['method']}-*")
        facts["paper"] = registry.model_info(relatives[0]).paper if relatives else None
    facts["metrics"] = normalise_metrics(facts.get("metrics"), percent=True)  # any stored shape
    facts.setdefault("training", {})
    facts.setdefault("plugins", [])
    if not facts.get("name"):
        facts["name"] = (encoder is not None and model_name(encoder.config)) or f"sslzoo-{facts['backbone']}"
    return facts


def eval_results(facts: Mapping[str, Any]) -> list[EvalResult]:
    """The card's `model-index` entries: top-1 and top-5 of each measured kNN setting and linear-probe
    protocol."""
    metrics = facts.get("metrics") or {}
    dataset = _dataset(facts, evaluated=True)
    common = dict(
        task_type="image-classification",
        task_name=TASK_NAME,
        dataset_type=dataset.hub_id,
        dataset_name=dataset.title,
        dataset_split=metrics.get("split", "test"),
        metric_type="accuracy",
    )
    results = []
    for entry in metrics.get("knn", []):
        protocol = {"k": entry["k"], "t": entry["t"]} if entry.get("k") is not None else None
        config = f"k={entry['k']},t={entry['t']:g}" if protocol else None
        for top in ("top1", "top5"):
            if entry.get(top) is not None:
                results.append(
                    EvalResult(
                        **common,
                        metric_name=_top(knn_label(entry), top),
                        metric_value=entry[top],
                        metric_config=config,
                        metric_args=protocol,
                    )
                )
    for entry in metrics.get("linear", []):
        protocol = entry.get("protocol")
        args = {key: entry[key] for key in ("protocol", "epochs", "lr", "batch_size") if entry.get(key) is not None}
        for top in ("top1", "top5"):
            if entry.get(top) is not None:
                results.append(
                    EvalResult(
                        **common,
                        metric_name=_top(linear_label(entry), top),
                        metric_value=entry[top],
                        metric_config=f"protocol={protocol}" if protocol else None,
                        metric_args=args if protocol else None,
                    )
                )
    return results


def _top(label: str, top: str) -> str:
    """"kNN top-1 (k=200, t=0.1)" -> "kNN top-5 (k=200, t=0.1)" for the top-5 entry."""
    return label.replace("top-1", "top-5", 1) if top == "top5" else label


def build_card(
    facts: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    files: Sequence[str] = (WEIGHTS_NAME, ONNX_NAME),
    curves: str | None = None,
    figures: Mapping[str, str] | None = None,
    weights_sha256: str | None = None,
    weights_dtype: str | None = None,
) -> ModelCard:
    """The card of one model: YAML front matter, then what it is, results, use, evaluation, limits, citation.

    `repo_id` is where the folder is (or will be) on the Hub: the usage snippets load from it.
    `files` are the files that sit next to the card; `curves` is a PNG path relative to the card, and
    so are the values of `figures` (keys of `FIGURES`: the per-class accuracy of `sslzoo-eval
    --figure` and the map of the embedded gallery's embeddings).
    `weights_sha256` / `weights_dtype` describe the weights file the card is for: the results say
    whether they were measured on that very file or on one whose values it holds exactly.
    """
    dataset = _dataset(facts)
    tags = [
        "sslzoo",
        "self-supervised-learning",
        "image-feature-extraction",
        facts.get("method"),
        facts.get("backbone"),
        facts.get("dataset"),
    ]
    tags += list(facts.get("plugins") or []) + (["onnx"] if ONNX_NAME in files else [])
    results = eval_results(facts)
    card_data = ModelCardData(
        library_name="sslzoo",
        license=LICENSE,
        pipeline_tag="image-feature-extraction",
        tags=list(dict.fromkeys(str(tag) for tag in tags if tag)),
        datasets=[dataset.hub_id],
        model_name=facts["name"] if results else None,
        eval_results=results or None,
    )
    sections = [
        _summary(facts, dataset),
        _results_section(facts, weights_sha256, weights_dtype),
        f"## Training curves\n\n![Training loss and kNN top-1 per epoch]({curves})\n" if curves else "",
        _figures_section(figures or {}, facts),
        _what_it_is(facts, dataset),
        _usage(facts, repo_id, files),
        _int8_section(facts, files),
        _evaluation(facts),
        _limitations(facts, dataset),
        _citation(facts),
    ]
    body = "\n".join(section for section in sections if section)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def write_model_cards(
    directory: str | os.PathLike = "model_cards",
    *,
    runs_dir: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """(Re)write `directory/<name>.md` for every trained model in the registry (or `names`).

    With `runs_dir`, a run's `runs_dir/<name>/metrics.jsonl` is drawn as `<name>-curves.png` next
    to the card; a PNG drawn earlier stays referenced when the run is no longer at hand.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names if names is not None else registry.list_models(trained=True):
        info = registry.model_info(name)
        png = directory / f"{name}-curves.png"
        figures = {kind: f"{name}-{kind}.png" for kind in FIGURES if (directory / f"{name}-{kind}.png").is_file()}
        log = Path(runs_dir) / name / "metrics.jsonl" if runs_dir is not None else None
        if log is not None and log.is_file():
            plot_training_curves(log, png, title=name)
        card = build_card(
            model_facts(info=info),
            repo_id=info.hub_repo if info.weights == "hub" else None,
            files=(WEIGHTS_NAME,),
            curves=png.name if png.is_file() else None,
            figures=figures,
            weights_sha256=info.sha256,
        )
        path = directory / f"{name}.md"
        card.save(path)
        written.append(path)
    return written


def _dataset(facts: Mapping[str, Any], evaluated: bool = False) -> DatasetFacts:
    """The pretraining dataset, or with `evaluated` the one the metrics were measured on (usually it)."""
    name = str(
        (evaluated and (facts.get("metrics") or {}).get("dataset")) or facts.get("dataset") or "unknown"
    )
    return DATASETS.get(name, DatasetFacts(name, name, f"the {name} training images"))


def _method_title(facts: Mapping[str, Any]) -> str:
    method, host, plugins = (
        facts.get("method") or "unknown method",
        facts.get("host"),
        facts.get("plugins") or [],
    )
    return f"{method} ({host} host + {' + '.join(plugins)} plug-in)" if plugins and host else str(method)


def _percent(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "—"


def _summary(facts: Mapping[str, Any], dataset: DatasetFacts) -> str:
    size, width = facts.get("input_size"), facts.get("num_features")
    labels = " with labels (supervised contrastive)" if facts.get("supervised") else " without labels"
    return (
        f"# {facts['name']}\n\n"
        f"A {facts.get('backbone')} image encoder pretrained{labels} with **{_method_title(facts)}** on "
        f"{dataset.title}, from the sslzoo model zoo. It maps a {size}x{size} RGB image to a {width}-d "
        "feature vector for retrieval, kNN classification or a linear probe. The classifier head is "
        "removed; training-only parts (projector, predictor, momentum copies) are not included.\n"
    )


def _results_section(
    facts: Mapping[str, Any], weights_sha256: str | None = None, weights_dtype: str | None = None
) -> str:
    metrics = facts.get("metrics") or {}
    rows = [
        f"| {knn_label(entry)} | {_percent(entry.get('top1'))} | {_percent(entry.get('top5'))} |"
        for entry in metrics.get("knn", [])
    ]
    rows += [
        f"| {linear_label(entry)} | {_percent(entry['top1'])} | {_percent(entry.get('top5'))} |"
        for entry in metrics.get("linear", [])
    ]
    if not rows:
        return "## Results\n\n" + _not_measured(facts) + "\n"
    split = metrics.get("split", "test")
    measured_on = metrics.get("weights_sha256")
    if measured_on is None:
        where = "measured on these weights"
    elif weights_sha256 in (None, measured_on):
        where = f"measured on these weights: the file with sha256 `{measured_on}`"
    else:
        where = (
            f"measured on the published weights file (sha256 `{measured_on}`); this folder's "
            f"{weights_dtype or ''} weights (sha256 `{weights_sha256}`) hold exactly its values, so the "
            "numbers are theirs too"
        ).replace("  ", " ")
    return (
        f"## Results\n\nAccuracy (%) on the {_dataset(facts, evaluated=True).title} {split} split, "
        f"{where}.\n\n"
        "| protocol | top-1 | top-5 |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _not_measured(facts: Mapping[str, Any]) -> str:
    """What a card says without numbers of its file, with the training run's kNN monitor if there was one."""
    in_registry = bool(facts.get("registered")) and facts.get("weights") not in (None, "none")
    model = facts["name"] if in_registry else "path/to/this/folder"
    text = (
        "Not yet measured: no evaluation of these weights has been recorded. "
        f"`sslzoo-eval {model} --dataset {_dataset(facts).key} --json` measures them"
        + ("." if in_registry else "; `sslzoo-export ... --eval-json REPORT` puts the report on the card.")
    )
    monitor = normalise_metrics(facts.get("monitor"), percent=True) if facts.get("monitor") else {}
    headline = monitor.get("knn", [None])[0]
    if headline:
        bank = f" with {monitor['train_images']:,} training images as the bank" if monitor.get("train_images") else ""
        text += (
            f" During training, the kNN monitor measured {_percent(headline.get('top1'))} % "
            f"{knn_label(headline).removeprefix('kNN ')}{bank} on the weights in memory, not on this file."
        )
    return text


def _what_it_is(facts: Mapping[str, Any], dataset: DatasetFacts) -> str:
    training = facts.get("training") or {}
    arxiv = ARXIV.get(str(facts.get("method")))
    link = f"[arXiv:{arxiv}](https://arxiv.org/abs/{arxiv})" if arxiv else ""
    paper = (
        f"{facts['paper']} ({link})"
        if facts.get("paper") and link
        else facts.get("paper") or link or "not recorded"
    )
    size = facts.get("input_size")
    rows = [
        ("Method", _method_title(facts) + (" (uses labels)" if facts.get("supervised") else "")),
        ("Paper", paper),
        (
            "Backbone",
            f"{facts.get('backbone')}, {STEMS.get(str(facts.get('stem')), facts.get('stem'))}, "
            f"{facts.get('num_features')}-d pooled features",
        ),
        ("Pretraining data", dataset.pretraining + ("" if facts.get("supervised") else "; labels not used")),
        (
            "Input",
            f"{size}x{size} RGB: resize the short side to {size} ({facts.get('interpolation')}), "
            f"centre-crop, scale to [0, 1], normalise with mean {_floats(facts.get('mean'))} "
            f"and std {_floats(facts.get('std'))}",
        ),
        ("Epochs", _epochs(training)),
        ("Batch size", plain_number(training.get("batch_size", "not recorded"))),
        _compute_time(training),
        ("Recipe", f"`{facts['recipe']}`" if facts.get("recipe") else "not recorded"),
    ]
    if training.get("precision"):
        rows.append(("Precision", training["precision"]))
    if isinstance(training.get("views_per_s"), (int, float)):
        rows.append(("Throughput", f"{training['views_per_s']:,.0f} augmented views/s"))
    version = training.get("commit") or training.get("sslzoo_version")
    if version:
        rows.append(("Code version", f"sslzoo `{version}`"))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    command = (
        f"\nReproduce the training run with\n\n```bash\n{training['command']}\n```\n"
        if training.get("command")
        else ""
    )
    return f"## What it is\n\n| | |\n|---|---|\n{table}\n{command}"


def _compute_time(training: Mapping[str, Any]) -> tuple[str, str]:
    """("GPU time", "1.25 h on 1x NVIDIA H100 ...") from the wall time and device sslzoo-train records."""
    device = str(training.get("device") or "")
    label = "Compute time" if not device or device.startswith("cpu") else "GPU time"
    seconds = training.get("wall_time_s")
    if not isinstance(seconds, (int, float)):
        return label, "not recorded"
    on = f" on {training.get('world_size', 1)}x {device}" if device else ""
    steps = training.get("train_seconds")
    in_steps = f" ({steps / 3600:.2f} h in training steps)" if isinstance(steps, (int, float)) else ""
    return label, f"{seconds / 3600:.2f} h wall-clock{on}{in_steps}"


def _epochs(training: Mapping[str, Any]) -> Any:
    epochs, planned = plain_number(training.get("epochs", "not recorded")), training.get("planned_epochs")
    return f"{epochs} (of {planned} planned)" if planned is not None and planned != epochs else epochs


def _floats(values: Any) -> str:
    return "(" + ", ".join(f"{value:g}" for value in values) + ")" if values else "not recorded"


_PIL_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST", "lanczos": "LANCZOS"}


def _usage(facts: Mapping[str, Any], repo_id: str | None, files: Sequence[str]) -> str:
    name, size, width = facts["name"], facts.get("input_size"), facts.get("num_features")
    in_registry = bool(facts.get("registered")) and facts.get("weights") not in (None, "none")
    if repo_id:
        load_ref = f"hf-hub:{repo_id}"
    elif in_registry:
        load_ref = name
    else:
        load_ref = "path/to/this/folder"
    parts = ["## How to use\n"]
    if WEIGHTS_NAME in files or INDEX_NAME in files or in_registry:
        parts.append(
            "With sslzoo (`pip install sslzoo`), preprocessing included:\n\n```python\nimport sslzoo\n\n"
            f'encoder = sslzoo.load("{load_ref}")\n'
            f'features = encoder.embed(["cat.png", "dog.png"])  # (2, {width}), L2-normalised\n```\n'
        )
    if ONNX_NAME in files and repo_id:
        locate = (
            "from huggingface_hub import hf_hub_download\n\n"
            f'path = hf_hub_download("{repo_id}", "{ONNX_NAME}")\n'
        )
    elif ONNX_NAME in files:
        locate = f'path = "{ONNX_NAME}"  # in this folder\n'
    else:
        locate = f'path = "{name}/{ONNX_NAME}"  # written by: sslzoo-export {name} --to onnx --out {name}\n'
    resample = _PIL_FILTERS.get(str(facts.get("interpolation")), "BILINEAR")
    parts.append(
        "With ONNX Runtime only (numpy and Pillow; the graph's metadata holds the same constants):\n\n"
        "```python\nimport numpy as np\nimport onnxruntime as ort\nfrom PIL import Image\n"
        f"{locate}"
        'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])\n'
        f"size = {size}\n"
        f"mean = np.array({list(facts.get('mean') or [])}, dtype=np.float32)\n"
        f"std = np.array({list(facts.get('std') or [])}, dtype=np.float32)\n\n"
        'image = Image.open("cat.png").convert("RGB")\n'
        "scale = size / min(image.size)  # resize the short side, then centre-crop\n"
        "image = image.resize(\n"
        "    (max(size, round(image.width * scale)), max(size, round(image.height * scale))), "
        f"Image.Resampling.{resample}\n)\n"
        "left, top = (image.width - size) // 2, (image.height - size) // 2\n"
        "pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255\n"
        "batch = ((pixels - mean) / std).transpose(2, 0, 1)[None]  # (1, 3, size, size); any batch works\n"
        f'(features,) = session.run(["features"], {{"images": batch}})  # (1, {width}), not normalised\n```\n'
    )
    present = [file for file in (WEIGHTS_NAME, INDEX_NAME, ONNX_NAME, INT8_NAME, RESULTS_NAME) if file in files]
    if present:
        shards = sum(1 for file in files if file.endswith(".safetensors") and file != WEIGHTS_NAME)
        described = {
            WEIGHTS_NAME: "the weights (torchvision ResNet parameter names, no `fc`), with `config.json`",
            INDEX_NAME: f"which of the {shards} safetensors shards (`model-*-of-*.safetensors`) holds each "
            "weight (torchvision ResNet parameter names, no `fc`); `sslzoo.load` and `transformers` read it",
            ONNX_NAME: "one-file ONNX graph, input `images` (N, 3, H, W) float32 normalised, "
            "output `features` (N, D)",
            INT8_NAME: "the same graph quantized to int8 for fast CPU serving (below)",
            RESULTS_NAME: "the measured results and the export's parity check, as JSON",
        }
        parts.append("Files: " + "; ".join(f"`{file}`: {described[file]}" for file in present) + ".\n")
    return "\n".join(parts)


#: Figures a card shows when they sit beside it as `<name>-<key>.png`: (heading, what it shows).
FIGURES = {
    "per-class": (
        "Accuracy per class",
        "Confusion matrix and accuracy per class of the kNN classifier (k=200, t=0.1) on the test split, "
        "drawn by `sslzoo-eval {name} --dataset {dataset} --figure FILE.png` (its title gives the bank and "
        "test images it was measured with)",
    ),
    "map": (
        "Map of the embeddings",
        "The embedded 1,000-image demo gallery's features projected onto their two principal components, "
        "coloured by class, as the demo (`sslzoo-serve`) shows it",
    ),
}


def _figures_section(figures: Mapping[str, str], facts: Mapping[str, Any]) -> str:
    parts = []
    for kind, path in figures.items():
        heading, caption = FIGURES[kind]
        caption = caption.format(name=facts["name"], dataset=_dataset(facts, evaluated=True).key)
        parts.append(f"## {heading}\n\n![{heading}]({path})\n\n{caption}.\n")
    return "\n".join(parts)


def _int8_section(facts: Mapping[str, Any], files: Sequence[str]) -> str:
    """The int8 graph for CPU serving: how it was made and its kNN beside the fp32 graph's."""
    record = facts.get("int8") or (facts.get("serving") or {}).get("int8")
    if not record:
        return ""
    name = facts["name"]
    calibration = record.get("calibration") or {}
    where = (
        f"`{INT8_NAME}` in this folder"
        if INT8_NAME in files
        else f"`sslzoo-export {name} --to onnx --quantize int8` writes `{INT8_NAME}`"
    )
    lines = [
        "## Fast CPU serving (int8)\n",
        f"{where}: ONNX Runtime static quantization ({record.get('format')}; activations "
        f"{record.get('activations')}; weights {record.get('weights')}), calibrated on "
        f"{calibration.get('images')} images ({calibration.get('source')}). "
        f"`sslzoo-serve --backend onnx-int8` and `sslzoo-embed --backend onnx-int8` run it on the CPU "
        "(AVX2/AVX-512 integer kernels); `benchmarks/serve_latency.py` times it against fp32 ONNX Runtime "
        "and eager PyTorch at batch 1, 16 and 64. Its features differ slightly from fp32: build a "
        "retrieval index with the backend that searches it.\n",
    ]
    knn = record.get("gallery_knn")
    if knn:
        rows = [
            f"| {knn_key_label(key)} | {knn['fp32'][key]:.2f} | {knn['int8'][key]:.2f} |"
            for key in knn["fp32"]
        ]
        same = " (the images it was calibrated on)" if knn.get("calibrated_on_these_images") else ""
        lines.append(
            f"kNN top-1 (%) on the embedded gallery {knn['gallery']}{same}: {knn['images']:,} CIFAR-10 "
            "test images, each voted on by all the others (leave-one-out), features from each graph.\n\n"
            "| protocol | fp32 ONNX | int8 ONNX |\n|---|---|---|\n" + "\n".join(rows) + "\n"
        )
    return "\n".join(lines)


#: What each linear-probe protocol is, for the card's evaluation section.
PROBE_DESCRIPTIONS = {
    "fast": "a linear classifier trained on frozen, cached, un-augmented features of the training split, "
    "standardised with its mean and std",
    "reference": "the papers' protocol (SupContrast and SelfCon `main_linear.py`): a linear classifier "
    "trained on the frozen encoder's features (eval mode) of a fresh random resized crop and horizontal "
    "flip of every training image in every epoch, plain SGD with a step decay",
}
_NOT_SETTINGS = ("top1", "top5", "protocol", "features", "source")


def _evaluation(facts: Mapping[str, Any]) -> str:
    metrics = facts.get("metrics") or {}
    linear = metrics.get("linear") or []
    bullets = []
    for entry in linear:
        protocol = entry.get("protocol")
        settings = ", ".join(f"{key} {_setting(value)}" for key, value in entry.items() if key not in _NOT_SETTINGS)
        what = PROBE_DESCRIPTIONS.get(protocol, "a linear classifier on frozen features; its protocol was not recorded")
        source = f"; settings from {entry['source']}" if entry.get("source") else ""
        bullets.append(
            f"- **Linear probe, {protocol or 'unnamed'} protocol**: {what}"
            f"{' (' + settings + ')' if settings else ''}{source}; top-1 and top-5 on the test split.\n"
        )
    if not linear:
        bullets.append(
            f"- **Linear probe**: not measured. `fast`: {PROBE_DESCRIPTIONS['fast']}; `reference`: "
            f"{PROBE_DESCRIPTIONS['reference']}.\n"
        )
    elif len({entry.get("protocol") for entry in linear}) > 1:
        bullets.append("- The protocols' numbers differ by design: compare each only with the same protocol's.\n")
    sizes = ""
    if metrics.get("train_images") and metrics.get("test_images"):
        uses = "kNN bank and probe training set" if linear else "kNN bank"
        sizes = (
            f"- Measured with {metrics['train_images']:,} training images ({uses}) "
            f"and {metrics['test_images']:,} test images.\n"
        )
    protocols = {entry.get("protocol") for entry in linear}
    flag = " --linear-protocol both" if {"fast", "reference"} <= protocols else (
        " --linear-protocol reference" if "reference" in protocols else ""
    )
    return (
        "## How it was evaluated\n\n"
        "- **kNN**: every training image, with test-time preprocessing and no augmentation, is embedded "
        "and L2-normalised to form the memory bank. Each test image votes with its k most cosine-similar "
        "bank features, weighted by exp(similarity / t); the class with the largest sum wins. k=200, t=0.1 "
        "is the standard monitor (InstDisc, MoCo, lightly); k=20, t=0.07 is solo-learn's.\n"
        + "".join(bullets)
        + "- Numbers are from the final weights of a single run, not the best epoch. "
        f"`sslzoo-eval {facts['name']} --dataset {_dataset(facts, evaluated=True).key}{flag}` "
        "measures them again.\n"
        f"{sizes}"
    )


def _setting(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value) + ")"
    return str(plain_number(value))


def _limitations(facts: Mapping[str, Any], dataset: DatasetFacts) -> str:
    size = facts.get("input_size")
    notes = [
        f"Pretrained on {dataset.title} only, at {size}x{size} pixels: features suit small natural images of "
        "similar content; larger or different images are resized to this size and lose detail.",
        "One training run with one seed: differences of a few tenths of a point between zoo models are "
        "within run-to-run noise.",
        "kNN and linear accuracies measure features on this dataset's own test split, not transfer.",
    ]
    if facts.get("supervised"):
        notes.append(
            "Trained with the class labels: compare it with supervised baselines, "
            "not with label-free methods."
        )
    if facts.get("method") in INTERPRETED:
        notes.append(
            f"No official code exists for {facts['method']}: sslzoo implements its reading of the paper, "
            f"documented in `sslzoo.methods` ({facts['method']}); results may differ from the authors'."
        )
    if not (facts.get("metrics") or {}):
        notes.append("Not yet measured: treat these weights as unvalidated until results are recorded.")
    return "## Limitations\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def _citation(facts: Mapping[str, Any]) -> str:
    arxiv = ARXIV.get(str(facts.get("method")))
    reference = " ".join(part for part in (facts.get("paper"), f"(arXiv:{arxiv})" if arxiv else None) if part)
    intro = f"Cite the method's paper, {reference}, and sslzoo:" if reference else "Cite sslzoo:"
    return f"## Citation\n\n{intro}\n\n```bibtex\n{SSLZOO_BIBTEX}\n```\n"
