"""Training checkpoints: written atomically, read without unpickling code, refused when corrupt.

A checkpoint holds plain tensors, numbers, strings, lists and dicts only, so it loads with
`torch.load(weights_only=True)` today and on future torch versions. It carries everything a
bit-identical resume needs: the method's `state_dict` (weights, buffers, and the plain numbers a
method keeps as its extra state, such as MoCo's current EMA rate), optimiser state, the step,
and the random states of torch (CPU and CUDA), Python and NumPy. The data order needs no state:
it is a function of (seed, epoch).

Version 2 moved the EMA rate into the method's own state; version-1 files are upgraded on load.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslzoo.errors import CorruptWeightsError

FORMAT = "sslzoo-train-checkpoint"
VERSION = 2
REQUIRED_KEYS = ("format", "version", "config", "method", "optimizer", "step", "epoch", "rng")


class CorruptCheckpointError(CorruptWeightsError):
    """A checkpoint that cannot be read or is not an sslzoo training checkpoint."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    with open(tmp, "rb") as handle:  # the data must be on disk before the rename makes it current
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; `CorruptCheckpointError` says why one is refused."""
    path = Path(path)
    hint = "Delete it to start the run over, or restore a copy of it."
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, zip errors...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptCheckpointError(path, f"not a readable checkpoint ({first}). {hint}") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptCheckpointError(path, f"not an sslzoo training checkpoint. {hint}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CorruptCheckpointError(path, f"checkpoint is missing {missing}. {hint}")
    if state["version"] > VERSION:
        raise CorruptCheckpointError(
            path,
            f"written by a newer sslzoo (checkpoint version {state['version']}); upgrade sslzoo to resume it.",
        )
    if state["version"] < 2:
        _upgrade_from_v1(state)
    return state


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
