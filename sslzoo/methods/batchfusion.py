"""Adaptive batch fusion (BA-SSL, Zhang et al., 2023) as a plug-in, as sslzoo interprets it.

No code is public; the paper's pipeline is known only by its names: Patch Partition -> Conv
Embedding -> Patch Restore, "dimensionality reduction and reconstruction of batch data" that lets
the samples of a batch communicate, an embedding layer count that was ablated, and a fusion that
grows "as the training progresses". Interpreted here (every part below is an interpretation):

- Placement: a training-only module on each augmented view batch, in pixel space, before the host
  method's encoder; dropped at export (a retrieval encoder must not depend on its batch).
- Patch Partition + Conv Embedding: the batch axis becomes the channel axis, (B, C, H, W) ->
  (C, B, H, W), and a P x P stride-P convolution embeds each patch of all B samples into
  `fusion_width` channels (reduction); Patch Restore is the P x P stride-P transposed convolution
  back to B channels (reconstruction). Colour channels share the weights. Each layer is residual,
  x <- x + gate * Restore(GELU(Embed(x))), its restore conv starts at zero, so training starts as
  the plain host method. `fusion_layers` layers are stacked.
- Adaptive schedule (`fusion_schedule`): "gate" (default) raises the gate linearly from 0 to
  `fusion_max_gate` with training progress; "layers" switches on ceil(L * progress) layers at the
  full gate; "constant" keeps every layer at the full gate.
- Leakage guard: each view is fused in its own random batch order (then restored), so the two
  views of an image do not receive the same mixture of the same partners.
The weights depend on the batch size: `fusion_batch_size` is the largest per-process batch; a
smaller batch (the last one of an epoch) uses the leading slice of the weights.
In a plug-in stack batch fusion is always outermost, so the host, MixCo's mixes and IE-CL's
transform and entropy terms all see the fused views; its gate is logged as `fusion_gate`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..limits import non_negative, one_of, whole
from .base import HostOutput, Method
from .plugin import Plugin

SCHEDULES = ("gate", "layers", "constant")


class BatchFusionLayer(nn.Module):
    """One residual embedding layer over the batch axis: Embed (B -> width) -> GELU -> Restore (width -> B)."""

    def __init__(self, batch_size: int, width: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.embed_weight = nn.Parameter(torch.empty(width, batch_size, patch_size, patch_size))
        self.embed_bias = nn.Parameter(torch.zeros(width))
        self.restore_weight = nn.Parameter(torch.zeros(width, batch_size, patch_size, patch_size))
        self.restore_bias = nn.Parameter(torch.zeros(batch_size))
        nn.init.kaiming_uniform_(self.embed_weight, a=math.sqrt(5))  # nn.Conv2d's default

    def forward(self, channels_first: torch.Tensor) -> torch.Tensor:
        """(C, B, H, W) -> the fusion increment, same shape."""
        batch = channels_first.shape[1]
        p = self.patch_size
        hidden = F.conv2d(channels_first, self.embed_weight[:, :batch], self.embed_bias, stride=p)
        return F.conv_transpose2d(
            F.gelu(hidden), self.restore_weight[:, :batch], self.restore_bias[:batch], stride=p
        )


class BatchFusionModule(nn.Module):
    """Stacked residual fusion layers with the progress-driven schedule (see the module docstring)."""

    progress: torch.Tensor

    def __init__(
        self,
        batch_size: int = 256,
        width: int = 64,
        layers: int = 2,
        patch_size: int = 4,
        schedule: str = "gate",
        max_gate: float = 1.0,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError(f"Unknown fusion schedule {schedule!r}; choose one of {list(SCHEDULES)}.")
        if layers < 1 or width < 1 or batch_size < 2 or patch_size < 1:
            raise ConfigError(
                "Batch fusion needs layers >= 1, width >= 1, batch size >= 2 and patch size >= 1."
            )
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.schedule = schedule
        self.max_gate = float(max_gate)
        self.layers = nn.ModuleList(BatchFusionLayer(batch_size, width, patch_size) for _ in range(layers))
        self.register_buffer("progress", torch.zeros(()))

    def gates(self) -> list[float]:
        """The gate of each layer at the current training progress."""
        progress = float(self.progress)
        if self.schedule == "gate":
            return [self.max_gate * progress] * len(self.layers)
        if self.schedule == "layers":
            active = math.ceil(len(self.layers) * progress)
            return [self.max_gate if k < active else 0.0 for k in range(len(self.layers))]
        return [self.max_gate] * len(self.layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        if batch > self.batch_size:
            raise ConfigError(
                f"Batch fusion was built for batches of at most {self.batch_size} per process, got {batch}; "
                "set `fusion_batch_size` to the per-process batch size."
            )
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"Image size {height}x{width} is not divisible by fusion_patch_size={self.patch_size}."
            )
        x = images.transpose(0, 1)  # (C, B, H, W): the batch is the channel axis
        for layer, gate in zip(self.layers, self.gates()):
            # a closed gate still runs its layer: DistributedDataParallel expects every parameter in the graph
            x = x + gate * layer(x)
        return x.transpose(0, 1)


class BatchFusion(Plugin):
    name = "batchfusion"
    title = "batch fusion"
    wrap_rank = 2  # outermost: every other part sees the fused views
    needs_host_interface = False  # only transforms the views: any method's `forward` takes them

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        "fusion_batch_size": whole(2),
        "fusion_width": whole(1),
        "fusion_layers": whole(1),
        "fusion_patch_size": whole(1),
        "fusion_schedule": one_of(SCHEDULES),
        "fusion_max_gate": non_negative(),
    }

    def __init__(
        self,
        host: Method,
        fusion_batch_size: int = 256,
        fusion_width: int = 64,
        fusion_layers: int = 2,
        fusion_patch_size: int = 4,
        fusion_schedule: str = "gate",
        fusion_max_gate: float = 1.0,
    ):
        super().__init__(host)
        self.fusion = BatchFusionModule(
            fusion_batch_size,
            fusion_width,
            fusion_layers,
            fusion_patch_size,
            fusion_schedule,
            fusion_max_gate,
        )

    def fuse(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each view fused in its own random batch order, returned in the original order."""
        if not self.training:
            return views
        fused = []
        for view in views:
            order = torch.randperm(view.shape[0], device=view.device)
            fused.append(self.fusion(view[order])[torch.argsort(order)])
        return fused

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, logs = self.host(self.fuse(views), labels)  # any host, SelfCon included
        return loss, {**logs, "fusion_gate": torch.tensor(max(self.fusion.gates()))}

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        out = self.host.host_forward(self.fuse(views), labels)
        out.logs = {**out.logs, "fusion_gate": torch.tensor(max(self.fusion.gates()))}
        return out

    def after_step(self, progress: float) -> None:
        self.host.after_step(progress)
        self.fusion.progress.fill_(min(max(float(progress), 0.0), 1.0))
