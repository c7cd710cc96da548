"""The zoo's catalogue, kept as data in `zoo.json`: one entry per `{method}-{backbone}-{dataset}` name.

Each entry records where its weights are (`bundled` with the package, on the `hub`, or `none`
yet), the sha256 of the published weights file, its recipe and its measured metrics. Metrics
live here and only here; model cards and the README tables are generated from this file.
Weights published as shards record the sha256 of their index in `sha256` and of each shard in
`shards` (file name -> sha256); `sslzoo.load` checks them all.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UnknownModelError

WEIGHTS_STATES = ("bundled", "hub", "none")


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry. `metrics` is empty until a run has measured them."""

    name: str
    method: str
    host: str
    plugins: list[str]
    supervised: bool
    paper: str
    backbone: str
    stem: str
    dataset: str
    input_size: int
    mean: list[float]
    std: list[float]
    interpolation: str
    recipe: str
    hub_repo: str
    weights: str = "none"
    sha256: str | None = None
    shards: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    #: Load-independent facts of serving variants, e.g. {"int8": the export's quantization record}.
    serving: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.weights != "none"

    def encoder_config(self) -> dict[str, Any]:
        """Constructor arguments of the `Encoder` this entry describes."""
        return {
            "backbone": self.backbone,
            "stem": self.stem,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


def registry_path() -> Path:
    """Location of `zoo.json` inside the installed package."""
    return Path(str(resources.files("sslzoo").joinpath("zoo.json")))


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    data = json.loads(registry_path().read_text())
    for entry in data["models"]:
        if entry["weights"] not in WEIGHTS_STATES:
            raise ValueError(f"zoo.json: {entry['name']} has weights={entry['weights']!r}")
    return data


def _entries() -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _load()["models"]}


def list_models(pattern: str = "*", trained: bool | None = None) -> list[str]:
    """Names in the zoo matching a shell-style `pattern`, e.g. `"mixco-*"` or `"*-cifar100"`.

    `trained=True` keeps only models whose weights exist (bundled or on the Hub).
    """
    names = [name for name in _entries() if fnmatch.fnmatchcase(name, pattern)]
    if trained is not None:
        names = [name for name in names if (_entries()[name]["weights"] != "none") == trained]
    return sorted(names)


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; `UnknownModelError` lists the closest names if there is none."""
    entries = _entries()
    if name not in entries:
        raise UnknownModelError(name, difflib.get_close_matches(name, list(entries), n=3, cutoff=0.6))
    return ModelInfo(**copy.deepcopy(entries[name]))


def default_model() -> str | None:
    """The name of the embedded default encoder (the one the demo serves), if one is bundled."""
    return _load()["default_model"]


def registry_data() -> dict[str, Any]:
    """A deep copy of the whole registry, for tools that regenerate cards and tables."""
    return copy.deepcopy(_load())


def clear_cache() -> None:
    """Forget the parsed registry (after a tool rewrote `zoo.json`)."""
    _load.cache_clear()
