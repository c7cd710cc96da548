"""Training checkpoints: written atomically, read without unpickling code, refused when damaged.

A checkpoint holds plain tensors, numbers, strings, lists and dicts only, so it loads with
`torch.load(weights_only=True)` today and on future torch versions. It carries everything a
bit-identical resume needs: the method's `state_dict` (weights, buffers, and the plain numbers a
method keeps as its extra state, such as MoCo's current EMA rate), optimiser state, the step,
and the random states of torch (CPU and CUDA), Python and NumPy. The data order needs no state:
it is a function of (seed, epoch).

Every checkpoint carries the SHA-256 of its contents (`content_digest`: each tensor's dtype,
shape and bytes, each plain value, in order), so a file damaged after it was written (a flipped
bit on disk, a truncated copy) is refused instead of resumed into wrong weights. torch's reader
checks no checksum of its own.

Writing never leaves a half-written file under the checkpoint's name: the new file is written
beside it, flushed to disk, then renamed over it; with `previous`, the file it replaces is kept
there first (a hard link, so the checkpoint's own name never stops pointing at a whole file).

Version 3 added the checksum; version 2 moved the EMA rate into the method's own state; older
files (no checksum to verify) still load, and version-1 files are upgraded on load.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslzoo.errors import CorruptWeightsError

FORMAT = "sslzoo-train-checkpoint"
VERSION = 3
REQUIRED_KEYS = ("format", "version", "config", "method", "optimizer", "step", "epoch", "rng")
CHECKSUM_KEY = "checksum"
#: The way out a refusal offers when no earlier checkpoint is kept.
RESTART_HINT = "Delete it to start the run over, or restore a copy of it."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CorruptCheckpointError(CorruptWeightsError):
    """A checkpoint that cannot be read, is not an sslzoo training checkpoint, or fails its checksum."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(path, reason)
        self.reason = reason


def save_checkpoint(
    path: str | os.PathLike, state: dict[str, Any], previous: str | os.PathLike | None = None
) -> None:
    """Write `state` to `path` atomically: a reader sees the old file or the new one, never half of one.

    With `previous`, the checkpoint `path` held until now is kept at `previous` (replacing the one
    kept there before). A crash at any point leaves `path` whole, or absent only where the file
    system has no hard links (then `previous` holds the last checkpoint).
    """
    path = Path(path)
    data = {"format": FORMAT, "version": VERSION, **_on_cpu(state)}
    data[CHECKSUM_KEY] = {"sha256": content_digest(data)}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(data, tmp)
        _flush_to_disk(tmp)  # the data must be on disk before the rename makes it current
        if previous is not None and path.exists():
            _keep_as(path, Path(previous))
        os.replace(tmp, path)
        _flush_to_disk(path.parent)  # and the rename too
    finally:
        tmp.unlink(missing_ok=True)  # after an error: no partial file stays behind


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` and verify its checksum; `CorruptCheckpointError`
    says why one is refused."""
    path = Path(path)
    hint = RESTART_HINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, zip errors...
        raise CorruptCheckpointError(path, f"not a readable checkpoint ({_why(error)}). {hint}") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptCheckpointError(path, f"not an sslzoo training checkpoint. {hint}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CorruptCheckpointError(path, f"checkpoint is missing {missing}. {hint}")
    if not isinstance(state["version"], int) or state["version"] > VERSION:
        raise CorruptCheckpointError(
            path,
            f"written by a newer sslzoo (checkpoint version {state['version']}); upgrade sslzoo to resume it.",
        )
    recorded = state.pop(CHECKSUM_KEY, None)
    if state["version"] >= 3:
        expected = recorded.get("sha256") if isinstance(recorded, dict) else None
        if expected != content_digest(state):
            raise CorruptCheckpointError(
                path,
                "damaged: its contents do not match the checksum written with it (the file changed after "
                f"it was written: disk, copy or transfer). {hint}",
            )
    if state["version"] < 2:
        _upgrade_from_v1(state)
    return state


def content_digest(state: Any) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and bytes, every plain value,
    every key, in order. The same before `torch.save` and after `torch.load`."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str):
        encoded = value.encode()
        digest.update(f"S{len(encoded)}:".encode() + encoded)
    elif value is None or isinstance(value, bool):
        digest.update(f"N{value}".encode())
    elif isinstance(value, int):
        digest.update(f"I{value};".encode())
    elif isinstance(value, float):
        digest.update(f"F{value.hex()};".encode())
    else:
        raise TypeError(f"A checkpoint holds tensors and plain values only, not {type(value).__name__}.")


def _on_cpu(value: Any) -> Any:
    """`value` with every tensor on the CPU: copied from the GPU once, for the checksum and the file."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        items = ((key, _on_cpu(item)) for key, item in value.items())
        if not isinstance(value, OrderedDict):
            return dict(items)
        copy = OrderedDict(items)  # a state_dict, with its per-module versions
        if hasattr(value, "_metadata"):
            copy._metadata = value._metadata  # type: ignore[attr-defined]
        return copy
    if isinstance(value, list):
        return [_on_cpu(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_on_cpu(item) for item in value)
    return value


def _keep_as(path: Path, previous: Path) -> None:
    """Make `previous` the file `path` is now, leaving `path` in place."""
    link = previous.with_name(f".{previous.name}.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # no hard links here: move it (the new checkpoint takes its name right after)
        os.replace(path, previous)
        return
    try:
        os.replace(link, previous)
    finally:
        link.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        handle = os.open(path, flags)
    except OSError:  # a directory that cannot be opened (Windows): the rename is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _why(error: Exception) -> str:
    """torch's reason in one line, without its advice to load the file another way: sslzoo never
    unpickles code, so `weights_only=False` and `add_safe_globals` are not options."""
    text = _ANSI.sub("", str(error)).strip()
    if isinstance(error, pickle.UnpicklingError):
        match = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\.?$)", text, re.S)
        detail = match.group(1).strip() if match else "it holds more than tensors and plain values"
        detail = re.split(r"\s*Please use", detail)[0].strip().rstrip(".")
        return f"{detail}; sslzoo loads tensors and plain values only, never pickled code"
    first = text.splitlines()[0] if text else type(error).__name__
    return type(error).__name__ if "weights_only" in first or "safe_globals" in first else first


def _upgrade_from_v1(state: dict[str, Any]) -> None:
    """Version 1 kept plain numbers of every submodule in `method_scalars`, by module path; the only
    one that changes during training, a momentum method's `tau`, is now that module's extra state."""
    for path, values in state.pop("method_scalars", {}).items():
        if "tau" in values:
            state["method"][f"{path}._extra_state" if path else "_extra_state"] = {"tau": float(values["tau"])}
    state["version"] = 2


def rng_state() -> dict[str, Any]:
    """Random states of every generator a training step may draw from, as plain data."""
    np_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else [],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": python_state[0], "state": list(python_state[1]), "gauss": python_state[2]},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
