"""`sslzoo.load`: one call that turns a name, a folder or a Hub id into a ready `Encoder`.

A registry name is looked up, in order, in the weights bundled with the package, in
`$SSLZOO_HOME/<name>/`, then on the Hub, or for weights kept in the project's git history
(`sslzoo.history`) in the commit the registry names, restored into `$SSLZOO_HOME/<name>/` (a
copy there that fails its checks is restored again). Published weights are checked against the sha256 the
registry records, and `config.json` field by field (`sslzoo.encoder.check_config`) before any
weights are read; a file that fails is named in the error and never left in the Hub cache.
Weights are one `model.safetensors` or shards with their index (`sslzoo.weight_files`); a
sharded model's registry entry records each shard's sha256 as well, and every one is checked.
The loaded encoder remembers the checksum of the file it came from (`Encoder.weights_sha256`), so
a measurement of it can say which published file it measured.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import history, hub
from . import weight_files as files
from .encoder import Encoder, check_config
from .errors import ConfigError, CorruptWeightsError, WeightsNotAvailableError
from .registry import ModelInfo, model_info
from .weight_files import sha256_of

HOME_ENV = "SSLZOO_HOME"


def sslzoo_home() -> Path:
    """Where users keep weights they trained or fetched by hand: `$SSLZOO_HOME`, else ~/.cache/sslzoo."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "sslzoo").expanduser()


def bundled_weights_dir(name: str) -> Path:
    """Folder of the weights shipped inside the package for `name` (may not exist)."""
    return Path(str(resources.files("sslzoo").joinpath("weights", name)))


def load(
    ref: str | os.PathLike, device: str | torch.device = "cpu", num_classes: int | None = None
) -> Encoder:
    """An `Encoder` in eval mode on `device`.

    `ref` is a registry name (`"mixco-resnet18-cifar100"`), a local folder holding `config.json`
    and `model.safetensors`, or `"hf-hub:org/repo[@revision]"`.

    `num_classes=N` returns it with a linear head for fine-tuning (`model(x)` is then (B, N)
    logits; call `model.train()` before training): a fresh head unless the folder already holds
    an N-class one (a model saved after fine-tuning), which is kept. `num_classes=0` removes a
    head. Published weights are checked against the registry before the head is attached.
    """
    encoder = _load(ref, device)
    if num_classes is not None and num_classes != encoder.num_classes:
        encoder.reset_classifier(num_classes)
    return encoder.to(device).eval()


def _load(ref: str | os.PathLike, device: str | torch.device) -> Encoder:
    folder, info, from_hub = _locate(ref)
    if info is None:
        return _load_checked(folder, device, expected_sha256=None, evict_on_failure=from_hub)
    return _load_checked(
        folder, device, expected_sha256=info.sha256, expected_shards=info.shards, evict_on_failure=from_hub
    )


def model_folder(ref: str | os.PathLike) -> Path:
    """The folder whose `config.json` and weights `load(ref)` reads (fetched from the Hub if needed).

    For a registry name: the bundled weights, else `$SSLZOO_HOME/<name>/`, else the Hub snapshot.
    Nothing is checked here; `load` checks the registry's sha256.
    """
    return _locate(ref)[0]


def _locate(ref: str | os.PathLike) -> tuple[Path, ModelInfo | None, bool]:
    """(folder, the registry entry whose checksums apply or None, whether the folder is Hub cache)."""
    ref_str = os.fspath(ref)
    if ref_str.startswith(hub.HUB_PREFIX):
        repo_id, revision = hub.parse_hub_ref(ref_str)
        return hub.download_model(repo_id, revision), None, True
    if isinstance(ref, os.PathLike) or os.sep in ref_str or Path(ref_str).is_dir():
        folder = Path(ref_str).expanduser()
        if not folder.is_dir():
            raise WeightsNotAvailableError(f"{folder}: no such folder.")
        return folder, None, False
    info = model_info(ref_str)
    bundled = bundled_weights_dir(info.name)
    if info.weights == "history" and not _holds_weights(bundled):
        return _history_folder(info, sslzoo_home() / info.name), info, False
    for folder in (bundled, sslzoo_home() / info.name):
        if _holds_weights(folder):
            return folder, info, False
    if info.weights == "hub":
        return hub.download_model(info.hub_repo), info, True
    supervised = " (uses labels)" if info.supervised else ""
    raise WeightsNotAvailableError(
        f"{info.name} has not been trained yet, so no weights exist to load. Train it{supervised} with\n"
        f"  sslzoo-train --method {info.method} --backbone {info.backbone} --dataset {info.dataset} --out runs/{info.name}\n"
        f"then load the folder it writes: sslzoo.load('runs/{info.name}/model'), or copy that folder to "
        f"{sslzoo_home() / info.name} so sslzoo.load({info.name!r}) finds it."
    )


def _holds_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (hub.WEIGHTS_NAME, files.INDEX_NAME))


def _history_folder(info: ModelInfo, folder: Path) -> Path:
    """`folder` if it holds every file the registry records for `info`; else restored there from the
    git history (`sslzoo.history`). `load` then checks the weights' sha256 again, as for any entry."""
    recorded = info.history["files"]
    if _holds_weights(folder):
        wrong = history.first_mismatch(folder, recorded, list(recorded))
        if wrong is None:
            return folder
        if not history.can_restore(info):
            repo = history.registry_repository()
            raise CorruptWeightsError(
                folder / wrong,
                f"missing, or its sha256 is not the registry's. {history.not_available_message(info, repo, folder)}",
            )
    history.restore(info, folder)  # WeightsNotAvailableError with the fetch command if it cannot
    return folder


def _load_checked(
    folder: Path,
    device: str | torch.device,
    expected_sha256: str | None,
    evict_on_failure: bool = False,
    expected_shards: dict[str, str] | None = None,
) -> Encoder:
    sharded = files.is_sharded(folder)
    config_path = folder / hub.CONFIG_NAME
    weights_path = folder / (files.INDEX_NAME if sharded else hub.WEIGHTS_NAME)
    for path in (config_path, weights_path):
        if not path.is_file():
            raise WeightsNotAvailableError(
                f"{path}: missing; an sslzoo model folder holds config.json and model.safetensors "
                f"(or {files.INDEX_NAME} and its shards)."
            )
    weight_paths = [weights_path]
    mismatch = False
    try:
        config = _read_config(config_path)
        if sharded:
            weight_paths = files.weight_paths(folder)
        sha256 = _check_weight_hashes(folder, sharded, expected_sha256, expected_shards or {})
        if sharded:
            state = files.load_sharded(folder)
        else:
            try:
                state = load_file(weights_path)
            except (SafetensorError, OSError, ValueError) as error:
                raise CorruptWeightsError(weights_path, f"not a readable safetensors file ({error}).") from error
        encoder = Encoder(**config)
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            mismatch = True
            raise CorruptWeightsError(weights_path, f"weights do not match config.json ({first}).") from error
    except CorruptWeightsError as error:
        if evict_on_failure:  # the file at fault; every file when the fault is how they fit together
            if error.path == config_path:
                at_fault = [config_path]
            elif error.path in weight_paths and not mismatch:
                at_fault = [error.path]
            else:
                at_fault = [*weight_paths, config_path]
            for path in at_fault:
                hub.evict_cached_file(path)
        raise
    encoder.weights_sha256 = sha256
    return encoder.to(device).eval()


def _check_weight_hashes(
    folder: Path, sharded: bool, expected_sha256: str | None, expected_shards: dict[str, str]
) -> str:
    """The weights' checksum (`weight_files.weights_sha256`), checked against the registry's, and
    every shard's against the registry's when it records them."""
    if not sharded:
        path = folder / hub.WEIGHTS_NAME
        if expected_shards:
            raise CorruptWeightsError(
                path, f"the registry records these weights as {len(expected_shards)} shards, not one file."
            )
        actual = sha256_of(path)
        if expected_sha256 is not None and actual != expected_sha256:
            raise CorruptWeightsError(path, f"sha256 {actual} does not match the registry's {expected_sha256}.")
        return actual
    index = folder / files.INDEX_NAME
    names = files.shard_names(index)
    if expected_shards and set(names) != set(expected_shards):
        raise CorruptWeightsError(index, f"names the shards {names}; the registry records {sorted(expected_shards)}.")
    hashes = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise CorruptWeightsError(path, f"missing; {files.INDEX_NAME} names it as a shard of these weights.")
        hashes[name] = sha256_of(path)
        if expected_shards and hashes[name] != expected_shards[name]:
            raise CorruptWeightsError(
                path, f"sha256 {hashes[name]} does not match the registry's {expected_shards[name]}."
            )
    actual = files.combined_sha256(hashes)
    if expected_sha256 is not None and actual != expected_sha256:
        raise CorruptWeightsError(index, f"the shards' sha256 {actual} does not match the registry's {expected_sha256}.")
    return actual


def _read_config(path: Path) -> dict:
    """`config.json` parsed and checked field by field; `CorruptWeightsError` names the file and field."""
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptWeightsError(path, f"not a valid sslzoo config: not JSON ({error}).") from error
    except OSError as error:
        raise CorruptWeightsError(path, f"cannot be read ({error.strerror or error}).") from error
    try:
        return check_config(config)
    except ConfigError as error:
        raise CorruptWeightsError(path, f"not a valid sslzoo config: {error}") from error
