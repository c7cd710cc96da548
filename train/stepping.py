"""One optimisation step: views made on the device, forward under autocast, backward, optimiser, EMA.

`Stepper` owns everything a step changes besides the method's weights (the optimiser, the fp16
loss scaler, the augmentation), so its `state_dict` is the rest of what a checkpoint must hold.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from .augment import build_augmentation, view_generator
from .optim import build_optimizer, lr_at, set_lr
from .recipes import TrainConfig
from .runtime import Runtime

logger = logging.getLogger("sslzoo.train")


class Stepper:
    """Runs step `step` of `total_steps` on a batch of uint8 images (and labels, for supervised methods)."""

    def __init__(
        self,
        method: nn.Module,
        config: TrainConfig,
        runtime: Runtime,
        total_steps: int,
        warmup_steps: int,
        channels_last: bool,
    ):
        self.method = method
        self.model: nn.Module = method  # wrapped by DDP / torch.compile in `wrap()`
        self.config = config
        self.runtime = runtime
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.supervised = bool(getattr(method, "supervised", False))
        self.num_views = int(getattr(method, "num_views", 2))
        # The views' random stream: a generator of their own on the device, checkpointed with the run.
        self.view_generator = view_generator(runtime.device, config.seed, runtime.rank)
        self.augment = build_augmentation(
            replace(config, channels_last=channels_last), self.num_views, generator=self.view_generator
        )
        self.augment.to(runtime.device)
        if config.compile or runtime.device.type == "cuda":  # ~60 fused kernels per view instead of ~300 ops
            self.augment.compile()
        groups = method.param_groups(config.weight_decay, exclude_bias_norm=config.exclude_bias_norm_wd)
        self.optimizer = build_optimizer(groups, config, runtime.device)
        self.scaler = torch.amp.GradScaler("cuda") if runtime.precision == "fp16" else None

    def wrap(self) -> None:
        """DDP (several processes) and torch.compile around the method; after the checkpoint is restored,
        since DDP starts every process from rank 0's weights."""
        model = self.method
        if self.runtime.world > 1:
            device = self.runtime.device
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if self.config.compile:
            model = torch.compile(model)
        self.model = model

    def lr(self, step: int) -> float:
        config = self.config
        return lr_at(
            step,
            self.total_steps,
            self.warmup_steps,
            config.effective_lr,
            config.warmup_start_factor,
            config.min_lr_factor,
        )

    def __call__(
        self, step: int, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (detached, on the device: no sync) and the method's logs of step `step` (0-based)."""
        set_lr(self.optimizer, self.lr(step))
        # The named regions are what a torch.profiler trace of a step is broken down by
        # (benchmarks/step_profile.py); outside a profiler they cost a few microseconds.
        with record_function("augment"):
            views = self.augment(images)
        with record_function("forward"), self.runtime.autocast():
            loss, logs = self.model(views, labels if self.supervised else None)
        with record_function("backward"):
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        with record_function("optimizer"):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.method.after_step((step + 1) / self.total_steps)
        return loss.detach(), logs

    @property
    def current_lr(self) -> float:
        """The schedule's lr of the last step (a group's own `lr_scale` taken out)."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group.get("lr_scale", 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "views_rng": self.view_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's state (rank 0's: the other processes reseed their views by step)."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        runtime = self.runtime
        if not runtime.is_main:
            step = int(state["step"])
            self.view_generator.set_state(
                view_generator(runtime.device, self.config.seed, runtime.rank, step).get_state()
            )
        elif "views_rng" in state:
            self.view_generator.set_state(state["views_rng"])
        else:
            logger.warning("The checkpoint predates the views' generator: the views differ from the run's.")
