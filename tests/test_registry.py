"""The registry: every name the zoo promises, as data, with honest (empty) metrics until measured."""

from __future__ import annotations

import json

import pytest

import sslzoo
from sslzoo import registry
from sslzoo.registry import registry_path

METHODS = ["simclr", "mocov2", "byol", "supcon", "spectral", "mixco", "selfcon", "minc", "batchfusion", "iecl"]
DATASETS = ["cifar10", "cifar100", "stl10", "imagenet100"]


def test_list_models_holds_the_40_resnet18_names_and_the_resnet50_imagenet100_ones():
    names = set(sslzoo.list_models())
    expected = {f"{m}-resnet18-{d}" for m in METHODS for d in DATASETS}
    assert expected <= names
    assert {f"{m}-resnet50-imagenet100" for m in METHODS} <= names
    assert len(names) == 50


def test_pattern_filters_names():
    assert sslzoo.list_models("mixco-*") == sorted(f"mixco-{b}" for b in [
        "resnet18-cifar10", "resnet18-cifar100", "resnet18-imagenet100", "resnet18-stl10", "resnet50-imagenet100"])
    assert all(name.endswith("-cifar100") for name in sslzoo.list_models("*-cifar100"))


def test_model_info_describes_the_entry():
    info = sslzoo.model_info("mixco-resnet18-cifar100")
    assert (info.method, info.host, info.plugins) == ("mixco", "mocov2", ["mixco"])
    assert (info.backbone, info.stem, info.dataset, info.input_size) == ("resnet18", "cifar", "cifar100", 32)
    assert info.hub_repo == "sslzoo/mixco-resnet18-cifar100"
    assert sslzoo.model_info("batchfusion-resnet18-cifar10").host == "simclr"
    assert sslzoo.model_info("iecl-resnet18-stl10").input_size == 96
    assert sslzoo.model_info("supcon-resnet50-imagenet100").stem == "imagenet"


def test_unknown_name_lists_the_closest_names():
    with pytest.raises(sslzoo.UnknownModelError) as error:
        sslzoo.model_info("mixco-resnet18-cifar1000")
    assert "mixco-resnet18-cifar100" in str(error.value)
    assert error.value.suggestions[0] == "mixco-resnet18-cifar100"


def test_registry_never_claims_metrics_without_weights():
    data = json.loads(registry_path().read_text())
    for entry in data["models"]:
        assert entry["weights"] in ("bundled", "hub", "history", "none")
        assert registry.check_entry(entry) is None, entry["name"]
        if entry["weights"] == "none":
            assert entry["metrics"] == {} and entry["sha256"] is None, entry["name"]
        else:
            assert entry["sha256"] and len(entry["sha256"]) == 64, entry["name"]
    default = data["default_model"]
    if default is not None:
        assert sslzoo.model_info(default).weights == "bundled"
