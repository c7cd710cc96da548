"""The training engine: one loop that drives every method, on a CPU, a GPU or several (torchrun).

What it guarantees:
- views are made on the training device from uint8 batches (`augment.py`), never in workers,
  for in-memory datasets; image folders stream through a DataLoader into the same augmentation;
- the data order is a function of (seed, epoch) and every random state is checkpointed, so a run
  killed and resumed on a CPU ends with the same weights as one that never stopped;
- `OUT/checkpoint.pt` is replaced atomically at every epoch end, every `checkpoint_minutes`, and on
  SIGTERM or when a `stop_when` hook asks (then the run stops cleanly); it carries a checksum, and
  the one before it is kept; `OUT/metrics.jsonl` gets one line per epoch;
- one process trains in a run folder at a time (`run_folder.RunFolder.lock`), and a configuration
  is checked against every limit (`recipes.LIMITS`) before anything loads;
- at the end, `OUT/model/` is the exported `Encoder` with its provenance, readable by `sslzoo.load`.

Under torchrun each process takes its slice of every global batch (the recipe's batch size is
the global one); only rank 0 writes files and measures kNN.

The parts live in their own modules: `runtime` (device, precision, processes, SIGTERM), `feeding`
(data order and batches), `stepping` (one optimisation step), `monitor` (kNN), `metrics`,
`run_folder` (the files) and `provenance`. `Trainer` below only puts them together.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import sslzoo
from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.evaluation import KNN_PROTOCOLS
from sslzoo.progress import progress_bar

from .checkpoint import rng_state, set_rng_state
from .datasets import ImageTensors
from .feeding import BatchFeeder, DatasetSource, local_batch_size, worker_count
from .metrics import EpochStats, RunClock, epoch_record
from .monitor import HEADLINE, KnnMonitor
from .provenance import training_provenance
from .recipes import TrainConfig, config_from_json, replace_checked
from .run_folder import RunFolder
from .runtime import Runtime, StopRequest, seed_everything
from .stepping import Stepper

logger = logging.getLogger("sslzoo.train")

#: Settings a resumed run may change: they do not alter the weights a step computes
#: (`epochs` does, by stretching the schedule; it is allowed to extend a finished run).
RESUME_OVERRIDABLE = (
    "device",
    "precision",
    "compile",
    "max_steps",
    "workers",
    "checkpoint_minutes",
    "log_every",
    "data_dir",
    "download",
    "knn_every",
    "knn_bank_size",
    "knn_test_size",
    "epochs",
)

MethodFactory = Callable[..., nn.Module]
#: Called after every optimiser step with (step, end_step); True stops the run after a checkpoint.
StopHook = Callable[[int, int], bool]
_MISSING = object()


@dataclass
class TrainResult:
    """What a call to `train` / `resume` did."""

    out: Path
    step: int
    total_steps: int
    finished: bool  # reached the last step or --max-steps; OUT/model/ was written
    interrupted: bool  # stopped (SIGTERM or the stop hook) after writing a checkpoint
    metrics: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None
    stop_reason: str | None = None  # "sigterm" or "budget" when interrupted
    end_step: int = 0  # the step training stops at: total_steps, or --max-steps


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    command: str = "",
    method_factory: MethodFactory | None = None,
    progress: bool | str = True,
    stop_when: StopHook | None = None,
) -> TrainResult:
    """Train from scratch into `out` (which must not already hold a run).

    `progress` shows a tqdm bar (a string names it); `stop_when(step, end_step)` may end the run
    early and resumably, as SIGTERM does (a time budget uses it).
    """
    if method_factory is None:  # a configuration built in Python gets the checks of a resolved recipe
        config = replace_checked(config, {})
    folder = RunFolder(out)
    with folder.lock():
        existing = folder.holds_run()
        if existing is not None:
            raise ConfigError(
                f"{folder.path} already holds a run ({existing} exists). Continue it with --resume, "
                f"or choose another --out."
            )
        return Trainer(config, folder, None, command, method_factory, progress, stop_when).run()


def resume(
    out: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    *,
    command: str = "",
    method_factory: MethodFactory | None = None,
    progress: bool | str = True,
    stop_when: StopHook | None = None,
    from_previous: bool = False,
) -> TrainResult:
    """Continue the run in `out` from its checkpoint, with its own configuration.

    `overrides` may change only the runtime settings in `RESUME_OVERRIDABLE`. A damaged
    checkpoint is refused (nothing in `out` is written); `from_previous` then continues from the
    checkpoint before it, `checkpoint.prev.pt`, keeping the damaged file aside.
    """
    folder = RunFolder(out)
    with folder.lock():
        checkpoint = folder.load_previous_checkpoint() if from_previous else folder.load_checkpoint()
        config = config_from_json(checkpoint["config"])
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        refused = sorted(
            k
            for k, v in overrides.items()
            if k not in RESUME_OVERRIDABLE and getattr(config, k, _MISSING) != v
        )
        if refused:
            stored = ", ".join(f"{k}={getattr(config, k, '(not a top-level key)')!r}" for k in refused)
            raise ConfigError(
                f"--resume continues the run as it was configured; {refused} cannot change "
                f"(the checkpoint has {stored}). Start a new run in another --out to change them."
            )
        config = replace_checked(config, {k: v for k, v in overrides.items() if k in RESUME_OVERRIDABLE})
        if from_previous:
            folder.put_previous_checkpoint_in_place()
        return Trainer(config, folder, checkpoint, command, method_factory, progress, stop_when).run()


class Trainer:
    """One training run: `run()` builds the parts, restores the checkpoint if any, and loops."""

    def __init__(
        self,
        config: TrainConfig,
        folder: RunFolder,
        checkpoint: dict[str, Any] | None,
        command: str = "",
        method_factory: MethodFactory | None = None,
        progress: bool | str = True,
        stop_when: StopHook | None = None,
    ):
        self.config = config
        self.folder = folder
        self.checkpoint = checkpoint
        self.command = command
        self.method_factory = method_factory
        self.progress = progress
        self.stop_when = stop_when

    def run(self) -> TrainResult:
        self.runtime = Runtime.start(self.config.device, self.config.precision)
        try:
            self._build()
            with StopRequest(self.stop_when) as stop:
                return self._loop(stop)
        finally:
            self.runtime.close()

    # ------------------------------------------------------------------------------ the loop
    def _loop(self, stop: StopRequest) -> TrainResult:
        self._begin()
        per_epoch, config = self.feeder.steps_per_epoch, self.config
        bar = self._progress_bar()
        last_checkpoint = time.monotonic()
        self.stepper.model.train()
        while self.step < self.end_step:
            epoch = self.step // per_epoch
            tick = time.perf_counter()  # step time includes waiting for the batch (DataLoader streams)
            for images, labels in self.feeder.batches(epoch, self.step % per_epoch):
                loss, logs = self.stepper(self.step, images, labels)
                self.stats.add(loss, logs)
                self.step += 1
                bar.update(1)
                logging_step = self.step % config.log_every == 0
                if logging_step or self.step % per_epoch == 0 or self.step == self.end_step:
                    self.runtime.sync()  # so the step times include the GPU work queued so far
                now = time.perf_counter()
                self.stats.seconds += now - tick
                due = time.monotonic() - last_checkpoint > 60 * config.checkpoint_minutes
                stop_now, checkpoint_now = self._agree(stop.check(self.step, self.end_step), due)
                if logging_step or self.runtime.device.type != "cuda":  # reading the loss syncs a GPU
                    bar.set_postfix(self._postfix(epoch), refresh=False)
                if stop_now:
                    bar.close()
                    return self._stop(stop.reason or "sigterm")
                if checkpoint_now and self.step % per_epoch:
                    self._save()
                    last_checkpoint = time.monotonic()
                if self.step >= self.end_step:
                    break
                tick = time.perf_counter() if checkpoint_now else now
            if self.step % per_epoch == 0:
                self._end_epoch(epoch)
                bar.set_postfix(self._postfix(epoch), refresh=True)
                last_checkpoint = time.monotonic()
        bar.close()
        return self._finish()

    def _agree(self, stop: bool, checkpoint_due: bool) -> tuple[bool, bool]:
        """Stop / checkpoint decisions every process takes at the same step (checked every log_every steps)."""
        if self.runtime.world == 1:
            return stop, checkpoint_due
        if self.step % self.config.log_every and self.step != self.end_step:
            return False, False
        stop, checkpoint_due = self.runtime.agree(stop, checkpoint_due and self.runtime.is_main)
        return stop, checkpoint_due

    # ------------------------------------------------------------------- start, epochs, end
    def _begin(self) -> None:
        """Write config.json, warn about a warm-up longer than half the run, log a pending epoch end."""
        config = self.config
        if self.runtime.is_main:
            self.folder.write_config(self._config_json())
            if self.checkpoint is None:
                self.folder.clear_metrics()
            if self.warmup_steps * 2 > self.total_steps > 0:
                logger.warning(
                    "Warm-up takes %d of the run's %d steps (warmup_epochs=%s of %d epochs); for a short run "
                    "lower it, e.g. --set warmup_epochs=%d.",
                    self.warmup_steps,
                    self.total_steps,
                    config.warmup_epochs,
                    config.epochs,
                    max(0, config.epochs // 10),
                )
        per_epoch = self.feeder.steps_per_epoch
        if self.stats.steps and self.step % per_epoch == 0:  # stopped right after an epoch's last step
            self._end_epoch(self.step // per_epoch - 1)

    def _end_epoch(self, epoch: int) -> None:
        record = self._epoch_record()
        final = self.step >= self.end_step
        every = self.config.knn_every
        if self.monitor is not None and ((epoch + 1) % every == 0 or final):
            # The last epoch measures every protocol once, for the exported metrics as well.
            knn = self.monitor.measure(self.method.encoder, KNN_PROTOCOLS if final else KNN_PROTOCOLS[:1])
            self.final_knn_measured = final
            if knn is not None:
                self.last_knn = record["knn_top1"] = knn[HEADLINE]["top1"]
                if final:
                    self.final_knn = knn
        self._log(record)
        self.stats = EpochStats()
        self._save()

    def _stop(self, reason: str) -> TrainResult:
        self._save()
        if self.runtime.is_main:
            why = "SIGTERM" if reason == "sigterm" else "its stop hook (time budget)"
            logger.warning(
                "Stopped by %s at step %d; checkpoint written to %s.", why, self.step, self.folder.path
            )
        return TrainResult(
            self.folder.path,
            self.step,
            self.total_steps,
            finished=False,
            interrupted=True,
            stop_reason=reason,
            end_step=self.end_step,
        )

    def _finish(self) -> TrainResult:
        knn = self.final_knn
        if self.monitor is not None and not self.final_knn_measured:
            knn = self.monitor.measure(self.method.encoder)
        if self.stats.steps:  # a run cut short by --max-steps mid-epoch still logs its last steps
            record = self._epoch_record()
            if knn is not None:
                self.last_knn = record["knn_top1"] = knn[HEADLINE]["top1"]
            self._log(record)
            self.stats = EpochStats()
        metrics = self.monitor.summary(knn) if self.monitor is not None and knn is not None else {}
        self._save()
        model_dir = None
        if self.runtime.is_main:
            model_dir = self.folder.publish_model(self._exported_encoder(metrics))
            logger.info("Model written to %s", model_dir)
        self.runtime.barrier()
        return TrainResult(
            self.folder.path,
            self.step,
            self.total_steps,
            finished=True,
            interrupted=False,
            metrics=metrics,
            model_dir=model_dir,
            end_step=self.end_step,
        )

    # ------------------------------------------------------------------------------ building
    def _build(self) -> None:
        config, runtime = self.config, self.runtime
        self.local_batch = local_batch_size(config.batch_size, runtime.world)
        if runtime.is_main:
            self.folder.create()
        source = DatasetSource(config, runtime)
        pretraining = source.load("pretrain", for_training=True)
        if isinstance(pretraining, ImageTensors):
            pretraining = pretraining.to(runtime.device)  # shared by the batches and the kNN bank
        self.monitor = KnnMonitor.for_run(config, source, pretraining, runtime, worker_count(config))
        seed_everything(config.seed)
        self.method = self._build_method()
        if getattr(self.method, "supervised", False) and isinstance(pretraining, ImageTensors):
            pretraining = pretraining.labelled()
        self.feeder = BatchFeeder(pretraining, config.batch_size, config.seed, runtime, worker_count(config))
        per_epoch = self.feeder.steps_per_epoch
        if per_epoch == 0:
            raise ConfigError(
                f"{config.dataset} has {self.feeder.num_images} training images, fewer than one batch of "
                f"{config.batch_size}; lower --batch-size."
            )
        self.total_steps = config.epochs * per_epoch
        self.end_step = min(self.total_steps, config.max_steps) if config.max_steps > 0 else self.total_steps
        self.warmup_steps = min(self.total_steps, round(config.warmup_epochs * per_epoch))
        self.stepper = Stepper(
            self.method, config, runtime, self.total_steps, self.warmup_steps, self._channels_last
        )
        self.step = 0
        self.clock = RunClock()
        self.stats = EpochStats()
        self.last_knn: float | None = None
        self.final_knn: dict[str, Any] | None = None  # rank 0's result of the last epoch's kNN
        self.final_knn_measured = False  # the same on every process, so all skip the same barriers
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        else:
            seed_everything(
                config.seed + 7919 * runtime.rank
            )  # views differ per process; rank 0 keeps `seed`
        self.stepper.wrap()

    @property
    def _channels_last(self) -> bool:
        # Measured on a 2-core CPU: channels_last slowed the 32 px ResNet-18 step, so it is CUDA-only.
        return self.config.channels_last and self.runtime.device.type == "cuda"

    def _build_method(self) -> nn.Module:
        config, device = self.config, self.runtime.device
        factory = self.method_factory
        hparams = dict(config.hparams)
        if factory is None:
            from sslzoo.methods import build_method as factory
            from sslzoo.methods import method_hparams

            accepted = method_hparams(config.method, config.plugins)
            # Batch fusion's weights must equal this run's per-process batch.
            if "fusion_batch_size" in accepted and "fusion_batch_size" not in hparams:
                hparams["fusion_batch_size"] = self.local_batch
        encoder = Encoder(
            backbone=config.backbone,
            stem=config.stem,
            input_size=config.input_size,
            mean=config.mean,
            std=config.std,
            interpolation=config.interpolation,
        )
        method = factory(config.method, encoder, plugins=list(config.plugins), **hparams)
        method.to(device)
        if self._channels_last:
            method.to(memory_format=torch.channels_last)
        if self.runtime.world > 1 and device.type == "cuda" and config.sync_batchnorm:
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        return method

    # ------------------------------------------------------------------------ checkpointing
    def _save(self) -> None:
        if not self.runtime.is_main:
            return
        self.folder.save_checkpoint(
            {
                "config": self.config.to_json(),
                "method": self.method.state_dict(),  # MomentumMethod's EMA rate rides in it (extra state)
                **self.stepper.state_dict(),  # optimizer, scaler, the views' generator
                "step": self.step,
                "epoch": self.step / self.feeder.steps_per_epoch,
                "rng": rng_state(),
                "epoch_stats": self.stats.state(),
                "train_seconds": self.clock.train_seconds,
                "wall_seconds": self.clock.wall_seconds(),
                "last_knn": self.last_knn,
                "world_size": self.runtime.world,
                "sslzoo_version": sslzoo.__version__,
            }
        )

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        runtime = self.runtime
        if checkpoint.get("world_size", 1) != runtime.world:
            logger.warning(
                "Checkpoint was written by %s process(es), resuming with %s: the global batch is the same, "
                "but the random views differ from an uninterrupted run.",
                checkpoint.get("world_size"),
                runtime.world,
            )
        try:
            self.method.load_state_dict(checkpoint["method"])
            self.stepper.load_state_dict(checkpoint)
        except (RuntimeError, ValueError, KeyError) as error:
            raise ConfigError(
                f"{self.folder.checkpoint} does not match this method's parameters ({error}). "
                f"Resume with the sslzoo version that wrote it, or start a new run."
            ) from error
        self.step = int(checkpoint["step"])
        self.clock = RunClock(
            float(checkpoint.get("train_seconds", 0.0)), float(checkpoint.get("wall_seconds", 0.0))
        )
        self.stats = EpochStats.from_state(checkpoint.get("epoch_stats", {}))
        self.last_knn = checkpoint.get("last_knn")
        if runtime.is_main:
            set_rng_state(checkpoint["rng"])
            self.folder.truncate_metrics(self.step)
        else:
            seed_everything(self.config.seed + 7919 * runtime.rank + self.step)

    # ------------------------------------------------------------------------------- output
    def _epoch_record(self) -> dict[str, Any]:
        return epoch_record(
            self.stats,
            self.clock,
            step=self.step,
            steps_per_epoch=self.feeder.steps_per_epoch,
            batch_size=self.config.batch_size,
            num_views=self.stepper.num_views,
            lr=self.stepper.current_lr,
        )

    def _log(self, record: dict[str, Any]) -> None:
        if self.runtime.is_main:
            self.folder.append_metrics(record)

    def _progress_bar(self) -> tqdm:
        """A bar on a terminal, a log line every half minute elsewhere (`sslzoo.progress`)."""
        name = self.progress if isinstance(self.progress, str) else "train"
        return progress_bar(
            total=self.end_step,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            desc=name,
            disable=not self.progress or not self.runtime.is_main,
        )

    def _postfix(self, epoch: int) -> dict[str, Any]:
        stats = self.stats
        postfix: dict[str, Any] = {"epoch": epoch + 1}
        if stats.steps:
            postfix["loss"] = f"{stats.mean_loss():.4f}"
            postfix["img/s"] = f"{stats.images_per_s(self.config.batch_size):.0f}"
        if self.last_knn is not None:
            postfix["knn"] = f"{self.last_knn:.2f}"
        return postfix

    def _exported_encoder(self, metrics: dict[str, Any]) -> Encoder:
        encoder = self.method.export_encoder()
        encoder.provenance = training_provenance(
            self.config,
            self.method,
            self.runtime,
            step=self.step,
            steps_per_epoch=self.feeder.steps_per_epoch,
            num_views=self.stepper.num_views,
            train_seconds=self.clock.train_seconds,
            wall_seconds=self.clock.wall_seconds(),
            metrics=metrics,
            command=self.command,
        )
        return encoder

    def _config_json(self) -> dict[str, Any]:
        data = self.config.to_json()
        data.update(
            steps_per_epoch=self.feeder.steps_per_epoch,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            world_size=self.runtime.world,
            local_batch=self.local_batch,
            resolved_device=str(self.runtime.device),
            resolved_precision=self.runtime.precision,
            num_views=self.stepper.num_views,
            train_images=self.feeder.num_images,
        )
        return data
