"""Training curves (loss and kNN accuracy per epoch) from a run's `metrics.jsonl`, as a PNG for its card.

The log holds one JSON object per line, as `sslzoo-train` writes it (one line per epoch with
`epoch`, `loss` and, on monitored epochs, `knn_top1` in percent). Lines with an `epoch` and a loss
(`loss`, `train_loss` or `epoch_loss`) give the loss curve, averaged per epoch so step-level logs
plot the same way; lines with a kNN accuracy in percent (`knn_top1`, or a key such as
`knn_acc1`) give the accuracy curve, the last value of each epoch. Matplotlib draws off-screen (Agg), so
this runs on servers with no display.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sslzoo.errors import ConfigError
from sslzoo.extras import require

LOSS_KEYS = ("loss", "train_loss", "epoch_loss")
_KNN_KEY = re.compile(r"knn.*(top-?1|acc(uracy)?1?)$", re.IGNORECASE)


@dataclass
class Curves:
    """Per-epoch series read from a metrics log. kNN accuracies are in percent."""

    loss_epochs: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    knn_epochs: list[float] = field(default_factory=list)
    knn_top1: list[float] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.loss or self.knn_top1)


def read_curves(metrics_log: str | os.PathLike) -> Curves:
    """Parse `metrics.jsonl` into per-epoch loss and kNN series (empty series where the log has none)."""
    path = Path(metrics_log)
    losses: dict[float, list[float]] = defaultdict(list)
    knn: dict[float, float] = {}
    knn_key = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: line {number} is not JSON ({error.msg}).") from error
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), (int, float)):
            continue
        epoch = record["epoch"]
        loss_key = next((key for key in LOSS_KEYS if _is_number(record.get(key))), None)
        if loss_key:
            losses[epoch].append(float(record[loss_key]))
        knn_key = knn_key or next(
            (key for key in record if _KNN_KEY.search(key) and _is_number(record[key])), None
        )
        if knn_key and _is_number(record.get(knn_key)):
            knn[epoch] = float(record[knn_key])
    curves = Curves()
    for epoch in sorted(losses):
        curves.loss_epochs.append(epoch)
        curves.loss.append(sum(losses[epoch]) / len(losses[epoch]))
    curves.knn_epochs = sorted(knn)
    curves.knn_top1 = [knn[epoch] for epoch in curves.knn_epochs]
    return curves


def plot_training_curves(
    metrics_log: str | os.PathLike, out_png: str | os.PathLike, title: str | None = None
) -> Path | None:
    """Draw loss and kNN top-1 per epoch into `out_png`; None (and no file) when the log has neither."""
    curves = read_curves(metrics_log)
    if not curves:
        return None
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "export", "Drawing training curves").FigureCanvasAgg
    Figure = require("matplotlib.figure", "export", "Drawing training curves").Figure
    MaxNLocator = require("matplotlib.ticker", "export", "Drawing training curves").MaxNLocator
    panels = [(curves.loss_epochs, curves.loss, "training loss", "loss")] if curves.loss else []
    if curves.knn_top1:
        panels.append((curves.knn_epochs, curves.knn_top1, "kNN top-1 (test split)", "top-1 (%)"))
    figure = Figure(figsize=(4.2 * len(panels), 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for index, (epochs, values, panel_title, ylabel) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        axes.plot(epochs, values, marker="." if len(values) < 40 else None)
        axes.set(title=panel_title, xlabel="epoch", ylabel=ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            axes.set_xticks(epochs)
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png")
    return out_png


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
