"""Sharded safetensors: written as the Hub and transformers lay them out, read back bit-exactly by
`sslzoo.load` from a folder, the registry (every shard's sha256 checked) and the Hub cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import constants
from sslzoo.export.cli import main as export_main
from sslzoo.export.results import record_results

import sslzoo
from sslzoo.weight_files import INDEX_NAME, combined_sha256, shard_names, shard_sha256s, weights_sha256

NAME = "byol-resnet18-cifar10"


@pytest.fixture(scope="module")
def encoder() -> sslzoo.Encoder:
    torch.manual_seed(3)
    return sslzoo.Encoder(provenance={"method": "byol", "dataset": "cifar10"}).eval()


@pytest.fixture(scope="module")
def sharded(encoder, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    encoder.save_pretrained(folder, max_shard_size="5MB")
    return folder


def _features(model: sslzoo.Encoder) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.linspace(-2, 2, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))


def test_an_encoder_saved_in_5mb_shards_loads_back_with_identical_features(encoder, sharded):
    names = shard_names(sharded / INDEX_NAME)
    assert len(names) > 3 and not (sharded / "model.safetensors").exists()
    assert names[0] == f"model-00001-of-{len(names):05d}.safetensors"
    index = json.loads((sharded / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(encoder.state_dict())  # the transformers/Hub layout
    total = sum((sharded / name).stat().st_size for name in names)
    assert index["metadata"]["total_size"] <= total
    # Every shard is within the limit unless it holds a single tensor larger than it (layer4's convs).
    for name in names:
        size, held = (sharded / name).stat().st_size, [k for k, v in index["weight_map"].items() if v == name]
        assert size <= 5_000_000 + 1_000 or len(held) == 1, (name, size, held)
    loaded = sslzoo.load(sharded)
    assert torch.equal(_features(loaded), _features(encoder))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in encoder.state_dict().items())
    assert torch.equal(_features(sslzoo.Encoder.from_pretrained(sharded)), _features(encoder))


def test_saving_again_leaves_one_layout(encoder, tmp_path):
    encoder.save_pretrained(tmp_path, max_shard_size="15MB")
    first = shard_names(tmp_path / INDEX_NAME)
    encoder.save_pretrained(tmp_path)  # one file now: the index and shards must go
    assert not (tmp_path / INDEX_NAME).exists() and not any((tmp_path / name).exists() for name in first)
    encoder.save_pretrained(tmp_path, max_shard_size="10MB")
    assert not (tmp_path / "model.safetensors").exists()
    assert torch.equal(_features(sslzoo.load(tmp_path)), _features(encoder))


def test_sslzoo_export_writes_a_sharded_hub_folder_that_loads_bit_exactly(encoder, tmp_path):
    source = tmp_path / "model"
    encoder.save_pretrained(source)
    out = tmp_path / "export"
    result = CliRunner().invoke(
        export_main, [str(source), "--to", "safetensors", "--max-shard-size", "15MB", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    names = shard_names(out / INDEX_NAME)
    assert len(names) == 4 and all(f"{name}" in result.output for name in names)
    results = json.loads((out / "results.json").read_text())
    assert results["weights_sha256"] == weights_sha256(out) == combined_sha256(shard_sha256s(out))
    assert {name: results["files"][name]["sha256"] for name in names} == shard_sha256s(out)
    card = (out / "README.md").read_text()
    assert INDEX_NAME in card and "sslzoo.load(" in card
    loaded = sslzoo.load(out)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in encoder.state_dict().items())
    # Exporting the same weights again is recognised as the same model (no --overwrite needed).
    again = CliRunner().invoke(
        export_main, [str(out), "--to", "safetensors", "--max-shard-size", "15MB", "--out", str(out)]
    )
    assert again.exit_code == 0, again.output


def test_a_bad_shard_size_is_refused_before_any_work(encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "model")
    result = CliRunner().invoke(
        export_main, [str(tmp_path / "model"), "--max-shard-size", "15 parsecs", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "15MB" in result.output and not (tmp_path / "o").exists()


def test_the_registry_records_every_shards_sha256_and_load_checks_them(zoo_json, sharded, encoder, tmp_path):
    info = record_results(NAME, weights="hub", weights_file=sharded)
    assert info.shards == shard_sha256s(sharded) and len(info.shards) == len(shard_names(sharded / INDEX_NAME))
    assert info.sha256 == combined_sha256(info.shards)
    stored = json.loads(zoo_json.read_text())
    assert next(e for e in stored["models"] if e["name"] == NAME)["shards"] == info.shards
    home = Path(sslzoo.sslzoo_home()) / NAME
    shutil.copytree(sharded, home)
    assert torch.equal(_features(sslzoo.load(NAME)), _features(encoder))

    victim = home / sorted(info.shards)[1]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor's data: still a readable file
    victim.write_bytes(bytes(data))
    with pytest.raises(sslzoo.CorruptWeightsError, match="does not match the registry") as error:
        sslzoo.load(NAME)
    assert error.value.path == victim
    victim.unlink()
    with pytest.raises(sslzoo.CorruptWeightsError, match="missing") as error:
        sslzoo.load(NAME)
    assert error.value.path == victim
    # A single-file copy is not what the registry published.
    shutil.rmtree(home)
    encoder.save_pretrained(home)
    with pytest.raises(sslzoo.CorruptWeightsError, match="shards, not one file"):
        sslzoo.load(NAME)


def test_a_sharded_hub_repo_loads_from_the_cache_offline(sharded, encoder):
    repo = Path(constants.HF_HUB_CACHE) / "models--someone--sharded"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(sharded, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert torch.equal(_features(sslzoo.load("hf-hub:someone/sharded")), _features(encoder))


@pytest.mark.parametrize("shard", ["../outside.safetensors", "sub/dir.safetensors", "weights.bin"])
def test_an_index_that_points_outside_its_folder_is_refused(sharded, tmp_path, shard):
    folder = tmp_path / "m"
    shutil.copytree(sharded, folder)
    index = json.loads((folder / INDEX_NAME).read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    (folder / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(sslzoo.CorruptWeightsError, match="not a .safetensors file beside it"):
        sslzoo.load(folder)
