"""The run folder `OUT/`: every file a training run writes, and how each one is written safely.

    OUT/config.json      the resolved recipe plus derived values (steps per epoch, world size...)
    OUT/metrics.jsonl    one line per epoch
    OUT/checkpoint.pt    replaced atomically (see `checkpoint.py`)
    OUT/model/           the exported encoder, moved into place whole when training ends

Only rank 0 writes. Every file is replaced in one step (written beside it, then renamed), so a
run killed at any moment leaves the previous version of each file, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sslzoo.encoder import Encoder

from .checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
MODEL_DIR = "model"


class RunFolder:
    """Paths and atomic writers of one run's folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def model(self) -> Path:
        return self.path / MODEL_DIR

    def holds_run(self) -> Path | None:
        """The file that shows a run was started here (a checkpoint or a model), if any."""
        return next((path for path in (self.checkpoint, self.model) if path.exists()), None)

    def is_finished(self) -> bool:
        """Training ended and the model was exported (the model folder only appears complete)."""
        return (self.model / CONFIG_NAME).is_file()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------- checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint, state)

    def load_checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.checkpoint)

    # ------------------------------------------------------------------- config and metrics
    def write_config(self, data: dict[str, Any]) -> None:
        write_json_atomically(self.config, data)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint's `step` (the resumed run logs them again)."""
        if not self.metrics.is_file():
            return
        kept = [json.dumps(record) for record in self.read_metrics() if record["step"] <= step]
        tmp = self.metrics.with_name(f".{METRICS_NAME}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics)

    def clear_metrics(self) -> None:
        """A run that died before its first checkpoint may have left lines; a fresh start drops them."""
        self.metrics.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------- model
    def publish_model(self, encoder: Encoder) -> Path:
        """Write `encoder` (config.json + model.safetensors) to `OUT/model/` in one rename."""
        final, staging = self.model, self.path / f".{MODEL_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        encoder.save_pretrained(staging, config=encoder.config)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final


def write_json_atomically(path: Path, data: Any) -> None:
    """`data` as indented JSON, replacing `path` in one step."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
