"""The zoo's catalogue, kept as data in `zoo.json`: one entry per `{method}-{backbone}-{dataset}` name.

Each entry records where its weights are (`bundled` with the package, on the `hub`, in the
project's git `history`, or `none` yet), the sha256 of the published weights file, its recipe and
its measured metrics. Metrics live here and only here; model cards and the README tables are
generated from this file. Weights published as shards record their combined sha256
(`weight_files.weights_sha256`) in `sha256` and each shard's in `shards` (file name -> sha256);
`sslzoo.load` checks them all.

Weights in the `history` state were committed once under `weights/<name>/` at the repository's
root and removed from the tree in the next commit (`python -m sslzoo.export stash`), so the
tracked tree stays small. Their entry says where to find them again:

    "weights": "history", "sha256": "<combined sha256>", "shards": {"model-00001-of-00002.safetensors": "…"},
    "history": {"commit": "<40 hex digits>", "path": "weights/<name>",
                "files": {"config.json": "<sha256>", "model.safetensors.index.json": "…", <each shard>: "…"}}

`files` is every file of the folder with its sha256 (for one `model.safetensors`, that file and
`config.json`); `sslzoo.load` restores them from the commit (`sslzoo.history`). Reading the
registry checks each such entry (`check_entry`), so a typo fails on import, not on a user's load.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UnknownModelError

WEIGHTS_STATES = ("bundled", "hub", "history", "none")
#: A git commit id: sha1 (40 hex digits) or, in repositories that use it, sha256 (64).
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
#: The files of a model folder (as `weight_files` and `sslzoo.hub` name them).
_CONFIG, _WEIGHTS, _INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"


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
    history: dict[str, Any] = field(default_factory=dict)
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
    path = registry_path()
    data = json.loads(path.read_text())
    for entry in data["models"]:
        problem = check_entry(entry)
        if problem:
            raise ValueError(f"{path}: {entry.get('name')}: {problem}")
    return data


def check_entry(entry: dict[str, Any]) -> str | None:
    """What is wrong with a registry entry's weights fields, or None when they are consistent."""
    weights = entry.get("weights")
    if weights not in WEIGHTS_STATES:
        return f"weights={weights!r}; it must be one of {list(WEIGHTS_STATES)}."
    history = entry.get("history")
    if weights != "history":
        return "a 'history' record belongs only to weights='history'." if history else None
    if not isinstance(history, dict):
        return "weights='history' needs a 'history' record: {commit, path, files}."
    commit, path, files = history.get("commit"), history.get("path"), history.get("files")
    if not isinstance(commit, str) or not COMMIT_PATTERN.fullmatch(commit):
        return f"history.commit {commit!r} is not a full commit id (40 or 64 lowercase hex digits)."
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
        return f"history.path {path!r} is not a relative folder path in the repository (like 'weights/NAME')."
    if parts[0] == "sslzoo":
        return f"history.path {path!r} is inside the package; weights kept in the history live outside it."
    if not isinstance(files, dict) or _CONFIG not in files:
        return "history.files must map every file of the folder, config.json included, to its sha256."
    for name, digest in files.items():
        if name != name.strip() or "/" in name or "\\" in name or name in ("", ".", ".."):
            return f"history.files names {name!r}, which is not a plain file name."
        if not isinstance(digest, str) or not _SHA256_PATTERN.fullmatch(digest):
            return f"history.files[{name!r}] is not a sha256 (64 lowercase hex digits)."
    shards = entry.get("shards") or {}
    sha256 = entry.get("sha256")
    if shards:
        missing = sorted(set(shards) - set(files))
        if missing or _INDEX not in files:
            return f"history.files lacks {missing or [_INDEX]}, part of these sharded weights."
        different = sorted(name for name in shards if shards[name] != files[name])
        if different:
            return f"history.files and shards record different sha256 for {different}."
        from .weight_files import combined_sha256

        if sha256 != combined_sha256(shards):
            return f"sha256 {sha256} is not the shards' combined sha256 {combined_sha256(shards)}."
    elif files.get(_WEIGHTS) != sha256:
        return f"history.files[{_WEIGHTS!r}] must be the recorded sha256 {sha256} (or record the shards)."
    return None


def _entries() -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _load()["models"]}


def list_models(pattern: str = "*", trained: bool | None = None) -> list[str]:
    """Names in the zoo matching a shell-style `pattern`, e.g. `"mixco-*"` or `"*-cifar100"`.

    `trained=True` keeps only models whose weights exist (bundled, on the Hub or in the history).
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
