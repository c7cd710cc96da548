"""sslzoo: a model zoo of self-supervised image encoders.

    >>> import sslzoo
    >>> sslzoo.list_models("mixco-*")
    >>> encoder = sslzoo.load("simclr-resnet18-cifar10")
    >>> features = encoder.embed(["cat.png", "dog.png"])  # (2, 512), L2-normalised

The names below are imported on first use, so `import sslzoo` (and every command's `--help`)
does not pay for importing PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    CorruptWeightsError,
    SslzooError,
    UnknownModelError,
    WeightsNotAvailableError,
)
from .registry import ModelInfo, default_model, list_models, model_info

if TYPE_CHECKING:
    from .encoder import Encoder
    from .loading import load, sslzoo_home

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

#: Names that need PyTorch, and the module each comes from.
_LAZY = {"Encoder": ".encoder", "load": ".loading", "sslzoo_home": ".loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


# Installed, `sslzoo.train`, `sslzoo.export` and `sslzoo.serve` are mapped from the top-level
# folders by pyproject.toml. Run straight from a source checkout (PYTHONPATH=.), find them there.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "train" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # type: ignore[name-defined]  # noqa: F821
