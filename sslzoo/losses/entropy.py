"""A differentiable entropy of a batch of embeddings: the Gaussian coding rate (IE-CL's estimator).

For Z (B, d), rows L2-normalised then centred:

    H(Z) = 1/2 * logdet( I_d + d / (B * eps^2) * Z^T Z ),   eps^2 = `eps_squared` (0.5 by default)

computed through the B x B Gram matrix when B < d (same determinant by Sylvester's identity), in
float32 whatever autocast is on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..precision import in_float32


@in_float32
def coding_rate_entropy(z: torch.Tensor, eps_squared: float = 0.5) -> torch.Tensor:
    """Coding-rate entropy proxy of a batch (larger when the embeddings spread over more directions)."""
    batch, dim = z.shape  # float32 with autocast off (`in_float32`): logdet has no bf16/fp16 kernel
    z = F.normalize(z, dim=1)
    z = z - z.mean(dim=0, keepdim=True)
    scale = dim / (batch * eps_squared)
    gram = z @ z.T if batch < dim else z.T @ z
    identity = torch.eye(gram.shape[0], device=z.device, dtype=gram.dtype)
    return 0.5 * torch.logdet(identity + scale * gram)
