"""Measured results live in one place, the registry (`sslzoo/zoo.json`); this module writes them there.

Model cards (`model_cards/<name>.md`), the zoo tables and each Hub folder's `results.json` are
generated from the registry, never edited by hand, so a number cannot disagree with itself.
`record_run` copies a finished training run into its registry entry; `record_results` takes the
numbers directly.

Metrics are stored in one shape, accuracies in percent on the dataset's test split:

    {"knn": [{"k": 200, "t": 0.1, "top1": 85.12, "top5": 99.31},
             {"k": 20, "t": 0.07, "top1": 84.40, "top5": 99.02}],
     "linear": [{"protocol": "fast", "top1": 88.20, "top5": 99.58, "epochs": 100, "lr": 0.03, ...},
                {"protocol": "reference", "top1": 90.10, "top5": 99.70, "lr": 1.0, ...}],
     "split": "test", "dataset": "cifar10", "train_images": 50000, "test_images": 10000,
     "weights_sha256": "365a402f..."}

`weights_sha256` names the weights file the numbers were measured on (`sslzoo-eval --json` reports
it). The registry takes numbers only with it, and only when it is the checksum of the file it
publishes: a card's numbers are always those of the file users download.

Each linear entry names its probe protocol (`fast` or `reference`, `sslzoo.evaluation`); one
without a name says "protocol not recorded" and is never shown as either. `normalise_metrics`
reads that shape, `sslzoo-eval --json` reports (`linear` keyed by protocol), the metrics
`sslzoo-train` stores in a model's provenance (`knn` keyed `"k200_t0.1"`, `knn_bank_size`...),
earlier reports (one `linear` result, `linear_recipe` beside it: the fast probe, the only one
`sslzoo-eval` had, recognised by its standardised features) and flat forms (`knn_top1` + `knn_k` +
`knn_t`, `linear_top1` + `linear_protocol`), in percent or as fractions.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sslzoo import registry
from sslzoo.errors import ConfigError, UnknownModelError, WeightsNotAvailableError
from sslzoo.evaluation import FAST_PROBE, LINEAR_PROTOCOLS
from sslzoo.hub import CONFIG_NAME
from sslzoo.loading import sha256_of
from sslzoo.weight_files import is_sharded, shard_sha256s, weight_paths, weights_sha256

#: Training facts a card shows, as `sslzoo-train` stores them in a model's provenance.
TRAINING_KEYS = (
    "epochs",
    "planned_epochs",
    "steps",
    "batch_size",
    "device",
    "world_size",
    "precision",
    "train_seconds",
    "wall_time_s",
    "views_per_s",
    "seed",
    "command",
    "commit",
    "sslzoo_version",
    "torch_version",
)
#: Report keys that describe one invocation, not the weights: never stored.
_TRANSIENT_KEYS = ("model", "seconds")
#: Names other tools give to the canonical keys.
_ALIASES = {"knn_split": "split", "knn_bank_size": "train_images", "knn_test_size": "test_images"}
_KT_PATTERN = re.compile(r"k\s*=?\s*(\d+)\D+?t\s*=?\s*(\d*\.?\d+)")


def normalise_metrics(raw: Mapping[str, Any] | None, *, percent: bool | None = None) -> dict[str, Any]:
    """`raw` in the canonical shape (see the module docstring), accuracies in percent.

    `percent=None` reads accuracies as fractions when every one of them is <= 1 (an evaluation
    that printed 0.8512 meant 85.12 %); pass `percent=True/False` to say so explicitly.
    A kNN result without its k and t keeps `k=None, t=None`: cards then say the protocol was
    not recorded rather than guess it.
    """
    if not raw:
        return {}
    raw = {_ALIASES.get(key, key): value for key, value in raw.items() if key not in _TRANSIENT_KEYS}
    knn = _knn_entries(raw)
    linear = _linear_entries(raw)
    consumed = {"knn", "linear", "linear_recipe", "knn_top1", "knn_top5", "knn_k", "knn_t"}
    consumed |= {"linear_top1", "linear_top5", "linear_protocol"}
    rest = {
        key: value for key, value in raw.items() if key not in consumed and not key.startswith("knn_top1_")
    }
    accuracies = [
        entry[key] for entry in [*knn, *linear] for key in ("top1", "top5") if entry.get(key) is not None
    ]
    if percent is None:
        percent = not accuracies or any(value > 1.0 for value in accuracies)
    scale = 1.0 if percent else 100.0
    for entry in [*knn, *linear]:
        for key in ("top1", "top5"):
            if entry.get(key) is not None:
                entry[key] = round(float(entry[key]) * scale, 4)
    result: dict[str, Any] = {}
    if knn:
        result["knn"] = sorted(knn, key=lambda e: (e["k"] is None, -(e["k"] or 0), -(e["t"] or 0)))
    if linear:
        result["linear"] = sorted(linear, key=_protocol_rank)
    if result:
        result["split"] = rest.pop("split", "test")
    result.update(rest)
    return result


def model_name(config: Mapping[str, Any]) -> str | None:
    """The zoo-style name of a model from its `config.json` content (`Encoder.config`).

    The provenance's `name` if it has one, else `{method}-{backbone}-{dataset}` as the registry
    spells it (what `sslzoo-train` records), else None.
    """
    provenance = config.get("provenance") or {}
    if provenance.get("name"):
        return str(provenance["name"])
    parts = (provenance.get("method"), config.get("backbone"), provenance.get("dataset"))
    return "-".join(str(part) for part in parts) if all(parts) else None


def knn_result(metrics: Mapping[str, Any], k: int = 200, t: float = 0.1) -> dict[str, Any] | None:
    """The kNN entry measured with (k, t), if any."""
    for entry in metrics.get("knn", []):
        if entry.get("k") == k and entry.get("t") is not None and abs(float(entry["t"]) - t) < 1e-9:
            return entry
    return None


def knn_label(entry: Mapping[str, Any]) -> str:
    """The metric's name with its protocol, as cards and tables print it."""
    if entry.get("k") is None or entry.get("t") is None:
        return "kNN top-1 (protocol not recorded)"
    return f"kNN top-1 (k={entry['k']}, t={entry['t']:g})"


def linear_result(metrics: Mapping[str, Any], protocol: str) -> dict[str, Any] | None:
    """The linear-probe entry measured with `protocol` (`fast` or `reference`), if any."""
    entries = metrics.get("linear") or []
    if not isinstance(entries, list):  # a record in an earlier shape
        entries = normalise_metrics({"linear": entries}, percent=True).get("linear", [])
    return next((entry for entry in entries if entry.get("protocol") == protocol), None)


def knn_key_label(key: str) -> str:
    """`knn_label` of a result keyed as `sslzoo.evaluation.knn_key` writes it ("k200_t0.1")."""
    k, t = key.split("_")
    return knn_label({"k": int(k[1:]), "t": float(t[1:])})


def linear_label(entry: Mapping[str, Any]) -> str:
    """The metric's name with its protocol, as cards and tables print it."""
    if entry.get("protocol") not in LINEAR_PROTOCOLS:
        return "linear top-1 (protocol not recorded)"
    epochs = f", {plain_number(entry['epochs'])} epochs" if entry.get("epochs") else ""
    return f"linear top-1 ({entry['protocol']} probe{epochs})"


def plain_number(value: Any) -> Any:
    """200.0 -> 200: sslzoo-train records epochs as floats (a run may stop mid-epoch)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def record_results(
    name: str,
    *,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    weights: str | None = None,
    weights_file: str | os.PathLike | None = None,
    registry_file: str | os.PathLike | None = None,
    percent: bool | None = None,
    serving: Mapping[str, Any] | None = None,
    history: Mapping[str, str] | None = None,
) -> registry.ModelInfo:
    """Write measured results into `name`'s registry entry and return the updated entry.

    `metrics` (any form `normalise_metrics` reads; `percent` as there) are merged: a kNN result
    replaces the one with the same (k, t), a linear result the one of the same protocol. `training`
    keys are merged.
    `weights` sets where the published weights are (`bundled`, `hub`, `none`); `weights_file` is
    the exact file users will download or that ships in the package, or the model folder that holds
    it (one `model.safetensors` or shards): its sha256 goes into the entry (for shards, their
    combined sha256 and each one's in `shards`) and `sslzoo.load` checks it on every load.
    `serving` merges load-independent facts of serving variants (the int8 graph's calibration and
    gallery kNN) that the card states.

    Metrics must name the weights they were measured on (`weights_sha256`, as `sslzoo-eval --json`
    reports it), and that must be the published file: `weights_file`'s, else the entry's. Anything
    else is refused (`ConfigError`), as is a new `weights_file` that the entry's numbers were not
    measured on, so the registry never pairs one file with another's numbers.
    `weights="history"` takes `history={"commit": ..., "path": ...}`, where the model folder
    `weights_file` was committed (`sslzoo.export.stash`, which calls this): every file's sha256 is
    recorded beside them.
    """
    path = Path(registry_file) if registry_file is not None else registry.registry_path()
    data = json.loads(path.read_text())
    entries = {entry["name"]: entry for entry in data["models"]}
    if name not in entries:
        import difflib

        raise UnknownModelError(name, difflib.get_close_matches(name, list(entries), n=3, cutoff=0.6))
    entry = entries[name]
    published = _published_sha256(weights_file) if weights_file is not None else None
    if weights == "none":
        target = None
    else:
        target = published["sha256"] if published else entry.get("sha256")
    old_metrics = entry.get("metrics") or {}
    if metrics:
        new_metrics = normalise_metrics(metrics, percent=percent)
        _check_measured_on(entry, new_metrics.get("weights_sha256"), target, weights_file)
        same_file = old_metrics.get("weights_sha256") == new_metrics["weights_sha256"]
        entry["metrics"] = _merge_metrics(old_metrics, new_metrics) if same_file else new_metrics
    elif published and old_metrics and old_metrics.get("weights_sha256") != target:
        raise ConfigError(
            f"{name}: its recorded numbers were measured on weights with sha256 "
            f"{old_metrics.get('weights_sha256') or '(not recorded)'}, not on {weights_file} "
            f"(sha256 {target}). Record this file together with its own results (`sslzoo-eval` of its "
            "model folder with --json)."
        )
    if training:
        entry["training"] = {**(entry.get("training") or {}), **dict(training)}
    if serving:  # e.g. {"int8": results.json's "int8" of an `sslzoo-export --quantize int8` folder}
        entry["serving"] = {**(entry.get("serving") or {}), **dict(serving)}
    if weights is not None:
        if weights not in registry.WEIGHTS_STATES:
            raise ConfigError(f"weights must be one of {list(registry.WEIGHTS_STATES)}, not {weights!r}.")
        if weights == "history" and (history is None or weights_file is None or not Path(weights_file).is_dir()):
            raise ConfigError(
                f"{name}: weights='history' needs the commit and path of the model folder stored there, and that "
                "folder; `python -m sslzoo.export stash` records them."
            )
        entry["weights"] = weights
        if weights != "history":
            entry.pop("history", None)
        if weights == "none":
            entry["sha256"] = None
            entry.pop("shards", None)
    if weights_file is not None:
        if entry["weights"] == "none":
            raise ConfigError(
                f"{name}: say where the weights are published (weights='hub' or 'bundled') with their file."
            )
        entry["sha256"] = published["sha256"]
        if published["shards"]:
            entry["shards"] = published["shards"]
        else:
            entry.pop("shards", None)
    if history is not None and entry["weights"] == "history":
        folder = Path(weights_file)
        recorded = [folder / CONFIG_NAME, *weight_paths(folder)]
        entry["history"] = {
            "commit": history["commit"],
            "path": history["path"],
            "files": {file.name: sha256_of(file) for file in recorded},
        }
    problem = registry.check_entry(entry)
    if problem:
        raise ConfigError(f"{name}: {problem}")
    _write_json_atomically(path, data)
    registry.clear_cache()
    return registry.ModelInfo(**entry)


def _published_sha256(weights_file: str | os.PathLike) -> dict[str, Any]:
    """The checksum of a published file or model folder (`weights_sha256`), and each shard's if sharded."""
    weights_path = Path(weights_file)
    if weights_path.is_dir():
        shards = shard_sha256s(weights_path) if is_sharded(weights_path) else None
        return {"sha256": weights_sha256(weights_path), "shards": shards}
    return {"sha256": sha256_of(weights_path), "shards": None}


def _check_measured_on(
    entry: Mapping[str, Any], measured: str | None, published: str | None, weights_file: str | os.PathLike | None
) -> None:
    """Numbers go into the registry only beside the file they were measured on."""
    name = entry["name"]
    model = name
    if weights_file is not None:  # sslzoo-eval reads the model folder that holds the file
        model = str(weights_file if Path(weights_file).is_dir() else Path(weights_file).parent)
    remedy = (
        f"Measure the published file with `sslzoo-eval {model} --dataset {entry['dataset']} --json` "
        "(it reports the file's sha256) and record that report."
    )
    if measured is None:
        raise ConfigError(
            f"{name}: these results do not say which weights file they were measured on (no weights_sha256), "
            f"so they cannot stand beside the published one. {remedy}"
        )
    if published is not None and measured != published:
        where = f"the file recorded ({weights_file})" if weights_file is not None else "the published file"
        raise ConfigError(
            f"{name}: these results were measured on weights with sha256 {measured}, but {where} has sha256 "
            f"{published}. {remedy}"
        )


def record_run(
    run_dir: str | os.PathLike,
    *,
    name: str | None = None,
    weights: str = "hub",
    weights_file: str | os.PathLike | None = None,
    eval_report: Mapping[str, Any] | None = None,
    registry_file: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    allow_stand_in: bool = False,
) -> registry.ModelInfo:
    """Record a finished `sslzoo-train` run (`RUN/model/`, `RUN/config.json`) in the registry.

    Metrics come from `eval_report` (`sslzoo-eval FILE --json` of the published file) or else from
    the provenance stored with the model, and are recorded only if they name the published file
    (see `record_results`): the kNN monitor of a training run measured the weights in memory, so
    a run needs its `sslzoo-eval` report. Training facts (epochs, batch, GPU time...) come from the
    provenance and the run's resolved recipe. The sha256 is that of `weights_file` (default: the
    weights in the model folder): pass the file you publish if you convert it (e.g. to fp16). `model_dir`
    is the model folder to read and hash instead of `RUN/model/` (the zoo builder's Hub folder).
    `allow_stand_in` lets a run on the fake dataset stand in for the entry's own (tests, demos).
    """
    run_dir = Path(run_dir)
    model_dir = Path(model_dir) if model_dir is not None else run_dir / "model"
    config_path = model_dir / CONFIG_NAME
    if not config_path.is_file():
        raise WeightsNotAvailableError(f"{config_path}: missing; is {run_dir} a finished sslzoo-train run?")
    config = json.loads(config_path.read_text())
    provenance = config.get("provenance") or {}
    recipe_path = run_dir / CONFIG_NAME
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else {}
    name = name or model_name(config)
    if name is None:
        raise ConfigError(
            f"{config_path}: the provenance names no method and dataset; pass the registry name."
        )
    _check_run_matches(name, config, registry_file, allow_stand_in)
    training: dict[str, Any] = {}
    for source in (provenance, provenance.get("config") or {}, recipe):  # the stored facts, then the recipe
        for key in TRAINING_KEYS:
            if key not in training and isinstance(source.get(key), (int, float, str)):
                training[key] = source[key]
    return record_results(
        name,
        metrics=eval_report if eval_report is not None else provenance.get("metrics"),
        training=training,
        weights=weights,
        weights_file=weights_file if weights_file is not None else (model_dir if weights != "none" else None),
        registry_file=registry_file,
        percent=True,  # sslzoo-train and sslzoo-eval report percentages
    )


def _check_run_matches(
    name: str, config: Mapping[str, Any], registry_file: str | os.PathLike | None, allow_stand_in: bool = False
) -> None:
    """Refuse to file a run's numbers under a model it is not (another dataset, backbone or method)."""
    path = Path(registry_file) if registry_file is not None else registry.registry_path()
    entry = next((entry for entry in json.loads(path.read_text())["models"] if entry["name"] == name), None)
    if entry is None:
        return  # record_results names the closest models
    provenance = config.get("provenance") or {}
    run = {
        "method": provenance.get("method"),
        "backbone": config.get("backbone"),
        "dataset": provenance.get("dataset"),
    }
    if allow_stand_in and run["dataset"] == "fake":
        run["dataset"] = None  # random images standing in for the entry's dataset
    different = [
        f"{key} {value} (not {entry[key]})" for key, value in run.items() if value and value != entry[key]
    ]
    if different:
        raise ConfigError(f"This run cannot be recorded as {name}: its {', '.join(different)}.")


def _knn_entries(raw: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    knn = raw.get("knn")
    if isinstance(knn, list):
        entries = [dict(entry) for entry in knn]
    elif isinstance(knn, Mapping) and ("top1" in knn or "acc1" in knn):
        entries = [dict(knn)]
    elif isinstance(knn, Mapping):
        for key, value in knn.items():
            entry = dict(value) if isinstance(value, Mapping) else {"top1": value}
            match = _KT_PATTERN.search(str(key))
            if match and "k" not in entry:
                entry.update(k=int(match[1]), t=float(match[2]))
            entries.append(entry)
    if raw.get("knn_top1") is not None:
        entries.append(
            {
                "k": raw.get("knn_k"),
                "t": raw.get("knn_t"),
                "top1": raw["knn_top1"],
                "top5": raw.get("knn_top5"),
            }
        )
    for key, value in raw.items():
        match = _KT_PATTERN.search(key[len("knn_top1_") :]) if key.startswith("knn_top1_") else None
        if match:
            entries.append({"k": int(match[1]), "t": float(match[2]), "top1": value})
    for entry in entries:
        if "top1" not in entry and "acc1" in entry:
            entry["top1"] = entry.pop("acc1")
        entry["k"] = int(entry["k"]) if entry.get("k") is not None else None
        entry["t"] = float(entry["t"]) if entry.get("t") is not None else None
        if entry.get("top5") is None:
            entry.pop("top5", None)
    return [entry for entry in entries if entry.get("top1") is not None]


def _linear_entries(raw: dict[str, Any]) -> list[dict[str, Any]]:
    linear = raw.get("linear")
    if isinstance(linear, list):
        entries = [dict(entry) for entry in linear]
    elif isinstance(linear, Mapping) and not ({"top1", "acc1"} & set(linear)):
        # sslzoo-eval's report: {"fast": {...}, "reference": {...}}
        entries = [{"protocol": key, **value} for key, value in linear.items() if isinstance(value, Mapping)]
    else:
        entry = dict(linear) if isinstance(linear, Mapping) else {}
        if isinstance(raw.get("linear_recipe"), Mapping):  # earlier reports put the recipe beside it
            entry = {**raw["linear_recipe"], **entry}
        for key in ("top1", "top5"):
            if raw.get(f"linear_{key}") is not None:
                entry[key] = raw[f"linear_{key}"]
        if raw.get("linear_protocol") is not None:
            entry["protocol"] = raw["linear_protocol"]
        entries = [entry]
    named = []
    for entry in entries:
        if "top1" not in entry and "acc1" in entry:
            entry["top1"] = entry.pop("acc1")
        if entry.get("top5") is None:
            entry.pop("top5", None)
        protocol = entry.pop("protocol", None)
        if protocol is None and entry.get("features") == FAST_PROBE["features"]:
            protocol = "fast"  # the fast probe's own record, from before protocols were named
        named.append({"protocol": protocol, **entry})
    return [entry for entry in named if entry.get("top1") is not None]


def _protocol_rank(entry: Mapping[str, Any]) -> int:
    protocol = entry.get("protocol")
    return LINEAR_PROTOCOLS.index(protocol) if protocol in LINEAR_PROTOCOLS else len(LINEAR_PROTOCOLS)


def _merge_metrics(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = {**old, **new}
    if "knn" in new:
        fresh = {(entry["k"], entry["t"]) for entry in new["knn"]}
        kept = [entry for entry in old.get("knn", []) if (entry.get("k"), entry.get("t")) not in fresh]
        merged["knn"] = normalise_metrics({"knn": kept + new["knn"]}, percent=True)["knn"]
    if "linear" in new:
        fresh_protocols = {entry.get("protocol") for entry in new["linear"]}
        previous = normalise_metrics({"linear": old.get("linear") or []}, percent=True).get("linear", [])
        kept = [entry for entry in previous if entry.get("protocol") not in fresh_protocols]
        merged["linear"] = sorted(kept + new["linear"], key=_protocol_rank)
    return merged


def _write_json_atomically(path: Path, data: Any) -> None:
    """Same formatting as the file in the repository (indent 1), replaced in one step."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
