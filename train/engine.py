"""The training engine: one loop that drives every method, on a CPU, a GPU or several (torchrun).

What it guarantees:
- views are made on the training device from uint8 batches (`augment.py`), never in workers,
  for in-memory datasets; image folders stream through a DataLoader into the same augmentation;
- the data order is a function of (seed, epoch) and every random state is checkpointed, so a run
  killed and resumed on a CPU ends with the same weights as one that never stopped;
- `OUT/checkpoint.pt` is replaced atomically at every epoch end, every `checkpoint_minutes`, and on
  SIGTERM (then the run stops cleanly); `OUT/metrics.jsonl` gets one line per epoch;
- at the end, `OUT/model/` is the exported `Encoder` with its provenance, readable by `sslzoo.load`.

Under torchrun each process takes its slice of every global batch (the recipe's batch size is
the global one); only rank 0 writes files and measures kNN.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import sslzoo
from sslzoo import distributed as dist_utils
from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError
from sslzoo.evaluation import KNN_PROTOCOLS, extract_features, knn_evaluate, knn_key

from .augment import build_augmentation
from .checkpoint import (
    load_checkpoint,
    module_scalars,
    rng_state,
    save_checkpoint,
    set_module_scalars,
    set_rng_state,
)
from .datasets import ImageFolderFiles, ImageTensors, load_split
from .optim import build_optimizer, lr_at, set_lr
from .recipes import TrainConfig, config_from_json

logger = logging.getLogger("sslzoo.train")

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
MODEL_DIR = "model"

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
_MISSING = object()


@dataclass
class TrainResult:
    """What a call to `train` / `resume` did."""

    out: Path
    step: int
    total_steps: int
    finished: bool  # reached the last step or --max-steps; OUT/model/ was written
    interrupted: bool  # stopped by SIGTERM after writing a checkpoint
    metrics: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    command: str = "",
    method_factory: MethodFactory | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train from scratch into `out` (which must not already hold a run)."""
    out = Path(out)
    for name in (CHECKPOINT_NAME, MODEL_DIR):
        if (out / name).exists():
            raise ConfigError(
                f"{out} already holds a run ({out / name} exists). Continue it with --resume, "
                f"or choose another --out."
            )
    return _Run(config, out, None, command, method_factory, progress).run()


def resume(
    out: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    *,
    command: str = "",
    method_factory: MethodFactory | None = None,
    progress: bool = True,
) -> TrainResult:
    """Continue the run in `out` from its checkpoint, with its own configuration.

    `overrides` may change only the runtime settings in `RESUME_OVERRIDABLE`.
    """
    out = Path(out)
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(f"Nothing to resume: {path} does not exist. Start the run without --resume.")
    checkpoint = load_checkpoint(path)
    config = config_from_json(checkpoint["config"])
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    refused = sorted(
        k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and getattr(config, k, _MISSING) != v
    )
    if refused:
        stored = ", ".join(f"{k}={getattr(config, k, '(not a top-level key)')!r}" for k in refused)
        raise ConfigError(
            f"--resume continues the run as it was configured; {refused} cannot change "
            f"(the checkpoint has {stored}). Start a new run in another --out to change them."
        )
    config = replace(config, **{k: v for k, v in overrides.items() if k in RESUME_OVERRIDABLE})
    return _Run(config, out, checkpoint, command, method_factory, progress).run()


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything torch understands otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu.")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` -> bf16 on CUDA (autocast), fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU.")
    return name


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled image order of `epoch`: the same in every process and after every resume."""
    return torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random

    random.seed(seed)


class _StopRequest:
    """Turns SIGTERM into a flag the loop reads after each step (then checkpoint and exit)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _Run:
    """One training run's state; `run()` is the whole loop."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        checkpoint: dict[str, Any] | None,
        command: str,
        method_factory: MethodFactory | None,
        progress: bool,
    ):
        self.config = config
        self.out = out
        self.checkpoint = checkpoint
        self.command = command
        self.method_factory = method_factory
        self.progress = progress

    # ----------------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        config = self.config
        self.owns_process_group = _init_distributed(config.device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        self.precision = resolve_precision(config.precision, self.device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if config.batch_size % self.world:
            raise ConfigError(
                f"The global batch {config.batch_size} does not split over {self.world} processes; "
                f"choose a --batch-size divisible by {self.world}."
            )
        self.local_batch = config.batch_size // self.world
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)

        self._load_data()
        seed_everything(config.seed)
        self.method = self._build_method()
        self.supervised = bool(getattr(self.method, "supervised", False))
        if self.supervised and isinstance(self.train_data, ImageTensors):
            self.train_data = self.train_data.labelled()
        self.num_images = len(self.train_data)
        self.steps_per_epoch = self.num_images // config.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{config.dataset} has {self.num_images} training images, fewer than one batch of "
                f"{config.batch_size}; lower --batch-size."
            )
        self.total_steps = config.epochs * self.steps_per_epoch
        self.end_step = min(self.total_steps, config.max_steps) if config.max_steps > 0 else self.total_steps
        self.warmup_steps = min(self.total_steps, round(config.warmup_epochs * self.steps_per_epoch))
        self.num_views = int(getattr(self.method, "num_views", 2))
        self.augment = build_augmentation(replace(config, channels_last=self._channels_last), self.num_views)
        self.augment.to(self.device)
        self.optimizer = build_optimizer(self.method.param_groups(config.weight_decay), config, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

        self.step = 0
        self.train_seconds = 0.0  # time inside training steps, of the epochs already logged
        self.wall_seconds_before = 0.0  # wall time of the run before this process (resumed runs)
        self.wall_start = time.monotonic()
        self.epoch_stats = _EpochStats()
        self.last_knn: float | None = None
        self.final_knn: dict[str, Any] | None = None  # rank 0's result of the last epoch's kNN
        self.final_knn_measured = False  # the same on every process, so all skip the same barriers
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        else:
            seed_everything(config.seed + 7919 * self.rank)  # views differ per process; rank 0 keeps `seed`
        self.model = self._wrap(self.method)

    @property
    def _workers(self) -> int:
        return min(self.config.workers, os.cpu_count() or 1)

    @property
    def _channels_last(self) -> bool:
        # Measured on a 2-core CPU: channels_last slowed the 32 px ResNet-18 step, so it is CUDA-only.
        return self.config.channels_last and self.device.type == "cuda"

    def _load_data(self) -> None:
        config = self.config
        common: dict[str, Any] = {
            "data_dir": config.data_dir,
            "download": config.download and self.rank == 0,
            "input_size": config.input_size,
            "fake_size": config.fake_size,
            "fake_test_size": config.fake_test_size,
        }
        if config.download and self.world > 1:  # rank 0 downloads, the others wait, then read
            if self.rank == 0:
                load_split(config.dataset, "pretrain", **common)
            dist.barrier()
            common["download"] = False
        self.train_data = load_split(config.dataset, "pretrain", for_training=True, **common)
        if isinstance(self.train_data, ImageTensors):
            self.train_data = self.train_data.to(self.device)
        self.knn_data: tuple[Any, Any] | None = None
        if config.knn_every > 0 and self.rank == 0:
            if config.dataset == "stl10" or not isinstance(self.train_data, ImageTensors):
                bank = load_split(config.dataset, "train", **common)
            else:
                bank = self.train_data  # CIFAR, fake: the pretraining images are the labelled train split
            test = load_split(config.dataset, "test", **common)
            if isinstance(bank, ImageTensors):
                bank = bank.labelled().subset(config.knn_bank_size, seed=1).to(self.device)
                test = test.subset(config.knn_test_size, seed=2).to(self.device)
            self.knn_data = (bank, test)
            if self.device.type == "cpu" and len(bank) + len(test) > 20_000:
                logger.info(
                    "The kNN monitor embeds %d images each time it runs on this CPU; "
                    "--set knn_bank_size=5000 --set knn_test_size=1000 makes it much cheaper.",
                    len(bank) + len(test),
                )

    def _build_method(self) -> nn.Module:
        config = self.config
        factory = self.method_factory
        hparams = dict(config.hparams)
        if factory is None:
            from sslzoo.methods import build_method as factory
            from sslzoo.methods import method_hparams

            accepted = method_hparams(config.method, config.plugins)
            for key, value in self._batch_dependent_hparams().items():
                if key in accepted and key not in hparams:
                    hparams[key] = value
        encoder = Encoder(
            backbone=config.backbone,
            stem=config.stem,
            input_size=config.input_size,
            mean=config.mean,
            std=config.std,
            interpolation=config.interpolation,
        )
        method = factory(config.method, encoder, plugins=list(config.plugins), **hparams)
        method.to(self.device)
        if self._channels_last:
            method.to(memory_format=torch.channels_last)
        if self.world > 1 and self.device.type == "cuda" and config.sync_batchnorm:
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        return method

    def _batch_dependent_hparams(self) -> dict[str, Any]:
        """Hyperparameters that must equal this run's per-process batch (batch fusion's weights)."""
        return {"fusion_batch_size": self.local_batch}

    def _wrap(self, method: nn.Module) -> nn.Module:
        model = method
        if self.world > 1:
            model = nn.parallel.DistributedDataParallel(
                method, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.config.compile:
            model = torch.compile(model)
        return model

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("world_size", 1) != self.world:
            logger.warning(
                "Checkpoint was written by %s process(es), resuming with %s: the global batch is the same, "
                "but the random views differ from an uninterrupted run.",
                checkpoint.get("world_size"),
                self.world,
            )
        try:
            self.method.load_state_dict(checkpoint["method"])
            set_module_scalars(self.method, checkpoint.get("method_scalars", {}))
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ConfigError(
                f"{self.out / CHECKPOINT_NAME} does not match this method's parameters ({error}). "
                f"Resume with the sslzoo version that wrote it, or start a new run."
            ) from error
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.step = int(checkpoint["step"])
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        self.wall_seconds_before = float(checkpoint.get("wall_seconds", 0.0))
        self.epoch_stats = _EpochStats.from_state(checkpoint.get("epoch_stats", {}), self.device)
        self.last_knn = checkpoint.get("last_knn")
        if self.rank == 0:
            set_rng_state(checkpoint["rng"])
        else:
            seed_everything(self.config.seed + 7919 * self.rank + self.step)
        if self.rank == 0:
            _truncate_metrics(self.out / METRICS_NAME, self.step)

    # ------------------------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        try:
            self._setup()
            with _StopRequest() as stop:
                return self._loop(stop)
        finally:
            if getattr(self, "owns_process_group", False) and dist.is_initialized():
                dist.destroy_process_group()

    def _loop(self, stop: _StopRequest) -> TrainResult:
        config = self.config
        if self.rank == 0:
            _write_json(self.out / CONFIG_NAME, self._config_json())
            if self.checkpoint is None:  # a run that died before its first checkpoint may have left one
                (self.out / METRICS_NAME).unlink(missing_ok=True)
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
        quiet = {"disable": True} if not self.progress or self.rank != 0 else {}  # else TQDM_DISABLE decides
        bar = tqdm(
            total=self.end_step, initial=self.step, unit="step", dynamic_ncols=True, desc="train", **quiet
        )
        last_checkpoint = time.monotonic()
        interrupted = False
        self.model.train()
        while self.step < self.end_step and not interrupted:
            epoch = self.step // self.steps_per_epoch
            tick = time.perf_counter()  # step time includes waiting for the batch (DataLoader streams)
            for images, labels in self._batches(epoch, self.step % self.steps_per_epoch):
                loss, logs = self._train_step(images, labels)
                self.epoch_stats.add(loss, logs)
                self.step += 1
                bar.update(1)
                if (
                    self.step % config.log_every == 0
                    or self.step % self.steps_per_epoch == 0
                    or self.step == self.end_step
                ):
                    self._sync_if_cuda()  # so the step times include the GPU work queued so far
                now = time.perf_counter()
                self.epoch_stats.seconds += now - tick
                due = time.monotonic() - last_checkpoint > 60 * config.checkpoint_minutes
                stop_now, checkpoint_now = self._agree(stop.requested, due)
                if self.step % config.log_every == 0 or self.device.type != "cuda":  # no sync off CUDA
                    bar.set_postfix(self._postfix(epoch), refresh=False)
                if stop_now:
                    interrupted = True
                    break
                if checkpoint_now and self.step % self.steps_per_epoch:
                    self._save()
                    last_checkpoint = time.monotonic()
                if self.step >= self.end_step:
                    break
                tick = time.perf_counter() if checkpoint_now else now
            if self.step % self.steps_per_epoch == 0 and not interrupted:
                self._end_epoch(epoch)
                bar.set_postfix(self._postfix(epoch), refresh=True)
                last_checkpoint = time.monotonic()
        bar.close()
        if interrupted:
            self._save()
            if self.rank == 0:
                logger.warning(
                    "Stopped by SIGTERM at step %d; checkpoint written to %s.", self.step, self.out
                )
            return TrainResult(self.out, self.step, self.total_steps, finished=False, interrupted=True)
        return self._finish()

    def _batches(self, epoch: int, first_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's part of each remaining global batch of `epoch`, on the device."""
        order = epoch_order(self.num_images, self.config.seed, epoch)
        data = self.train_data
        if isinstance(data, ImageTensors):
            order = order.to(self.device)  # one copy per epoch; batches are slices of it
        global_batch = self.config.batch_size
        starts = range(first_batch * global_batch, self.steps_per_epoch * global_batch, global_batch)
        local = [
            order[s + self.rank * self.local_batch : s + (self.rank + 1) * self.local_batch] for s in starts
        ]
        if isinstance(data, ImageTensors):
            for indices in local:
                yield data.images[indices], data.labels[indices]
            return
        loader = DataLoader(
            data,
            batch_sampler=[indices.tolist() for indices in local],
            num_workers=self._workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if self._workers > 0 else None,
        )
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _train_step(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        set_lr(
            self.optimizer,
            lr_at(
                self.step,
                self.total_steps,
                self.warmup_steps,
                self.config.effective_lr,
                self.config.warmup_start_factor,
                self.config.min_lr_factor,
            ),
        )
        views = self.augment(images)
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            loss, logs = self.model(views, labels if self.supervised else None)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_step((self.step + 1) / self.total_steps)
        return loss.detach(), logs

    def _agree(self, stop: bool, checkpoint_due: bool) -> tuple[bool, bool]:
        """Stop / checkpoint decisions every process takes at the same step (checked every log_every steps)."""
        if self.world == 1:
            return stop, checkpoint_due
        if self.step % self.config.log_every and self.step != self.end_step:
            return False, False
        flags = torch.tensor([float(stop), float(checkpoint_due and self.rank == 0)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())

    def _sync_if_cuda(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _postfix(self, epoch: int) -> dict[str, Any]:
        stats = self.epoch_stats
        postfix: dict[str, Any] = {"epoch": epoch + 1}
        if stats.steps:
            postfix["loss"] = f"{stats.mean_loss():.4f}"
            postfix["img/s"] = f"{stats.steps * self.config.batch_size / max(stats.seconds, 1e-9):.0f}"
        if self.last_knn is not None:
            postfix["knn"] = f"{self.last_knn:.2f}"
        return postfix

    # ------------------------------------------------------------------------- epoch and end
    def _end_epoch(self, epoch: int) -> None:
        config = self.config
        record = self._metrics_record()
        final = self.step >= self.end_step
        if config.knn_every > 0 and ((epoch + 1) % config.knn_every == 0 or final):
            # The last epoch measures every protocol once, for the exported metrics as well.
            knn = self._knn(protocols=KNN_PROTOCOLS if final else KNN_PROTOCOLS[:1])
            self.final_knn_measured = final
            if knn is not None:
                self.last_knn = knn[knn_key(*KNN_PROTOCOLS[0])]["top1"]
                record["knn_top1"] = self.last_knn
                if final:
                    self.final_knn = knn
        self._log_metrics(record)
        self.epoch_stats = _EpochStats()
        self._save()

    def _metrics_record(self) -> dict[str, Any]:
        stats = self.epoch_stats
        self.train_seconds += stats.seconds
        images_per_s = stats.steps * self.config.batch_size / max(stats.seconds, 1e-9)
        record: dict[str, Any] = {
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "step": self.step,
            "loss": stats.mean_loss(),
            "lr": self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get("lr_scale", 1.0),
            "views_per_s": images_per_s * self.num_views,
            "images_per_s": images_per_s,
            "seconds": stats.seconds,
            "wall_seconds": self._wall_seconds(),
        }
        record.update(stats.mean_logs())
        stats.seconds = 0.0  # counted into `train_seconds` once
        return record

    def _wall_seconds(self) -> float:
        return round(self.wall_seconds_before + time.monotonic() - self.wall_start, 3)

    def _log_metrics(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with open(self.out / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _knn(self, protocols: tuple[tuple[int, float], ...] = KNN_PROTOCOLS) -> dict[str, Any] | None:
        """kNN accuracy of the current encoder (rank 0; the other processes wait)."""
        result = None
        if self.rank == 0 and self.knn_data is not None:
            bank, test = self.knn_data
            features = [self._features(split) for split in (bank, test)]
            (bank_x, bank_y), (test_x, test_y) = features
            result = knn_evaluate(bank_x, bank_y, test_x, test_y, bank.num_classes, protocols)
        if self.world > 1:
            dist.barrier()
        return result

    def _features(self, split: ImageTensors | ImageFolderFiles) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.method.encoder
        if isinstance(split, ImageTensors):
            return extract_features(
                encoder,
                split.images,
                split.labels,
                batch_size=512,
                device=self.device,
                autocast_dtype=self.autocast_dtype,
            )
        loader = DataLoader(
            split, batch_size=256, num_workers=self._workers, pin_memory=self.device.type == "cuda"
        )
        return extract_features(encoder, loader, device=self.device, autocast_dtype=self.autocast_dtype)

    def _finish(self) -> TrainResult:
        knn = self.final_knn
        if not self.final_knn_measured and self.config.knn_every > 0:
            knn = self._knn()
        if self.epoch_stats.steps:  # a run cut short by --max-steps mid-epoch still logs its last steps
            record = self._metrics_record()
            if knn is not None:
                self.last_knn = record["knn_top1"] = knn[knn_key(*KNN_PROTOCOLS[0])]["top1"]
            self._log_metrics(record)
            self.epoch_stats = _EpochStats()
        metrics: dict[str, Any] = {}
        if knn is not None:
            bank, test = self.knn_data
            metrics = {
                "knn": knn,
                "knn_bank_size": len(bank),
                "knn_test_size": len(test),
                "knn_split": "test",
            }
        self._save()
        model_dir = None
        if self.rank == 0:
            model_dir = self._export(metrics)
            logger.info("Model written to %s", model_dir)
        if self.world > 1:
            dist.barrier()
        return TrainResult(
            self.out,
            self.step,
            self.total_steps,
            finished=True,
            interrupted=False,
            metrics=metrics,
            model_dir=model_dir,
        )

    def _save(self) -> None:
        if self.rank != 0:
            return
        save_checkpoint(
            self.out / CHECKPOINT_NAME,
            {
                "config": self.config.to_json(),
                "method": self.method.state_dict(),
                "method_scalars": module_scalars(self.method),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step,
                "epoch": self.step / self.steps_per_epoch,
                "rng": rng_state(),
                "epoch_stats": self.epoch_stats.state(),
                "train_seconds": self.train_seconds,
                "wall_seconds": self._wall_seconds(),
                "last_knn": self.last_knn,
                "world_size": self.world,
                "sslzoo_version": sslzoo.__version__,
            },
        )

    def _export(self, metrics: dict[str, Any]) -> Path:
        config = self.config
        encoder = self.method.export_encoder()
        spec = getattr(self.method, "spec", None)
        views_per_s = self.num_views * self.step * config.batch_size / max(self.train_seconds, 1e-9)
        encoder.provenance = {
            "method": config.method,
            "host": getattr(spec, "host", config.method),
            "plugins": list(getattr(spec, "plugins", config.plugins)),
            "dataset": config.dataset,
            "recipe": config.recipe,
            "epochs": round(self.step / self.steps_per_epoch, 4),
            "planned_epochs": config.epochs,
            "steps": self.step,
            "batch_size": config.batch_size,
            "hparams": dict(getattr(spec, "hparams", config.hparams)),
            "config": {k: v for k, v in config.to_json().items() if k not in ("data_dir", "device")},
            "metrics": metrics,
            "device": _device_name(self.device),
            "world_size": self.world,
            "precision": self.precision,
            "wall_time_s": round(self._wall_seconds(), 2),
            "train_seconds": round(self.train_seconds, 2),
            "views_per_s": round(views_per_s, 2),
            "command": self.command,
            "sslzoo_version": sslzoo.__version__,
            "torch_version": torch.__version__,
        }
        final, staging = self.out / MODEL_DIR, self.out / f".{MODEL_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        encoder.save_pretrained(staging, config=encoder.config)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final

    def _config_json(self) -> dict[str, Any]:
        data = self.config.to_json()
        data.update(
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            world_size=self.world,
            local_batch=self.local_batch,
            resolved_device=str(self.device),
            resolved_precision=self.precision,
            num_views=self.num_views,
            train_images=self.num_images,
        )
        return data


class _EpochStats:
    """Sums of the loss and the method's logs over an epoch, kept on the device (no sync per step)."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.loss: torch.Tensor | float = 0.0
        self.logs: dict[str, torch.Tensor | float] = {}

    def add(self, loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        self.loss = self.loss + loss.float()
        for key, value in logs.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self.logs[key] = self.logs.get(key, 0.0) + value

    def mean_loss(self) -> float:
        return float(self.loss) / max(self.steps, 1)

    def mean_logs(self) -> dict[str, float]:
        return {key: float(value) / max(self.steps, 1) for key, value in self.logs.items()}

    def state(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "loss": float(self.loss),
            "logs": {k: float(v) for k, v in self.logs.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> _EpochStats:
        stats = cls()
        stats.steps = int(state.get("steps", 0))
        stats.seconds = float(state.get("seconds", 0.0))
        stats.loss = float(state.get("loss", 0.0))
        stats.logs = dict(state.get("logs", {}))
        return stats


def _init_distributed(device: str) -> bool:
    """Join the torchrun process group (nccl on GPU, gloo on CPU); False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint (the resumed run logs them again)."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
