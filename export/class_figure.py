"""Per-class accuracy and the confusion matrix of an evaluation, as one PNG (`sslzoo-eval --figure`).

Reads the "per_class" part of an evaluation report (`sslzoo.evaluation.per_class_report`): the
confusion matrix, row-normalised so every true class sums to 100 %, beside a bar per class of its
accuracy. With more than 20 classes the matrix loses its tick labels and the bars are sorted, so
the figure stays legible for CIFAR-100. Matplotlib draws off-screen (Agg).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslzoo.errors import ConfigError
from sslzoo.extras import require

#: Class names of the labelled datasets whose order is fixed (label index -> name).
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "stl10": ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
}
LABELLED_TICKS = 20


def class_names(dataset: str, num_classes: int) -> list[str]:
    """The dataset's class names when sslzoo knows them, else the label indices as text."""
    names = CLASS_NAMES.get(dataset)
    return list(names) if names and len(names) == num_classes else [str(index) for index in range(num_classes)]


def plot_per_class(
    per_class: Mapping[str, Any], path: str | os.PathLike, *, names: Sequence[str], title: str = ""
) -> Path:
    """Write the confusion-matrix / per-class-accuracy figure of `per_class` to `path` (PNG)."""
    confusion = np.asarray(per_class["confusion"], dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] != len(names):
        raise ConfigError(f"per_class: expected a {len(names)}x{len(names)} confusion matrix.")
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(100 * confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    accuracy = np.array([np.nan if value is None else value for value in per_class["accuracy"]], dtype=float)
    count = len(names)
    labelled = count <= LABELLED_TICKS

    # Matplotlib comes with the export extra: `sslzoo-eval` itself runs on the core install.
    Figure = require("matplotlib.figure", "export", "Drawing the per-class figure").Figure
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "export", "Drawing the per-class figure").FigureCanvasAgg
    figure = Figure(figsize=(12, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    matrix, bars = figure.subplots(1, 2, width_ratios=[1.15, 1])
    image = matrix.imshow(rates, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=matrix, shrink=0.8, label="% of the true class")
    matrix.set_xlabel("predicted class")
    matrix.set_ylabel("true class")
    matrix.set_title("Confusion matrix (row-normalised)")
    if labelled:
        matrix.set_xticks(range(count), names, rotation=45, ha="right")
        matrix.set_yticks(range(count), names)
        for row in range(count):
            for column in range(count):
                if rates[row, column] >= 0.5:
                    colour = "white" if rates[row, column] > 55 else "black"
                    matrix.text(column, row, f"{rates[row, column]:.0f}", ha="center", va="center",
                                fontsize=7, color=colour)
    order = np.arange(count) if labelled else np.argsort(-np.nan_to_num(accuracy, nan=-1))
    mean = float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan")
    bars.barh(range(count), np.nan_to_num(accuracy[order]), color="#4C72B0")
    bars.axvline(mean, color="#C44E52", linestyle="--", label=f"mean of classes {mean:.1f} %")
    bars.set_xlim(0, 100)
    bars.invert_yaxis()
    bars.set_xlabel("top-1 accuracy (%)")
    bars.set_title("Accuracy per class")
    bars.legend(loc="lower right", fontsize=8)
    if labelled:
        bars.set_yticks(range(count), [names[index] for index in order])
        for position, value in enumerate(accuracy[order]):
            if np.isfinite(value):
                bars.text(min(value + 1, 88), position, f"{value:.1f}", va="center", fontsize=8)
    else:
        bars.set_yticks([])
        bars.set_ylabel(f"{count} classes, best to worst")
    figure.suptitle(f"{title} ({per_class['protocol']})" if title else str(per_class["protocol"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
