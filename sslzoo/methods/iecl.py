"""IE-CL, incremental-entropy contrastive learning (Zhang et al., ICLR 2026), as sslzoo interprets it.

No code is public; known from the abstract: a learnable transformation *generates* entropy between
augmented views while semantic consistency is kept, and an encoder regulariser *preserves* it (the
encoder seen as an information bottleneck); plug-and-play on contrastive hosts, aimed at small
batches. Interpreted here (every part below is an interpretation):

- Transformation T_phi: a light residual conv net on the second view, v2~ = v2 + eps * tanh(h_phi(v2))
  (`iecl_epsilon`, in normalised pixel units; `iecl_channels` wide; last conv starts at zero so
  v2~ = v2 at first). The host's loss runs on (v1, v2~): that is the semantic-consistency term, and
  both the encoder and T_phi minimise it.
- Entropy estimator: the coding rate H(Z) = 1/2 logdet(I + d/(B eps_c^2) Z^T Z) of L2-normalised,
  centred embeddings (`sslzoo.losses.coding_rate_entropy`, eps_c^2 = `iecl_eps_squared`), per process.
- Generation: dH = H(Z2~) - H(Z2) on the host's online embeddings; `iecl_generation_weight` * (-dH)
  reaches T_phi only (the encoder is frozen for that pass: one extra forward of v2~, and one
  gradient-free forward of v2 for the baseline H(Z2)).
- Preservation: R = -H(F2~) on the encoder's pooled features of v2~, weighted by
  `iecl_preservation_weight` (its gradient also reaches T_phi, in the same direction as generation).
- One optimiser, one backward pass: L = L_host(v1, v2~) - lambda_g dH + lambda_r R, instead of
  alternating steps. T_phi is training-only; `export_encoder()` drops it.
- The two extra passes (v2~ for dH, v2 for the baseline) leave BatchNorm's running statistics
  alone (`frozen`): they are updated by the host's own pass only, as without IE-CL.
- In a stack IE-CL sits inside batch fusion (it transforms the fused second view and measures
  entropies on fused views) and outside MixCo (MixCo mixes v1 and v2~, the pair the host sees).
- Batch size: the paper's claim is about small batches, so the zoo's recipe trains at 128 (half
  SimCLR's 256, the lr scaled with it); compare with SimCLR at the same batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ConfigError
from ..limits import non_negative, positive, whole
from ..losses import coding_rate_entropy
from .base import HostOutput, Method
from .plugin import Plugin


class EntropyGenerator(nn.Module):
    """T_phi: a bounded residual perturbation x + eps * tanh(h(x)); no BatchNorm, so no batch dependence."""

    def __init__(self, channels: int = 32, epsilon: float = 0.2, image_channels: int = 3):
        super().__init__()
        self.epsilon = float(epsilon)
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, image_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.epsilon * torch.tanh(self.net(images))


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Run `module` without parameter gradients and without touching BatchNorm's running statistics
    (mean, variance and batch count are as before the block); gradients still flow to its input.

    BatchNorm still normalises with the batch's own statistics, as in the host's pass."""
    params = [p for p in module.parameters() if p.requires_grad]
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    counts = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None for m in norms]
    for p in params:
        p.requires_grad_(False)
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, momentum, count in zip(norms, momenta, counts):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class IECL(Plugin):
    name = "iecl"
    title = "IE-CL"
    wrap_rank = 1
    host_requirement = (
        "replaces the second of two views and measures the entropy of the host's embeddings "
        "(host_forward, embed)"
    )

    #: What each keyword of `__init__` may be.
    hparam_limits = {
        "iecl_generation_weight": non_negative(),
        "iecl_preservation_weight": non_negative(),
        "iecl_epsilon": non_negative(),
        "iecl_channels": whole(1),
        "iecl_eps_squared": positive(),
    }

    def __init__(
        self,
        host: Method,
        iecl_generation_weight: float = 0.1,
        iecl_preservation_weight: float = 0.05,
        iecl_epsilon: float = 0.2,
        iecl_channels: int = 32,
        iecl_eps_squared: float = 0.5,
    ):
        super().__init__(host)
        if host.num_views != 2:
            raise ConfigError(
                f"IE-CL transforms the second of two views; host {host.name!r} uses {host.num_views}."
            )
        self.generation_weight = float(iecl_generation_weight)
        self.preservation_weight = float(iecl_preservation_weight)
        self.eps_squared = float(iecl_eps_squared)
        self.transform = EntropyGenerator(iecl_channels, iecl_epsilon)

    def host_forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> HostOutput:
        self._check_views(views)
        first, second = views
        generated = self.transform(second)
        out = self.host.host_forward([first, generated], labels)
        with frozen(self.host):
            _, generated_embedding = self.host.embed(generated)  # gradient reaches T_phi only
            with torch.no_grad():
                _, clean_embedding = self.host.embed(second)  # the baseline: no gradient, no BN update
        gain = coding_rate_entropy(generated_embedding, self.eps_squared) - coding_rate_entropy(
            clean_embedding, self.eps_squared
        )
        preservation = -coding_rate_entropy(out.features[1], self.eps_squared)
        loss = out.loss - self.generation_weight * gain + self.preservation_weight * preservation
        return HostOutput(
            loss=loss,
            logs={**out.logs, "entropy_gain": gain.detach(), "feature_entropy": -preservation.detach()},
            features=out.features,
            embeddings=out.embeddings,
            targets=out.targets,
            negatives=out.negatives,
        )
