"""Push through a recording stand-in for `HfApi`; pull through a hand-built Hugging Face cache (offline)."""

from __future__ import annotations

import json
import os
import re
import shutil
from types import SimpleNamespace

import httpx2  # huggingface_hub's HTTP client, for a realistic error
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image
from sslzoo.export.cli import main

import sslzoo
from sslzoo import Encoder, SslzooError, hub

REPO = "me/tiny-simclr"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class RecordingHfApi:
    """Stands in for `huggingface_hub.HfApi`: records every call and what the folder held when uploaded."""

    instances: list[RecordingHfApi] = []
    fail_with: Exception | None = None

    def __init__(self, token=None, library_name=None, **kwargs):
        self.token, self.library_name, self.calls = token, library_name, []
        RecordingHfApi.instances.append(self)

    def create_repo(self, repo_id, **kwargs):
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = kwargs["folder_path"]
        files = sorted((name, os.path.getsize(os.path.join(folder, name))) for name in os.listdir(folder))
        self.calls.append(("upload_folder", kwargs["repo_id"], {**kwargs, "files_at_upload": files}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{COMMIT}")


@pytest.fixture(autouse=True)
def recording_api(monkeypatch):
    RecordingHfApi.instances, RecordingHfApi.fail_with = [], None
    monkeypatch.setattr(hub, "HfApi", RecordingHfApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "get_token", lambda: os.environ.get("HF_TOKEN"))  # no token file of the machine
    return RecordingHfApi


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export, with a dry-run push so the card's snippets point at REPO."""
    root = tmp_path_factory.mktemp("push")
    torch.manual_seed(0)
    encoder = Encoder(provenance={"name": "tiny-simclr", "method": "simclr", "dataset": "cifar10"}).eval()
    encoder.save_pretrained(root / "run" / "model")
    out = root / "tiny-simclr"
    result = CliRunner().invoke(
        main, [str(root / "run" / "model"), "--out", str(out), "--push", REPO, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    return out, encoder, result.output


def test_dry_run_lists_files_and_sizes_without_network_or_token(exported, recording_api):
    out, _, output = exported
    assert "Dry run: would upload 5 files" in output and f"to {REPO}@main:" in output
    for name in ("README.md", "config.json", "model.onnx", "model.safetensors", "results.json"):
        assert re.search(rf"^  {re.escape(name)}\s+[\d.]+ (B|kB|MB)$", output, re.MULTILINE), name
    report = hub.upload_folder(out, REPO, dry_run=True)
    assert dict(report["files"]) == {path.name: path.stat().st_size for path in out.iterdir()}
    assert report["total_bytes"] == sum(size for _, size in report["files"])
    assert recording_api.instances == []  # no HfApi was ever built


def test_push_creates_the_repo_and_uploads_the_folder(exported, recording_api, monkeypatch, tmp_path):
    out, _, _ = exported
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    result = CliRunner().invoke(
        main, [str(out), "--out", str(tmp_path / "again"), "--to", "safetensors", "--push", REPO, "--private"]
    )
    assert result.exit_code == 0, result.output
    (api,) = recording_api.instances
    assert api.token == "hf_from_env" and api.library_name == "sslzoo"
    (create, upload) = api.calls
    assert create == ("create_repo", REPO, {"private": True, "repo_type": "model", "exist_ok": True})
    assert (
        upload[1] == REPO and upload[2]["folder_path"] == tmp_path / "again" and upload[2]["revision"] is None
    )
    assert [name for name, _ in upload[2]["files_at_upload"]] == [
        "README.md",
        "config.json",
        "model.safetensors",
        "results.json",
    ]
    assert "Pushed 4 files" in result.output and f"/commit/{COMMIT}" in result.output


def test_push_to_a_branch_creates_it_first(exported, recording_api):
    out, _, _ = exported
    report = hub.upload_folder(out, REPO, revision="v1", token="hf_explicit")
    (api,) = recording_api.instances
    assert api.token == "hf_explicit"
    assert [call[0] for call in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[1] == ("create_branch", REPO, {"branch": "v1", "repo_type": "model", "exist_ok": True})
    assert api.calls[2][2]["revision"] == "v1"
    assert report["revision"] == "v1" and report["commit_url"].endswith(COMMIT)


def test_no_token_fails_before_any_work(exported, recording_api, tmp_path):
    out, _, _ = exported
    result = CliRunner().invoke(main, [str(out), "--out", str(tmp_path / "never"), "--push", REPO])
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: No Hugging Face token found") and "HF_TOKEN" in line
    assert list(tmp_path.iterdir()) == [] and recording_api.instances == []


def test_hub_errors_become_one_clear_message(exported, recording_api):
    out, _, _ = exported
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    recording_api.fail_with = HfHubHTTPError(
        "403 Forbidden: you cannot write to me/tiny-simclr\nmore detail",
        response=httpx2.Response(403, request=request),
    )
    with pytest.raises(SslzooError, match=r"^Push to me/tiny-simclr failed: 403 Forbidden: you cannot write"):
        hub.upload_folder(out, REPO, token="hf_x")


@pytest.mark.parametrize("bad", ["tiny-simclr", "me/tiny@v1", "a/b/c"])
def test_bad_repo_ids_are_refused(exported, bad):
    out, _, _ = exported
    with pytest.raises(SslzooError, match="not a Hub repository id"):
        hub.upload_folder(out, bad, dry_run=True)


def hand_built_cache(folder, repo_id=REPO, refs=("main",)):
    """The layout huggingface_hub keeps: models--org--name/{refs/<ref>, snapshots/<commit>/<files>}."""
    repo = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "refs"))
    for ref in refs:
        with open(os.path.join(repo, "refs", ref), "w") as handle:
            handle.write(COMMIT)
    shutil.copytree(folder, os.path.join(repo, "snapshots", COMMIT))


def test_pull_reads_the_pushed_folder_back_bit_exactly(exported):
    out, encoder, _ = exported
    hand_built_cache(out, refs=("main", "v1"))
    for ref in (f"hf-hub:{REPO}", f"hf-hub:{REPO}@v1"):
        loaded = sslzoo.load(ref)
        for key, tensor in encoder.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], tensor), (ref, key)
        assert loaded.provenance["name"] == "tiny-simclr"


def test_the_cards_usage_snippets_run_against_the_pulled_repo(exported, tmp_path, monkeypatch):
    out, encoder, _ = exported
    hand_built_cache(out)
    monkeypatch.chdir(tmp_path)
    generator = np.random.default_rng(0)
    for name in ("cat.png", "dog.png"):  # 48x32: the snippets must centre-crop the long side
        Image.fromarray(generator.integers(0, 256, (48, 32, 3), dtype=np.uint8)).save(name)
    blocks = re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(), re.DOTALL)
    sslzoo_snippet, onnx_snippet = blocks
    assert (
        f'sslzoo.load("hf-hub:{REPO}")' in sslzoo_snippet
        and f'hf_hub_download("{REPO}", "model.onnx")' in onnx_snippet
    )

    expected = encoder(encoder.preprocess(["cat.png"])).detach()
    python_scope: dict = {}
    exec(sslzoo_snippet, python_scope)
    assert python_scope["features"].shape == (2, 512)
    torch.testing.assert_close(python_scope["features"][0], torch.nn.functional.normalize(expected, dim=1)[0])

    onnx_scope: dict = {}
    exec(onnx_snippet, onnx_scope)
    assert onnx_scope["features"].shape == (1, 512)
    np.testing.assert_allclose(onnx_scope["features"], expected.numpy(), rtol=0, atol=1e-4)
    assert json.loads((out / "results.json").read_text())["onnx"]["providers"] == ["CPUExecutionProvider"]


def test_an_unreachable_hub_is_one_line_and_the_export_stays_complete(
    exported, recording_api, monkeypatch, tmp_path
):
    out, _, _ = exported
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    recording_api.fail_with = httpx2.ConnectError("[Errno 101] Network is unreachable")
    target = tmp_path / "again"
    result = CliRunner().invoke(main, [str(out), "--out", str(target), "--push", REPO, "--revision", "v1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    error_line = result.output.strip().splitlines()[-1]
    assert error_line.startswith(
        f"Error: Push to {REPO} failed: cannot reach the Hub (ConnectError: [Errno 101] Network is unreachable)."
    )
    assert (
        f"The export in {target} is complete" in error_line
        and f"hf upload {REPO} {target} --revision v1" in error_line
    )
    assert {path.name for path in target.iterdir()} == {path.name for path in out.iterdir()}
    loaded = sslzoo.load(target)
    assert loaded.provenance["name"] == "tiny-simclr"


@pytest.mark.parametrize(
    "error",
    [
        httpx2.ConnectTimeout("timed out"),
        httpx2.ReadError("connection reset by peer"),
        OSError(101, "Network is unreachable"),
    ],
)
def test_every_network_failure_becomes_one_line(exported, recording_api, error):
    out, _, _ = exported
    recording_api.fail_with = error
    with pytest.raises(SslzooError) as raised:
        hub.upload_folder(out, REPO, token="hf_x")
    assert str(raised.value).startswith(f"Push to {REPO} failed: ") and "\n" not in str(raised.value)


@pytest.mark.parametrize("bad", ["me/bad name", "me/tiny@v1", "me/..", "tiny-simclr"])
def test_a_malformed_repo_id_is_refused_before_any_export(run_folder_for_push, bad, tmp_path, monkeypatch):
    import sslzoo.export.folder as export_folder  # the command imports it when it runs

    monkeypatch.setattr(export_folder, "export_folder", lambda *a, **k: pytest.fail("exported before checking"))
    result = CliRunner().invoke(
        main, [str(run_folder_for_push), "--out", str(tmp_path / "out"), "--push", bad, "--dry-run"]
    )
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {bad!r} is not a Hub repository id") and not (tmp_path / "out").exists()


@pytest.fixture
def run_folder_for_push(tmp_path):
    Encoder(provenance={"method": "simclr", "dataset": "cifar10"}).save_pretrained(tmp_path / "model")
    return tmp_path / "model"
