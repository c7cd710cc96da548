"""sslzoo: a model zoo of self-supervised image encoders.

    >>> import sslzoo
    >>> sslzoo.list_models("mixco-*")
    >>> encoder = sslzoo.load("simclr-resnet18-cifar10")
    >>> features = encoder.embed(["cat.png", "dog.png"])  # (2, 512), L2-normalised
"""

from __future__ import annotations

from pathlib import Path as _Path

from .encoder import Encoder
from .errors import (
    ConfigError,
    CorruptWeightsError,
    SslzooError,
    UnknownModelError,
    WeightsNotAvailableError,
)
from .loading import load, sslzoo_home
from .registry import ModelInfo, default_model, list_models, model_info

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CorruptWeightsError",
    "Encoder",
    "ModelInfo",
    "SslzooError",
    "UnknownModelError",
    "WeightsNotAvailableError",
    "default_model",
    "list_models",
    "load",
    "model_info",
    "sslzoo_home",
]

# Installed, `sslzoo.train`, `sslzoo.export` and `sslzoo.serve` are mapped from the top-level
# folders by pyproject.toml. Run straight from a source checkout (PYTHONPATH=.), find them there.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "train" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # type: ignore[name-defined]  # noqa: F821
