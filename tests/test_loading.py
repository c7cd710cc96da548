"""`sslzoo.load`: registry names, folders and Hub ids, with errors a user can act on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants

import sslzoo
from sslzoo import registry
from sslzoo.loading import sha256_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("model")
    sslzoo.Encoder(provenance={"method": "simclr", "dataset": "cifar10"}).save_pretrained(folder)
    return folder


def hand_built_cache(folder: Path, repo_id: str, commit: str = COMMIT, ref: str = "main") -> Path:
    """The Hugging Face cache layout: refs/<ref> holds the commit, snapshots/<commit>/ the files."""
    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def features(encoder: sslzoo.Encoder) -> torch.Tensor:
    return encoder(torch.ones(1, 3, 32, 32))


def patch_entry(monkeypatch, name: str, **changes) -> None:
    data = registry.registry_data()
    for entry in data["models"]:
        if entry["name"] == name:
            entry.update(changes)
    monkeypatch.setattr(registry, "_load", lambda: data)


def test_folder_loads_in_eval_mode_on_the_requested_device(saved):
    encoder = sslzoo.load(saved, device="cpu")
    assert not encoder.training and next(encoder.parameters()).device.type == "cpu"
    assert torch.equal(features(encoder), features(sslzoo.load(str(saved))))


def test_a_loaded_encoder_names_the_weights_file_it_came_from(saved, tmp_path):
    from sslzoo.weight_files import weights_sha256

    encoder = sslzoo.load(saved)
    assert encoder.weights_sha256 == sha256_of(saved / "model.safetensors")
    encoder.save_pretrained(tmp_path / "sharded", max_shard_size="5MB")
    assert sslzoo.load(tmp_path / "sharded").weights_sha256 == weights_sha256(tmp_path / "sharded")
    # Weights loaded by hand, or a model built in memory, are no longer that file's.
    encoder.load_state_dict(sslzoo.Encoder().state_dict())
    assert encoder.weights_sha256 is None and sslzoo.Encoder().weights_sha256 is None


def test_hub_id_loads_from_a_hand_built_cache_offline(saved):
    hand_built_cache(saved, "someone/encoder")
    encoder = sslzoo.load("hf-hub:someone/encoder")
    assert torch.equal(features(encoder), features(sslzoo.load(saved)))


def test_hub_revision_is_honoured(saved, tmp_path):
    other = tmp_path / "other"
    torch.manual_seed(2)
    sslzoo.Encoder().save_pretrained(other)
    hand_built_cache(saved, "someone/encoder", COMMIT, "main")
    hand_built_cache(other, "someone/encoder", OTHER_COMMIT, "v2")
    main, v2 = sslzoo.load("hf-hub:someone/encoder"), sslzoo.load("hf-hub:someone/encoder@v2")
    pinned = sslzoo.load(f"hf-hub:someone/encoder@{OTHER_COMMIT}")
    assert not torch.equal(features(main), features(v2))
    assert torch.equal(features(v2), features(pinned))


def test_hub_id_missing_offline_says_so():
    with pytest.raises(sslzoo.WeightsNotAvailableError, match="not in the local Hugging Face cache"):
        sslzoo.load("hf-hub:someone/absent")
    with pytest.raises(sslzoo.WeightsNotAvailableError, match="org/repo"):
        sslzoo.load("hf-hub:no-slash")


def test_unknown_name_raises_with_suggestions():
    with pytest.raises(sslzoo.UnknownModelError, match="mixco-resnet18-cifar100"):
        sslzoo.load("mixco-resnet18-cifar1000")


def test_known_name_without_weights_says_how_to_train_them():
    with pytest.raises(sslzoo.WeightsNotAvailableError) as error:
        sslzoo.load("mixco-resnet18-cifar100")
    message = str(error.value)
    assert "sslzoo-train --method mixco" in message and "--dataset cifar100" in message
    assert "SSLZOO_HOME" not in message or "mixco-resnet18-cifar100" in message


def test_name_is_found_in_sslzoo_home(saved):
    home = sslzoo.sslzoo_home() / "byol-resnet18-cifar10"
    shutil.copytree(saved, home)
    assert torch.equal(features(sslzoo.load("byol-resnet18-cifar10")), features(sslzoo.load(saved)))


def test_name_on_the_hub_is_downloaded_through_the_cache_and_checked(saved, monkeypatch):
    patch_entry(monkeypatch, "byol-resnet18-cifar100", weights="hub", sha256=sha256_of(saved / "model.safetensors"))
    hand_built_cache(saved, "sslzoo/byol-resnet18-cifar100")
    assert torch.equal(features(sslzoo.load("byol-resnet18-cifar100")), features(sslzoo.load(saved)))


def test_checksum_mismatch_names_the_file_and_leaves_nothing_in_the_cache(saved, monkeypatch):
    patch_entry(monkeypatch, "byol-resnet18-cifar100", weights="hub", sha256="0" * 64)
    snapshot = hand_built_cache(saved, "sslzoo/byol-resnet18-cifar100")
    with pytest.raises(sslzoo.CorruptWeightsError, match="sha256") as error:
        sslzoo.load("byol-resnet18-cifar100")
    assert error.value.path.name == "model.safetensors"
    assert not (snapshot / "model.safetensors").exists()


def test_checksum_mismatch_in_sslzoo_home_is_refused(saved, monkeypatch):
    patch_entry(monkeypatch, "byol-resnet18-cifar10", weights="hub", sha256="0" * 64)
    shutil.copytree(saved, sslzoo.sslzoo_home() / "byol-resnet18-cifar10")
    with pytest.raises(sslzoo.CorruptWeightsError, match="does not match the registry"):
        sslzoo.load("byol-resnet18-cifar10")


def test_corrupt_weights_file_is_named(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(sslzoo.CorruptWeightsError) as error:
        sslzoo.load(broken)
    assert error.value.path == broken / "model.safetensors"


def test_corrupt_cached_hub_file_is_evicted(saved):
    snapshot = hand_built_cache(saved, "someone/broken")
    (snapshot / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(sslzoo.CorruptWeightsError, match="safetensors"):
        sslzoo.load("hf-hub:someone/broken")
    assert not (snapshot / "model.safetensors").exists()


def test_weights_that_do_not_fit_the_config_are_refused(saved, tmp_path):
    mismatched = tmp_path / "mismatched"
    shutil.copytree(saved, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**config, "backbone": "resnet50"}))
    with pytest.raises(sslzoo.CorruptWeightsError, match="do not match config.json"):
        sslzoo.load(mismatched)
    (mismatched / "config.json").write_text("{not json")
    with pytest.raises(sslzoo.CorruptWeightsError, match="config.json"):
        sslzoo.load(mismatched)


def test_missing_folder_or_file_is_a_clear_error(saved, tmp_path):
    with pytest.raises(sslzoo.WeightsNotAvailableError, match="no such folder"):
        sslzoo.load(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(saved / "config.json", partial)
    with pytest.raises(sslzoo.WeightsNotAvailableError, match="model.safetensors"):
        sslzoo.load(partial)


def test_bundled_default_matches_its_registered_checksum():
    name = sslzoo.default_model()
    assert name is not None, "the package must bundle a default encoder (the demo serves it offline)"
    info = sslzoo.model_info(name)
    assert info.weights == "bundled" and info.metrics, "the default's registry entry holds its measured metrics"
    from sslzoo.loading import bundled_weights_dir

    assert sha256_of(bundled_weights_dir(name) / "model.safetensors") == info.sha256
    encoder = sslzoo.load(name)
    assert encoder.provenance.get("method") == info.method
    assert encoder.weights_sha256 == info.sha256


BAD_CONFIG_VALUES = [
    ("input_size", "abc"),
    ("input_size", float("nan")),
    ("input_size", float("inf")),
    ("input_size", 0),
    ("input_size", 1e12),
    ("input_size", True),
    ("mean", "abc"),
    ("mean", [0.5, 0.5, 0.5, 0.5, 0.5]),
    ("mean", [0.5, float("nan"), 0.5]),
    ("std", [0, 0, 0]),
    ("std", [0.2, -0.2, 0.2]),
    ("interpolation", "box"),
    ("backbone", 18),
    ("provenance", "str"),
]


@pytest.mark.parametrize(("field", "value"), BAD_CONFIG_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_CONFIG_VALUES])
def test_every_config_field_is_checked_at_load_time_and_the_error_names_file_and_field(saved, tmp_path, field, value):
    folder = tmp_path / "bad"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))  # NaN/Infinity as JSON allows
    with pytest.raises(sslzoo.CorruptWeightsError) as error:
        sslzoo.load(folder)
    assert error.value.path == folder / "config.json"
    message = str(error.value)
    assert message.startswith(f"{folder / 'config.json'}: not a valid sslzoo config: {field}: "), message
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_unknown_or_non_object_configs_are_refused_with_the_file_name(saved, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "width_multiplier": 2}))
    with pytest.raises(sslzoo.CorruptWeightsError, match=r"config.json: .*unknown field\(s\) \['width_multiplier'\]"):
        sslzoo.load(folder)
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(sslzoo.CorruptWeightsError, match=r"config.json: .*must be a JSON object"):
        sslzoo.load(folder)


def test_a_corrupt_cached_hub_config_is_evicted_so_a_retry_can_fetch_it_again(saved):
    snapshot = hand_built_cache(saved, "someone/bad-config")
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "input_size": "abc"}))
    with pytest.raises(sslzoo.CorruptWeightsError, match="input_size"):
        sslzoo.load("hf-hub:someone/bad-config")
    assert not (snapshot / "config.json").exists()  # the file at fault; the weights were fine
    assert (snapshot / "model.safetensors").exists()
    with pytest.raises(sslzoo.WeightsNotAvailableError, match="not in the local Hugging Face cache"):
        sslzoo.load("hf-hub:someone/bad-config")  # offline: the next try looks for a fresh config


def test_a_cached_hub_config_that_does_not_fit_its_weights_is_evicted_with_them(saved):
    snapshot = hand_built_cache(saved, "someone/misfit")
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "backbone": "resnet50"}))
    with pytest.raises(sslzoo.CorruptWeightsError, match="do not match config.json"):
        sslzoo.load("hf-hub:someone/misfit")
    assert not (snapshot / "config.json").exists() and not (snapshot / "model.safetensors").exists()


def test_encoder_arguments_are_checked_like_a_config(tmp_path):
    with pytest.raises(sslzoo.ConfigError, match=r"^input_size: .* from 8 to 4096 \(got 0\)"):
        sslzoo.Encoder(input_size=0)
    with pytest.raises(sslzoo.ConfigError, match=r"^std: "):
        sslzoo.Encoder(std=(0.0, 0.0, 0.0))
    assert sslzoo.Encoder(input_size=32.0, mean=np.array([0.5, 0.5, 0.5])).config["input_size"] == 32


def test_the_bundled_defaults_numbers_are_those_of_its_file():
    """Registry, config.json, results.json and the card all carry the numbers measured on the shipped file."""
    from sslzoo.export.results import normalise_metrics

    from sslzoo.loading import bundled_weights_dir

    name = sslzoo.default_model()
    info = sslzoo.model_info(name)
    folder = bundled_weights_dir(name)
    assert info.metrics["weights_sha256"] == info.sha256 == sha256_of(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    results = json.loads((folder / "results.json").read_text())
    assert normalise_metrics(config["provenance"]["metrics"]) == info.metrics
    assert results["metrics"] == info.metrics and results["weights_sha256"] == info.sha256
    card = (folder / "README.md").read_text()
    assert f"sha256 `{info.sha256}`" in card
    for entry in info.metrics["knn"]:
        assert f"| {entry['top1']:.2f} | {entry['top5']:.2f} |" in card
