"""The run folder `OUT/`: every file a training run writes, and how each one is written safely.

    OUT/config.json          the resolved recipe plus derived values (steps per epoch, world size...)
    OUT/metrics.jsonl        one line per epoch
    OUT/checkpoint.pt        replaced atomically, with a checksum (see `checkpoint.py`)
    OUT/checkpoint.prev.pt   the checkpoint before it, kept in case the last one is damaged
    OUT/model/               the exported encoder, moved into place whole when training ends
    OUT/.lock                held by the process training there (see `folder_lock.py`)

Only rank 0 writes, and it holds the folder's lock while it trains, so no second process can
train into the same folder. Every file is replaced in one step (written beside it, then
renamed), so a run killed at any moment leaves the previous version of each file, never half of
one; only `metrics.jsonl` is appended to, and a half-written last line is ignored when read.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch.distributed as dist

from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError

from .checkpoint import RESTART_HINT, CorruptCheckpointError, load_checkpoint, save_checkpoint
from .folder_lock import FolderLock

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_CHECKPOINT_NAME = "checkpoint.prev.pt"
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
    def previous_checkpoint(self) -> Path:
        return self.path / PREVIOUS_CHECKPOINT_NAME

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

    def lock(self) -> AbstractContextManager[Any]:
        """The folder's lock, for as long as a run trains here. Only the process that writes
        (rank 0 under torchrun) takes it; the others share its folder."""
        if not _writes_files():
            return nullcontext()
        return FolderLock(self.path, purpose="training")

    # ------------------------------------------------------------------------- checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace checkpoint.pt atomically, keeping the one it replaces as checkpoint.prev.pt."""
        save_checkpoint(self.checkpoint, state, previous=self.previous_checkpoint)

    def load_checkpoint(self) -> dict[str, Any]:
        """checkpoint.pt, verified; a damaged one is refused, offering checkpoint.prev.pt if intact."""
        previous = self.previous_checkpoint
        if not self.checkpoint.is_file():
            step = self._intact_previous_step()
            offer = self._previous_offer(step) if step is not None else " Start the run without --resume."
            raise ConfigError(f"Nothing to resume: {self.checkpoint} does not exist.{offer}")
        try:
            return load_checkpoint(self.checkpoint)
        except CorruptCheckpointError as error:
            step = self._intact_previous_step()
            if step is not None:  # no need to start over
                reason = error.reason.replace(f" {RESTART_HINT}", "")
                reason += self._previous_offer(step) + " That keeps the damaged file, renamed."
            elif previous.is_file():
                reason = f"{error.reason} The previous checkpoint, {previous}, is damaged too."
            else:
                reason = error.reason
            raise CorruptCheckpointError(self.checkpoint, reason) from error

    def load_previous_checkpoint(self) -> dict[str, Any]:
        """checkpoint.prev.pt, verified, for a run whose checkpoint.pt is damaged or missing (an
        intact checkpoint.pt is refused: it is the one to resume from)."""
        previous = self.previous_checkpoint
        if not previous.is_file():
            raise ConfigError(f"No previous checkpoint to resume from: {previous} does not exist.")
        state = load_checkpoint(previous)  # refuses a damaged one in turn
        if _writes_files() and self._checkpoint_is_intact():  # (other ranks may see it already replaced)
            raise ConfigError(
                f"{self.checkpoint} is intact: resume from it with --resume alone. (--from-previous is "
                "for a damaged checkpoint; to go back anyway, move checkpoint.pt out of the folder first.)"
            )
        return state

    def put_previous_checkpoint_in_place(self) -> None:
        """checkpoint.prev.pt becomes checkpoint.pt; a damaged checkpoint.pt is kept under a name
        of its own (`checkpoint.damaged-<time>.pt`), never deleted. Only the writing process does it."""
        if not _writes_files():
            return
        if self.checkpoint.exists():
            damaged = self.path / f"checkpoint.damaged-{time.strftime('%Y%m%d-%H%M%S')}.pt"
            os.replace(self.checkpoint, damaged)
        tmp = self.path / f".{CHECKPOINT_NAME}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.previous_checkpoint, tmp)
        except OSError:
            shutil.copyfile(self.previous_checkpoint, tmp)
        os.replace(tmp, self.checkpoint)

    def _checkpoint_is_intact(self) -> bool:
        try:
            load_checkpoint(self.checkpoint)
        except (CorruptCheckpointError, FileNotFoundError):
            return False
        return True

    def _intact_previous_step(self) -> int | None:
        """The step of checkpoint.prev.pt if it exists and passes its checks, else None."""
        try:
            return int(load_checkpoint(self.previous_checkpoint)["step"])
        except (CorruptCheckpointError, OSError):
            return None

    def _previous_offer(self, step: int) -> str:
        return (
            f" The previous checkpoint, {self.previous_checkpoint} (step {step}), is intact: continue from "
            f"it with `sslzoo-train --resume --from-previous --out {shlex.quote(str(self.path))}`."
        )

    # ------------------------------------------------------------------- config and metrics
    def write_config(self, data: dict[str, Any]) -> None:
        write_json_atomically(self.config, data)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The lines of metrics.jsonl; a half-written last line (its writer was killed) is left out."""
        if not self.metrics.is_file():
            return []
        lines = self.metrics.read_text().splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if number == len(lines):
                    break
                raise ConfigError(
                    f"{self.metrics}: line {number} is not JSON; repair or delete that line, then resume."
                ) from None
        return records

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint's `step` (the resumed run logs them again)."""
        if not self.metrics.is_file():
            return
        kept = [json.dumps(record) for record in self.read_metrics() if record["step"] <= step]
        _replace_with_text(self.metrics, "".join(line + "\n" for line in kept))

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
    _replace_with_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _replace_with_text(path: Path, text: str) -> None:
    """Write `text` beside `path`, flush it to disk, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _writes_files() -> bool:
    """True in the process that writes the run folder: rank 0 of torchrun's processes, or the only one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
