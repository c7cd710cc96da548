"""Weights kept in the repository's history: `python -m sslzoo.export stash` commits an entry's fp16
shards and removes them in the next commit; `sslzoo.load(name)` restores them from a clone, every
sha256 checked, and says which git command fetches them where the clone lacks the commit. Each
test works in a throwaway git repository of its own (no network: clones are file:// ones)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from sslzoo.export.cli import main as export_main
from sslzoo.export.cli import tools
from sslzoo.export.results import record_results
from sslzoo.export.stash import StashError, stash
from sslzoo.export.zoo_table import END_MARKER, START_MARKER

import sslzoo
from sslzoo import history, hub, loading, registry
from sslzoo.weight_files import INDEX_NAME, combined_sha256, sha256_of

NAME = "byol-resnet18-cifar10"  # not the bundled default


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(autouse=True)
def _git_config_of_its_own(tmp_path_factory, monkeypatch):
    """The machine's git configuration (signing, hooks, templates) must not change what the tests see."""
    config = tmp_path_factory.getbasetemp() / "gitconfig"
    config.write_text("[user]\n\tname = Test\n\temail = test@example.com\n[core]\n\tcompression = 0\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture(autouse=True)
def _nothing_bundled(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "bundled_weights_dir", lambda name: tmp_path / "nothing-bundled" / name)


def make_repository(root: Path) -> Path:
    """A project clone in miniature: a blank registry at sslzoo/zoo.json, model cards, a README table."""
    repo = root / "project"
    (repo / "sslzoo").mkdir(parents=True)
    (repo / "model_cards").mkdir()
    data = json.loads(registry.registry_path().read_text())
    data["default_model"] = None
    for entry in data["models"]:
        entry.update(weights="none", sha256=None, metrics={}, training={})
    (repo / "sslzoo" / "zoo.json").write_text(json.dumps(data, indent=1) + "\n")
    (repo / "model_cards" / "README.md").write_text("# Zoo\n")
    (repo / "README.md").write_text(f"# Project\n\n{START_MARKER}\n{END_MARKER}\n")
    git(root, "init", "--quiet", "-b", "main", str(repo))
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "Initial")
    return repo


def use_registry_of(repo: Path, monkeypatch) -> None:
    """sslzoo reads the registry of `repo`, as it does the one of the clone it runs from."""
    monkeypatch.setattr(registry, "registry_path", lambda: repo / "sslzoo" / "zoo.json")
    registry.clear_cache()


def make_model(folder: Path, seed: int = 3) -> sslzoo.Encoder:
    """A freshly initialised encoder saved as a training run leaves it (fp32, one file)."""
    torch.manual_seed(seed)
    encoder = sslzoo.Encoder(input_size=16, provenance={"method": "byol", "dataset": "cifar10"}).eval()
    encoder.save_pretrained(folder)
    return encoder


def fp16_state(encoder: sslzoo.Encoder) -> dict[str, torch.Tensor]:
    """What the history keeps: the weights in half precision, read back as sslzoo.load does."""
    return {key: value.half().to(value.dtype) for key, value in encoder.state_dict().items()}


def assert_same_weights(loaded: sslzoo.Encoder, expected: dict[str, torch.Tensor]) -> None:
    state = loaded.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[key], value) for key, value in expected.items())


@pytest.fixture(scope="module")
def stashed(tmp_path_factory):
    """One repository in which a tiny encoder was stashed (5 MB shards), shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("stashed")
    with pytest.MonkeyPatch.context() as patch:
        config = root / "gitconfig"
        config.write_text("[user]\n\tname = Test\n\temail = test@example.com\n[core]\n\tcompression = 0\n")
        patch.setenv("GIT_CONFIG_GLOBAL", str(config))
        patch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        repo = make_repository(root)
        encoder = make_model(root / "run" / "model")
        before = git(repo, "rev-parse", "HEAD")
        use_registry_of(repo, patch)
        result = stash(root / "run" / "model", max_shard_size="5MB")
        registry.clear_cache()
    return SimpleNamespace(repo=repo, before=before, result=result, expected=fp16_state(encoder), root=root)


@pytest.fixture
def repo(stashed, monkeypatch) -> Path:
    use_registry_of(stashed.repo, monkeypatch)
    yield stashed.repo
    registry.clear_cache()


def test_stash_commits_the_fp16_shards_then_records_them_and_removes_them_from_the_tree(stashed, repo):
    result = stashed.result
    weights_commit = result.weights_commits[NAME]
    assert git(repo, "rev-list", f"{stashed.before}..HEAD").split() == [result.recorded_in, weights_commit]
    assert git(repo, "rev-parse", "HEAD^") == weights_commit
    # The first commit holds the folder; the second takes it out: the tree is as small as before.
    in_commit = git(repo, "ls-tree", "-r", "--name-only", weights_commit, "--", "weights").splitlines()
    shards = [f"model-{i:05d}-of-00005.safetensors" for i in range(1, 6)]
    assert sorted(in_commit) == sorted(
        f"weights/{NAME}/{name}" for name in ["config.json", INDEX_NAME, *shards]
    )
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD", "--", "weights") == ""
    assert not (repo / "weights").exists() and git(repo, "status", "--porcelain") == ""
    # The registry names that commit, the path and every file's sha256, all as git stores them.
    info = sslzoo.model_info(NAME)
    assert (info.weights, info.history["commit"], info.history["path"]) == (
        "history",
        weights_commit,
        f"weights/{NAME}",
    )
    for name, digest in info.history["files"].items():
        blob = subprocess.run(
            ["git", "-C", str(repo), "cat-file", "blob", f"{weights_commit}:weights/{NAME}/{name}"],
            check=True,
            capture_output=True,
        ).stdout
        assert __import__("hashlib").sha256(blob).hexdigest() == digest, name
    assert set(info.shards) == set(shards) and info.sha256 == combined_sha256(info.shards)
    assert info.shards == {name: info.history["files"][name] for name in shards}
    entries = json.loads((repo / "sslzoo" / "zoo.json").read_text())["models"]
    assert registry.check_entry(next(entry for entry in entries if entry["name"] == NAME)) is None
    # Cards and tables say where the weights are; the second commit carries them with the registry.
    changed = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert {"sslzoo/zoo.json", f"model_cards/{NAME}.md", "model_cards/README.md", "README.md"} <= set(changed)
    row = next(line for line in (repo / "README.md").read_text().splitlines() if f"| [{NAME}](model_cards/{NAME}.md) |" in line)
    assert row.endswith("| git history |")
    assert f'sslzoo.load("{NAME}")' in (repo / "model_cards" / f"{NAME}.md").read_text()


def test_load_restores_the_weights_from_the_history_bit_for_bit(stashed, repo):
    home = sslzoo.sslzoo_home() / NAME
    assert not home.exists()
    loaded = sslzoo.load(NAME)
    assert_same_weights(loaded, stashed.expected)
    info = sslzoo.model_info(NAME)
    assert sorted(path.name for path in home.iterdir()) == sorted(info.history["files"])
    assert all(sha256_of(home / name) == digest for name, digest in info.history["files"].items())
    assert not [path for path in home.parent.iterdir() if path.name.startswith(".")]  # no scratch left
    assert_same_weights(sslzoo.load(NAME), stashed.expected)  # the second load reads the restored copy


@pytest.mark.parametrize("damaged", ["model-00003-of-00005.safetensors", "config.json", INDEX_NAME])
def test_a_damaged_restored_file_is_refused_and_restored_again(stashed, repo, damaged):
    sslzoo.load(NAME)
    path = sslzoo.sslzoo_home() / NAME / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert_same_weights(sslzoo.load(NAME), stashed.expected)
    assert sha256_of(path) == sslzoo.model_info(NAME).history["files"][damaged]


def test_a_damaged_copy_without_the_history_at_hand_is_named_with_the_way_to_restore_it(
    stashed, repo, monkeypatch
):
    sslzoo.load(NAME)
    shard = sslzoo.sslzoo_home() / NAME / "model-00002-of-00005.safetensors"
    with open(shard, "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x00\x01")
    monkeypatch.setattr(history, "registry_repository", lambda: None)  # as from a pip install
    with pytest.raises(sslzoo.CorruptWeightsError, match="sha256") as error:
        sslzoo.load(NAME)
    assert error.value.path == shard
    assert f"git fetch origin {sslzoo.model_info(NAME).history['commit']}" in str(error.value)


def test_a_clone_without_the_commit_names_the_command_that_fetches_it(stashed, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", "--depth", "1", f"file://{stashed.repo}", str(clone))
    use_registry_of(clone, monkeypatch)
    commit = sslzoo.model_info(NAME).history["commit"]
    with pytest.raises(sslzoo.WeightsNotAvailableError) as error:
        sslzoo.load(NAME)
    message = str(error.value)
    command = shlex.join(["git", "-C", str(clone), "fetch", "origin", commit])
    assert command in message and str(sslzoo.sslzoo_home() / NAME) in message
    assert not (sslzoo.sslzoo_home() / NAME).exists()
    # The command in the message is the one that works.
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    assert_same_weights(sslzoo.load(NAME), stashed.expected)


def test_without_a_clone_the_error_says_how_to_restore_the_weights_from_one(stashed, tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "sslzoo"
    installed.mkdir(parents=True)
    shutil.copy(stashed.repo / "sslzoo" / "zoo.json", installed / "zoo.json")
    monkeypatch.setattr(registry, "registry_path", lambda: installed / "zoo.json")
    registry.clear_cache()
    with pytest.raises(sslzoo.WeightsNotAvailableError) as error:
        sslzoo.load(NAME)
    message = str(error.value)
    commit = sslzoo.model_info(NAME).history["commit"]
    assert f"git fetch origin {commit}" in message
    assert f"python -c \"import sslzoo; sslzoo.load('{NAME}')\"" in message
    assert str(sslzoo.sslzoo_home() / NAME) in message


def test_push_publishes_weights_restored_from_the_history(stashed, repo, tmp_path, monkeypatch):
    uploads = []

    class RecordingHfApi:
        def __init__(self, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            uploads.append(sorted(os.listdir(kwargs["folder_path"])))
            return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0")

    monkeypatch.setattr(hub, "HfApi", RecordingHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "export"
    arguments = [NAME, "--to", "safetensors", "--fp16", "--max-shard-size", "5MB", "--out", str(out)]
    result = CliRunner().invoke(export_main, [*arguments, "--push", "me/byol-cifar10"])
    assert result.exit_code == 0, result.output
    assert "Pushed" in result.output and uploads and INDEX_NAME in uploads[0]
    assert_same_weights(sslzoo.load(out), stashed.expected)
    # The same fp16 shards as in the history: the registry's sha256 describes the pushed weights too.
    assert json.loads((out / "results.json").read_text())["weights_sha256"] == sslzoo.model_info(NAME).sha256


def test_stash_refuses_changes_in_the_paths_it_commits_and_leaves_everything_as_it_was(tmp_path, monkeypatch):
    repo = make_repository(tmp_path)
    make_model(tmp_path / "model")
    use_registry_of(repo, monkeypatch)
    head = git(repo, "rev-parse", "HEAD")
    registry_file = repo / "sslzoo" / "zoo.json"
    registry_file.write_text(registry_file.read_text() + " ")
    with pytest.raises(StashError, match="Uncommitted changes.*sslzoo/zoo.json"):
        stash(tmp_path / "model", max_shard_size="5MB")
    git(repo, "checkout", "--", "sslzoo/zoo.json")
    (repo / "weights" / NAME).mkdir(parents=True)
    with pytest.raises(StashError, match=f"weights/{NAME}/ exists but is not committed"):
        stash(tmp_path / "model", max_shard_size="5MB")
    shutil.rmtree(repo / "weights")
    # A git filter would store other bytes than the registry's sha256 describes: refused, nothing committed.
    (repo / ".gitattributes").write_text("weights/** filter=upper\n")
    git(repo, "config", "filter.upper.clean", "tr a-z A-Z")
    with pytest.raises(StashError, match="filter"):
        stash(tmp_path / "model", max_shard_size="5MB")
    assert git(repo, "rev-parse", "HEAD") == head and not (repo / "weights").exists()
    assert git(repo, "status", "--porcelain") == "?? .gitattributes"
    assert sslzoo.model_info(NAME).weights == "none"


@pytest.mark.slow  # three stashes of a 22 MB model
def test_a_stash_stopped_between_its_commits_is_finished_by_running_it_again(tmp_path, monkeypatch):
    repo = make_repository(tmp_path)
    encoder = make_model(tmp_path / "model")
    use_registry_of(repo, monkeypatch)
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")  # the user's staged work: never swept into the stash's commits
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\ngit diff --cached --name-only | grep -q zoo.json && exit 1\nexit 0\n")
    hook.chmod(0o755)
    runner = CliRunner()
    first = runner.invoke(tools, ["stash", str(tmp_path / "model"), "--max-shard-size", "5MB"])
    assert first.exit_code == 1 and "committed" in first.output and "again" in first.output, first.output
    weights_commit = git(repo, "rev-parse", "HEAD")
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD", "--", f"weights/{NAME}")
    assert git(repo, "status", "--porcelain") == "A  notes.txt"  # the registry and cards as they were
    assert sslzoo.model_info(NAME).weights == "none"
    hook.unlink()
    second = runner.invoke(tools, ["stash", str(tmp_path / "model"), "--max-shard-size", "5MB"])
    assert second.exit_code == 0, second.output
    assert f"Stored {NAME}: 6 weight files in commit {weights_commit}" in second.output
    assert git(repo, "rev-parse", "HEAD^") == weights_commit and not (repo / "weights").exists()
    assert git(repo, "status", "--porcelain") == "A  notes.txt"
    assert "notes.txt" not in git(repo, "log", "--name-only", "--format=", "-2")
    assert_same_weights(sslzoo.load(NAME), fp16_state(encoder))
    # Stashing the same weights again changes nothing.
    third = runner.invoke(tools, ["stash", str(tmp_path / "model"), "--max-shard-size", "5MB"])
    assert third.exit_code == 0 and "already in the history" in third.output, third.output
    assert git(repo, "rev-parse", "HEAD^") == weights_commit


def test_the_registry_checks_every_history_record():
    shards = {"model-00001-of-00002.safetensors": "a" * 64, "model-00002-of-00002.safetensors": "b" * 64}
    good = {
        "name": NAME,
        "weights": "history",
        "sha256": combined_sha256(shards),
        "shards": shards,
        "history": {
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "path": f"weights/{NAME}",
            "files": {"config.json": "c" * 64, INDEX_NAME: "d" * 64, **shards},
        },
    }
    assert registry.check_entry(good) is None

    def problem(**changes) -> str:
        entry = json.loads(json.dumps(good))
        for key, value in changes.items():
            section, _, field = key.partition("__")
            (entry[section] if field else entry)[field or section] = value
        return registry.check_entry(entry) or ""

    assert "not a full commit id" in problem(history__commit="0123abc")
    assert "not a full commit id" in problem(history__commit="G" * 40)
    assert "lacks ['model-00002-of-00002.safetensors']" in problem(
        history__files={
            "config.json": "c" * 64,
            INDEX_NAME: "d" * 64,
            "model-00001-of-00002.safetensors": "a" * 64,
        }
    )
    assert "inside the package" in problem(history__path=f"sslzoo/weights/{NAME}")
    assert "relative folder" in problem(history__path=f"../{NAME}")
    assert "combined sha256" in problem(sha256="e" * 64)
    assert "needs a 'history' record" in problem(history=None)
    assert "only to weights='history'" in problem(weights="hub")


def test_a_registry_with_a_broken_history_record_fails_on_reading(zoo_json, tmp_path):
    data = json.loads(zoo_json.read_text())
    data["models"][0].update(
        weights="history", sha256="a" * 64, history={"commit": "abc", "path": "w", "files": {}}
    )
    zoo_json.write_text(json.dumps(data))
    registry.clear_cache()
    with pytest.raises(ValueError, match=f"{data['models'][0]['name']}: history.commit 'abc'"):
        sslzoo.list_models()
    registry.clear_cache()


def test_recording_the_history_state_needs_its_commit_and_folder(zoo_json, tmp_path):
    make_model(tmp_path / "model")
    with pytest.raises(sslzoo.ConfigError, match="stash"):
        record_results(NAME, weights="history", weights_file=tmp_path / "model")
    with pytest.raises(sslzoo.ConfigError, match="not a full commit id"):
        record_results(
            NAME,
            weights="history",
            weights_file=tmp_path / "model",
            history={"commit": "HEAD", "path": "weights/x"},
        )
    entries = json.loads(zoo_json.read_text())["models"]
    assert next(entry for entry in entries if entry["name"] == NAME)["weights"] == "none"
