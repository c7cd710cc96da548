"""MixCo (Kim et al., 2020): mix-up "semi-positives" added to a contrastive host, as in the official code.

For each view v the batch is split in halves and image i is mixed with image i + B/2 in pixel space,
lambda_i ~ U(0, 1) per pair: x_mix_i = lambda_i x_i + (1 - lambda_i) x_{i+B/2}. The mix goes through
the host's online branch (`host.embed`), and its logits against the host's targets for view v (the
B positives of the other view: MoCo keys, SimCLR embeddings, BYOL target projections) and the host's
extra negatives (MoCo's queue) are divided by `mix_temperature`. The soft target puts lambda_i on
target i, 1 - lambda_i on target i + B/2 and 0 elsewhere (queue included):

    L = L_host + mix_weight * mean_v SoftCE(logits_v, targets_v)

Faithful to Lee-Gihun/MixCo-Mixup-Contrast (`img_mixer`, `MixcoLoss`; SimCLR `_mix_step`); sslzoo's
MoCo-v2 is symmetric, so both views are mixed and their terms averaged, which is exactly the
official SimCLR variant's 1/2 (SoftCE_1 + SoftCE_2). Mixed images are encoded in their own forward
pass (the official MoCo code concatenates them with the clean queries: only BatchNorm statistics
differ). Mix pairs are formed inside each process's batch, which must be even.
In a plug-in stack MixCo is innermost: it mixes the views the host sees (fused by batch fusion,
the second one transformed by IE-CL). The logits over targets and queue and the soft targets are
computed in float32 under autocast (a bf16 lambda would shift the targets by up to 0.4 %).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..limits import non_negative, positive
from ..losses import SoftTargetCrossEntropy
from ..precision import at_least_float32, float32_region
from .base import HostOutput, Method
from .plugin import Plugin


def mix_halves(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B/2 mixed images, their lambdas): image i mixed with image i + B/2, lambda_i ~ U(0, 1)."""
    batch = images.shape[0]
    if batch % 2:
        raise ConfigError(
            f"MixCo pairs image i with i + B/2, so the per-process batch must be even (got {batch})."
        )
    half = batch // 2
    lam = torch.rand(half, device=images.device)  # float32 whatever the images' dtype: the soft targets
    weight = lam.view(half, *([1] * (images.ndim - 1)))
    return weight * images[:half] + (1 - weight) * images[half:], lam


def mix_targets(lam: torch.Tensor, num_extra: int = 0) -> torch.Tensor:
    """Soft targets (B/2, B + num_extra): lambda_i at column i, 1 - lambda_i at i + B/2, zeros elsewhere."""
    half = lam.shape[0]
    targets = torch.zeros(half, 2 * half + num_extra, device=lam.device, dtype=lam.dtype)
    rows = torch.arange(half, device=lam.device)
    targets[rows, rows] = lam
    targets[rows, rows + half] = 1 - lam
    return targets


class MixCo(Plugin):
    name = "mixco"
    title = "MixCo"
    wrap_rank = 0
    host_requirement = "scores mixed images against the host's per-view targets (host_forward, embed)"

    #: What each keyword of `__init__` may be.
    hparam_limits = {"mix_temperature": positive(), "mix_weight": non_negative()}

    def __init__(self, host: Method, mix_temperature: float = 0.05, mix_weight: float = 1.0):
        super().__init__(host)
        if mix_temperature <= 0:
            raise ConfigError(f"mix_temperature must be positive, got {mix_temperature}.")
        self.mix_temperature = float(mix_temperature)
        self.mix_weight = float(mix_weight)
        self.soft_cross_entropy = SoftTargetCrossEntropy()

    def mix_loss(
        self, images: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None
    ) -> torch.Tensor:
        """MixCo's soft cross-entropy for one view, given the host's targets (and negatives) for it."""
        mixed, lam = mix_halves(images)
        _, query = self.host.embed(mixed)
        with float32_region(query.device):  # logits over the queue and the soft targets in float32
            query = F.normalize(at_least_float32(query), dim=1)
            candidates = F.normalize(at_least_float32(targets), dim=1)
            if negatives is not None:
                candidates = torch.cat([candidates, F.normalize(at_least_float32(negatives.detach()), dim=1)])
            logits = query @ candidates.T / self.mix_temperature
            num_extra = 0 if negatives is None else negatives.shape[0]
            return self.soft_cross_entropy(logits, mix_targets(lam.to(logits.dtype), num_extra))

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        out = self.host.host_forward(views, labels)
        negatives = out.negatives or [None] * len(views)
        mix = torch.stack(
            [self.mix_loss(view, out.targets[v], negatives[v]) for v, view in enumerate(views)]
        ).mean()
        return HostOutput(
            loss=out.loss + self.mix_weight * mix,
            logs={**out.logs, "loss_mixco": mix.detach()},
            features=out.features,
            embeddings=out.embeddings,
            targets=out.targets,
            negatives=out.negatives,
        )
