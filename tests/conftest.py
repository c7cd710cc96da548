"""Shared test setup: offline, single-threaded (stable on a 2-core CI box), deterministic."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_isolate(tmp_path, monkeypatch):
    """Every test starts from the same seed, with its own SSLZOO_HOME and Hugging Face cache."""
    torch.manual_seed(0)
    monkeypatch.setenv("SSLZOO_HOME", str(tmp_path / "sslzoo_home"))
    # huggingface_hub reads HF_HUB_CACHE once at import, so patch the constant it consults.
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    yield


@pytest.fixture
def zoo_json(tmp_path, monkeypatch):
    """A private, blank copy of the registry (every model untrained, no default) that the whole
    library reads for this test, so tests that record results never depend on what the zoo holds."""
    import json

    from sslzoo import registry

    data = json.loads(registry.registry_path().read_text())
    data["default_model"] = None
    for entry in data["models"]:
        entry.update(weights="none", sha256=None, metrics={}, training={})
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps(data, indent=1))
    monkeypatch.setattr(registry, "registry_path", lambda: path)
    registry.clear_cache()
    yield path
    registry.clear_cache()
