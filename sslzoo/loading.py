"""`sslzoo.load`: one call that turns a name, a folder or a Hub id into a ready `Encoder`.

A registry name is looked up, in order, in the weights bundled with the package, in
`$SSLZOO_HOME/<name>/`, then on the Hub. Published weights are checked against the sha256 the
registry records; a file that fails is named in the error and never left in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import hub
from .encoder import Encoder
from .errors import CorruptWeightsError, WeightsNotAvailableError
from .registry import ModelInfo, model_info

HOME_ENV = "SSLZOO_HOME"


def sslzoo_home() -> Path:
    """Where users keep weights they trained or fetched by hand: `$SSLZOO_HOME`, else ~/.cache/sslzoo."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "sslzoo").expanduser()


def bundled_weights_dir(name: str) -> Path:
    """Folder of the weights shipped inside the package for `name` (may not exist)."""
    return Path(str(resources.files("sslzoo").joinpath("weights", name)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(ref: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """An `Encoder` in eval mode on `device`.

    `ref` is a registry name (`"mixco-resnet18-cifar100"`), a local folder holding `config.json`
    and `model.safetensors`, or `"hf-hub:org/repo[@revision]"`.
    """
    ref_str = os.fspath(ref)
    if ref_str.startswith(hub.HUB_PREFIX):
        repo_id, revision = hub.parse_hub_ref(ref_str)
        folder = hub.download_model(repo_id, revision)
        return _load_checked(folder, device, expected_sha256=None, evict_on_failure=True)
    if isinstance(ref, os.PathLike) or os.sep in ref_str or Path(ref_str).is_dir():
        folder = Path(ref_str).expanduser()
        if not folder.is_dir():
            raise WeightsNotAvailableError(f"{folder}: no such folder.")
        return _load_checked(folder, device, expected_sha256=None)
    return _load_registered(model_info(ref_str), device)


def _load_registered(info: ModelInfo, device: str | torch.device) -> Encoder:
    for folder in (bundled_weights_dir(info.name), sslzoo_home() / info.name):
        if (folder / hub.WEIGHTS_NAME).is_file():
            return _load_checked(folder, device, expected_sha256=info.sha256)
    if info.weights == "hub":
        folder = hub.download_model(info.hub_repo)
        return _load_checked(folder, device, expected_sha256=info.sha256, evict_on_failure=True)
    supervised = " (uses labels)" if info.supervised else ""
    raise WeightsNotAvailableError(
        f"{info.name} has not been trained yet, so no weights exist to load. Train it{supervised} with\n"
        f"  sslzoo-train --method {info.method} --backbone {info.backbone} --dataset {info.dataset} --out runs/{info.name}\n"
        f"then load the folder it writes: sslzoo.load('runs/{info.name}/model'), or copy that folder to "
        f"{sslzoo_home() / info.name} so sslzoo.load({info.name!r}) finds it."
    )


def _load_checked(
    folder: Path,
    device: str | torch.device,
    expected_sha256: str | None,
    evict_on_failure: bool = False,
) -> Encoder:
    config_path, weights_path = folder / hub.CONFIG_NAME, folder / hub.WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise WeightsNotAvailableError(f"{path}: missing; an sslzoo model folder holds config.json and model.safetensors.")
    try:
        if expected_sha256 is not None:
            actual = sha256_of(weights_path)
            if actual != expected_sha256:
                raise CorruptWeightsError(weights_path, f"sha256 {actual} does not match the registry's {expected_sha256}.")
        try:
            config = json.loads(config_path.read_text())
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            raise CorruptWeightsError(config_path, f"not a valid sslzoo config ({error}).") from error
        try:
            state = load_file(weights_path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CorruptWeightsError(weights_path, f"not a readable safetensors file ({error}).") from error
        try:
            encoder = Encoder(**config)
        except TypeError as error:
            raise CorruptWeightsError(config_path, f"not a valid sslzoo config ({error}).") from error
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise CorruptWeightsError(weights_path, f"weights do not match config.json ({first}).") from error
    except CorruptWeightsError:
        if evict_on_failure:
            hub.evict_cached_file(weights_path)
        raise
    return encoder.to(device).eval()

