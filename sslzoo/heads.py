"""Projection and prediction heads, described as data: a list of `Layer` specs that `build_head` turns
into an `nn.Sequential`.

A head written as data can be printed, compared with a paper's table and changed from a recipe. The
named specs below carry the dimensions of the reference implementations (solo-learn for the CIFAR
baselines, SupContrast/SelfCon, the official spectral code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class Layer:
    """Linear(in_dim -> out_dim), then optionally BatchNorm1d, then optionally an activation.

    The linear layer has no bias when a BatchNorm follows it (the norm's shift replaces it).
    """

    in_dim: int
    out_dim: int
    batch_norm: bool = False
    activation: str | None = None


def build_head(layers: Sequence[Layer]) -> nn.Sequential:
    """The `nn.Sequential` that a list of layer specs describes."""
    modules: list[nn.Module] = []
    for layer in layers:
        modules.append(nn.Linear(layer.in_dim, layer.out_dim, bias=not layer.batch_norm))
        if layer.batch_norm:
            modules.append(nn.BatchNorm1d(layer.out_dim))
        if layer.activation is not None:
            if layer.activation not in ACTIVATIONS:
                raise ValueError(
                    f"Unknown activation {layer.activation!r}; choose one of {sorted(ACTIVATIONS)}."
                )
            modules.append(ACTIVATIONS[layer.activation]())
    return nn.Sequential(*modules)


def mlp(dims: Sequence[int], batch_norm: bool = False, last_batch_norm: bool = False) -> list[Layer]:
    """An MLP through `dims` (input, hidden..., output) with ReLU between layers and none after the last."""
    last = len(dims) - 2
    return [
        Layer(dims[i], dims[i + 1], batch_norm if i < last else last_batch_norm, "relu" if i < last else None)
        for i in range(len(dims) - 1)
    ]


def simclr_projector(in_dim: int = 512, hidden_dim: int = 2048, out_dim: int = 256) -> list[Layer]:
    """solo-learn SimCLR / MoCo-v2+ (CIFAR): Linear -> ReLU -> Linear, no BatchNorm."""
    return mlp([in_dim, hidden_dim, out_dim])


def supcon_projector(in_dim: int = 512, hidden_dim: int = 512, out_dim: int = 128) -> list[Layer]:
    """SupContrast's SupConResNet head, also SelfCon's (one per exit): 512 -> 512 -> 128, ReLU, no BN."""
    return mlp([in_dim, hidden_dim, out_dim])


def byol_projector(in_dim: int = 512, hidden_dim: int = 4096, out_dim: int = 256) -> list[Layer]:
    """solo-learn BYOL projector: Linear -> BN -> ReLU -> Linear."""
    return mlp([in_dim, hidden_dim, out_dim], batch_norm=True)


def byol_predictor(in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256) -> list[Layer]:
    """solo-learn BYOL predictor: the same shape as the projector, on the projection."""
    return mlp([in_dim, hidden_dim, out_dim], batch_norm=True)


def spectral_projector(in_dim: int = 512, hidden_dim: int = 2048, out_dim: int = 1000) -> list[Layer]:
    """Official spectral CIFAR head (`mlp1000_norelu`): Linear -> BN -> ReLU -> Linear -> BN, no final ReLU."""
    return mlp([in_dim, hidden_dim, out_dim], batch_norm=True, last_batch_norm=True)
