"""What others published, kept as data in `references.json`: the context the zoo's own numbers are read in.

Per method: its paper (arXiv id) and official code, where there is one. Per method, backbone and
dataset: accuracies published for fully trained models (`anchors`), each with its protocol,
training length and source, so a page can say "a short run scores 50 %; SimCLR trained for 200
epochs scores 84.8 % in lightly's benchmark". Chance is 1 / number of classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class MethodReference:
    """A method's paper and official code (`code` is None where none was published)."""

    method: str
    title: str
    arxiv: str
    code: str | None

    @property
    def paper_url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


@dataclass(frozen=True)
class Anchor:
    """One published accuracy of a fully trained model: `metric` is "knn" or "linear", `top1` in %."""

    method: str
    backbone: str
    dataset: str
    metric: str
    top1: float
    epochs: int
    source: str
    source_url: str
    k: int | None = None
    t: float | None = None
    batch_size: int | None = None
    note: str | None = None


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    return json.loads(resources.files("sslzoo").joinpath("references.json").read_text())


def method_references() -> dict[str, MethodReference]:
    """Every method's paper and code, by registry method name."""
    return {name: MethodReference(method=name, **entry) for name, entry in _load()["methods"].items()}


def method_reference(method: str | None) -> MethodReference | None:
    """The paper and code of a registry method name, or None for a method the file does not know."""
    entry = _load()["methods"].get(str(method))
    return MethodReference(method=str(method), **entry) if entry else None


def anchors(method: str | None, dataset: str | None, backbone: str | None = None) -> list[Anchor]:
    """Published accuracies of `method` on `dataset` (and `backbone`, when given), kNN first."""
    sources = _load()["sources"]
    found = []
    for entry in _load()["anchors"]:
        if entry["method"] != method or entry["dataset"] != dataset:
            continue
        if backbone is not None and entry["backbone"] != backbone:
            continue
        source = sources[entry["source"]]
        found.append(Anchor(**{**entry, "source": source["name"], "source_url": source["url"]}))
    return sorted(found, key=lambda anchor: (anchor.metric != "knn", anchor.epochs))


def num_classes(dataset: str | None) -> int | None:
    """Classes of a dataset the zoo trains on (chance accuracy is 100 / this), or None if unknown."""
    return _load()["num_classes"].get(str(dataset))
