"""The files that hold a model's weights: one `model.safetensors`, or shards with their index.

Shards use the layout the Hub and `transformers` use: `model-00001-of-00004.safetensors`, ...
hold the tensors; `model.safetensors.index.json` maps each tensor name to its shard
(`{"metadata": {"total_size": N}, "weight_map": {name: file}}`). Writing is huggingface_hub's
`save_torch_state_dict`; reading validates the index (plain file names beside it, each tensor in
the shard it names).

`weights_sha256` is the one checksum that names a folder's weights, whichever the layout: the
sha256 of `model.safetensors`, or for shards the sha256 of their `sha256sum` lines
(`sha256sum model-*-of-*.safetensors | sha256sum` computes it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CorruptWeightsError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
#: An index is a name -> file map: a few kB for any encoder here; refuse anything absurd unread.
MAX_INDEX_BYTES = 10_000_000


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike, max_shard_size: int | str
) -> list[str]:
    """Write `state_dict` into `folder` as shards of at most `max_shard_size` ("15MB", or bytes).

    A tensor larger than the limit gets a shard of its own. Weight files left in `folder` by an
    earlier save (one file or other shards) are removed first. Returns the files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(dict(state_dict), folder, max_shard_size=max_shard_size)
    paths = weight_paths(folder)
    with_default_permissions(paths)
    return [path.name for path in paths]


def with_default_permissions(paths: list[Path]) -> None:
    """Give freshly written files the mode `open()` would have given them (0666 less the umask).

    safetensors >= 0.8 writes through a temporary file that is created 0600 and renamed into
    place (safetensors/safetensors#782), so `model.safetensors` would be readable by its owner
    only: a model saved in a container or for a shared cache could not be loaded by anyone else.
    """
    mode = 0o666 & ~_umask()
    for path in paths:
        os.chmod(path, mode)


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # elsewhere the only way to read it is to set it, then put it back
    os.umask(current)
    return current


def remove_shards(folder: str | os.PathLike) -> None:
    """Delete an index and its shards (before a single-file save, so the folder holds one layout)."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if not index.is_file():
        return
    for name in shard_names(index):
        (folder / name).unlink(missing_ok=True)
    index.unlink()


def is_sharded(folder: str | os.PathLike) -> bool:
    """True when `folder` holds an index and no single `model.safetensors`."""
    folder = Path(folder)
    return (folder / INDEX_NAME).is_file() and not (folder / WEIGHTS_NAME).is_file()


def shard_names(index_path: str | os.PathLike) -> list[str]:
    """The shard files an index names, validated: plain `.safetensors` file names beside it."""
    index_path = Path(index_path)
    try:
        if index_path.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"larger than {MAX_INDEX_BYTES} bytes")
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"] if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError("no 'weight_map' of tensor names to shard files")
    except (OSError, ValueError, KeyError) as error:
        raise CorruptWeightsError(index_path, f"not a valid shard index ({error}).") from error
    names = sorted(set(weight_map.values()))
    for name in names:
        plain = isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
        if not plain or "\\" in name or not name.endswith(".safetensors"):
            raise CorruptWeightsError(index_path, f"names a shard {name!r} that is not a .safetensors file beside it.")
    return names


def weight_paths(folder: str | os.PathLike) -> list[Path]:
    """The files that hold a model folder's weights: `model.safetensors`, or the index and its shards."""
    folder = Path(folder)
    if not is_sharded(folder):
        return [folder / WEIGHTS_NAME]
    return [folder / INDEX_NAME, *(folder / name for name in shard_names(folder / INDEX_NAME))]


def shard_sha256s(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every shard of a sharded folder, by file name."""
    folder = Path(folder)
    return {name: sha256_of(folder / name) for name in shard_names(folder / INDEX_NAME)}


def combined_sha256(shard_hashes: Mapping[str, str]) -> str:
    """The sha256 of `sha256sum`'s lines for the shards (`<sha256>  <name>`, sorted by name)."""
    lines = "".join(f"{shard_hashes[name]}  {name}\n" for name in sorted(shard_hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def weights_sha256(folder: str | os.PathLike) -> str:
    """The checksum the registry records for a folder's weights (see the module docstring)."""
    folder = Path(folder)
    if is_sharded(folder):
        return combined_sha256(shard_sha256s(folder))
    return sha256_of(folder / WEIGHTS_NAME)


def load_sharded(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded folder, each from the shard the index assigns it to.

    safetensors reads each shard (no unpickling); errors name the shard at fault. huggingface_hub's
    `load_torch_model` loads shards too, but into a model and without saying which file failed.
    """
    folder = Path(folder)
    index_path = folder / INDEX_NAME
    weight_map = json.loads(index_path.read_text())["weight_map"]
    state: dict[str, torch.Tensor] = {}
    for name in shard_names(index_path):
        path = folder / name
        if not path.is_file():
            raise CorruptWeightsError(path, f"missing; {INDEX_NAME} names it as a shard of these weights.")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CorruptWeightsError(path, f"not a readable safetensors file ({error}).") from error
        misplaced = sorted(key for key in tensors if weight_map.get(key) != name)
        if misplaced:
            raise CorruptWeightsError(path, f"holds {misplaced[:3]}, which {INDEX_NAME} puts elsewhere.")
        state.update(tensors)
    return state
