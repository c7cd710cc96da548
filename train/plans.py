"""Plans: the zoo entries to build, in priority order, kept as data (`train/plans/<name>.toml`).

    [eval]                        # how every finished entry is evaluated (optional)
    linear = ["fast", "reference"]  # linear-probe protocols, after kNN at both protocols
    linear_epochs = 100           # replaces every protocol's own length (both are 100 by default)
    [export]                      # the Hub folder each finished entry becomes (optional)
    to = "all"                    # safetensors, onnx or all (sslzoo-export --to)
    max_shard_size = "15MB"       # weights as safetensors shards of at most this size
    [set]                         # --set keys for every entry (optional)
    knn_every = 20

    [[entry]]
    name = "mixco-resnet18-cifar100"  # a registry name (sslzoo/zoo.json)
    method = "mixco"                  # the registry's method: its recipe sets every default
    plugins = []                      # plug-ins beyond the method's own
    dataset = "cifar100"
    epochs = 200
    [entry.set]                       # --set keys for this entry, over the plan's [set]
    batch_size = 512
    [entry.eval]                      # over the plan's [eval], for this entry
    linear = ["fast"]

An entry must train what its registry name says (method, host and plug-ins, backbone, dataset),
so its results can be recorded under that name; `dataset = "fake"` is allowed as a stand-in for
smoke tests, and such entries are recorded only when asked (`record --allow-stand-ins`).
"""

from __future__ import annotations

import json
import math
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sslzoo import registry
from sslzoo.errors import ConfigError, UnknownModelError
from sslzoo.evaluation import LINEAR_PROTOCOLS

from .datasets import DATASETS
from .recipes import TrainConfig, resolve_config

EXPORT_FORMATS = ("safetensors", "onnx", "all")
#: Dataset used in place of the registry's for smoke tests (random images).
STAND_IN_DATASET = "fake"

_ENTRY_KEYS = {"name", "method", "plugins", "dataset", "epochs", "set", "eval"}
_PLAN_KEYS = {"description", "eval", "export", "set", "entry"}
_EVAL_DEFAULTS: dict[str, Any] = {
    "linear": ["fast"],  # protocols of sslzoo.evaluation.LINEAR_PROTOCOLS; [] skips the linear probe
    "linear_epochs": None,  # None: each protocol's own (sslzoo-eval --linear-epochs)
    "train_size": 0,  # 0 = the whole train split (the kNN bank and the probe's training set)
    "test_size": 0,  # 0 = the whole test split
    "batch_size": 512,  # images per forward pass while extracting features
}
_EXPORT_DEFAULTS: dict[str, Any] = {"to": "all", "max_shard_size": None}


@dataclass(frozen=True)
class EvalSettings:
    """How a finished entry is evaluated: kNN at both protocols, then each linear probe named
    (`sslzoo-eval --linear-protocol`), in `LINEAR_PROTOCOLS` order."""

    linear: tuple[str, ...] = ("fast",)
    linear_epochs: int | None = None  # None: each protocol's own
    train_size: int = 0
    test_size: int = 0
    batch_size: int = 512


@dataclass(frozen=True)
class ExportSettings:
    """The Hub folder of a finished entry: `sslzoo-export --to TO [--max-shard-size SIZE]`."""

    to: str = "all"
    max_shard_size: str | int | None = None


@dataclass(frozen=True)
class PlanEntry:
    """One zoo entry of a plan: what to train, and how to evaluate and export it."""

    name: str
    method: str
    dataset: str
    epochs: int
    plugins: tuple[str, ...] = ()
    sets: dict[str, Any] = field(default_factory=dict)  # flat: "hparams.temperature" -> 0.5
    eval: EvalSettings = EvalSettings()
    export: ExportSettings = ExportSettings()

    @property
    def stand_in(self) -> bool:
        """Trained on the fake dataset in place of the registry's: a smoke test, not a zoo model."""
        return self.dataset == STAND_IN_DATASET

    def set_assignments(self) -> list[str]:
        """The entry's settings as `--set KEY=VALUE` arguments (values in TOML)."""
        return [f"{key}={toml_value(value)}" for key, value in self.sets.items()]

    def config(self, runtime: Mapping[str, Any] | None = None) -> TrainConfig:
        """The entry's full training configuration; `runtime` holds options such as device, data_dir."""
        options = {"epochs": self.epochs, **{k: v for k, v in (runtime or {}).items() if v is not None}}
        return resolve_config(self.method, self.dataset, self.plugins, options, self.set_assignments())

    def command(self, out: str | Path, runtime: Mapping[str, Any] | None = None) -> str:
        """The `sslzoo-train` command that trains exactly this entry on its own, into `out`."""
        words = ["sslzoo-train", "--method", self.method]
        for plugin in self.plugins:
            words += ["--plugin", plugin]
        words += ["--dataset", self.dataset, "--epochs", str(self.epochs)]
        flags = {"device": "--device", "precision": "--precision", "data_dir": "--data-dir"}
        for key, flag in flags.items():
            if (runtime or {}).get(key) is not None:
                words += [flag, str(runtime[key])]  # type: ignore[index]
        if (runtime or {}).get("download"):
            words.append("--download")
        if (runtime or {}).get("compile") is not None:
            words.append("--compile" if runtime["compile"] else "--no-compile")  # type: ignore[index]
        for assignment in self.set_assignments():
            words += ["--set", assignment]
        words += ["--out", str(out)]
        return " ".join(shlex.quote(word) for word in words)


@dataclass(frozen=True)
class Plan:
    """A plan file, read and checked: its entries in priority order."""

    path: Path
    entries: tuple[PlanEntry, ...]
    description: str = ""

    def entry(self, name: str) -> PlanEntry:
        return next(entry for entry in self.entries if entry.name == name)


def plans_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("plans")))


def available_plans() -> list[str]:
    """Names of the plans shipped with sslzoo (`--plan zoo` is `train/plans/zoo.toml`)."""
    return sorted(path.stem for path in plans_dir().glob("*.toml"))


def plan_path(plan: str | Path) -> Path:
    """A plan file's path: a path as given, or the name of a shipped plan."""
    path = Path(plan)
    if path.is_file():
        return path
    shipped = plans_dir() / f"{plan}.toml"
    if shipped.is_file() and path.suffix != ".toml":
        return shipped
    raise ConfigError(
        f"No plan file {plan}. Give a path, or one of the shipped plans: {', '.join(available_plans())}."
    )


def load_plan(plan: str | Path) -> Plan:
    """Read and check a plan: every entry's keys, its registry name, and its configuration resolves."""
    path = plan_path(plan)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error}).") from error
    unknown = sorted(set(raw) - _PLAN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a plan holds {sorted(_PLAN_KEYS)}.")
    tables = raw.get("entry")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(
            f"{path}: no entries; add [[entry]] tables (name, method, plugins, dataset, epochs)."
        )
    common_eval = _table(raw, "eval", path)
    common_export = _table(raw, "export", path)
    common_sets = flatten(_table(raw, "set", path))
    entries = []
    for number, table in enumerate(tables, start=1):
        where = f"{path}, entry {number}" + (
            f" ({table['name']})" if isinstance(table, dict) and "name" in table else ""
        )
        entries.append(_entry(table, where, common_eval, common_export, common_sets))
    names = [entry.name for entry in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{path}: {repeated} appear more than once; each zoo entry is built once.")
    return Plan(path, tuple(entries), str(raw.get("description", "")))


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"hparams": {"temperature": 0.5}}` -> `{"hparams.temperature": 0.5}` (TOML dotted keys, as --set)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def toml_value(value: Any) -> str:
    """A plain value as TOML writes it (what `--set` reads back): strings quoted, lists bracketed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # TOML basic strings escape as JSON does
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise ConfigError(f"{value!r} cannot be a --set value (use numbers, strings, booleans or lists).")


def _table(raw: Mapping[str, Any], key: str, where: Any) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: `{key}` must be a table.")
    return value


def _entry(
    table: Any,
    where: str,
    common_eval: dict[str, Any],
    common_export: dict[str, Any],
    common_sets: dict[str, Any],
) -> PlanEntry:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: an [[entry]] must be a table.")
    unknown = sorted(set(table) - _ENTRY_KEYS)
    missing = sorted({"name", "method", "dataset", "epochs"} - set(table))
    if unknown or missing:
        problems = ([f"unknown key(s) {unknown}"] if unknown else []) + (
            [f"missing {missing}"] if missing else []
        )
        raise ConfigError(f"{where}: {'; '.join(problems)}; an entry holds {sorted(_ENTRY_KEYS)}.")
    plugins = table.get("plugins", [])
    epochs = table["epochs"]
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f'{where}: `plugins` must be a list of plug-in names, e.g. ["mixco"].')
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{where}: `epochs` must be a whole number of at least 1, got {epochs!r}.")
    if table["dataset"] not in DATASETS:
        raise ConfigError(
            f"{where}: unknown dataset {table['dataset']!r}; choose one of {', '.join(DATASETS)}."
        )
    sets = {**common_sets, **flatten(_table(table, "set", where))}
    if "epochs" in sets:
        raise ConfigError(f"{where}: set `epochs` in the entry itself, not in [set].")
    entry = PlanEntry(
        name=str(table["name"]),
        method=str(table["method"]),
        dataset=str(table["dataset"]),
        epochs=int(epochs),
        plugins=tuple(plugins),
        sets=sets,
        eval=_eval_settings({**common_eval, **_table(table, "eval", where)}, where),
        export=_export_settings(common_export, where),
    )
    _check_against_registry(entry, where)
    return entry


def _eval_settings(values: dict[str, Any], where: str) -> EvalSettings:
    unknown = sorted(set(values) - set(_EVAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"{where}: unknown [eval] key(s) {unknown}; valid: {', '.join(_EVAL_DEFAULTS)}.")
    merged = {**_EVAL_DEFAULTS, **values}
    linear = merged["linear"]
    if isinstance(linear, str):
        linear = [linear]
    bad = [p for p in linear if p not in LINEAR_PROTOCOLS] if isinstance(linear, list) else [linear]
    if bad:
        raise ConfigError(
            f"{where}: unknown linear-probe protocol(s) {bad}; this sslzoo has {', '.join(LINEAR_PROTOCOLS)} "
            f"(an empty list skips the linear probe)."
        )
    for key in ("linear_epochs", "train_size", "test_size", "batch_size"):
        value = merged[key]
        if key == "linear_epochs" and value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (1 if key in ("linear_epochs", "batch_size") else 0)
        ):
            raise ConfigError(f"{where}: [eval] {key} must be a whole number, got {value!r}.")
    return EvalSettings(
        tuple(protocol for protocol in LINEAR_PROTOCOLS if protocol in linear),
        merged["linear_epochs"],
        merged["train_size"],
        merged["test_size"],
        merged["batch_size"],
    )


def _export_settings(values: dict[str, Any], where: str) -> ExportSettings:
    unknown = sorted(set(values) - set(_EXPORT_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown [export] key(s) {unknown}; valid: {', '.join(_EXPORT_DEFAULTS)}."
        )
    merged = {**_EXPORT_DEFAULTS, **values}
    if merged["to"] not in EXPORT_FORMATS:
        raise ConfigError(f"{where}: [export] to={merged['to']!r} is not one of {', '.join(EXPORT_FORMATS)}.")
    size = merged["max_shard_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, str))):
        raise ConfigError(f'{where}: [export] max_shard_size must be a size such as "15MB", or bytes.')
    return ExportSettings(merged["to"], size)


def _check_against_registry(entry: PlanEntry, where: str) -> None:
    """The entry trains what its registry name says, and its configuration resolves."""
    from sslzoo.methods import method_hparams, resolve

    try:
        info = registry.model_info(entry.name)
    except UnknownModelError as error:
        raise ConfigError(f"{where}: {error}") from None
    try:
        host, chain = resolve(entry.method, entry.plugins)
        config = entry.config()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    accepted = method_hparams(entry.method, entry.plugins)
    unknown = sorted(set(config.hparams) - set(accepted))
    if unknown:  # found now rather than when the entry's turn to train comes
        raise ConfigError(f"{where}: unknown hyperparameter(s) {unknown}; valid: {', '.join(sorted(accepted))}.")
    differences = [
        f"{label} {ours!r} (the registry's is {theirs!r})"
        for label, ours, theirs in (
            ("method", entry.method, info.method),
            ("host", host, info.host),
            ("plug-ins", list(chain), list(info.plugins)),
            ("backbone", config.backbone, info.backbone),
            ("dataset", entry.dataset, info.dataset),
        )
        if ours != theirs and not (label == "dataset" and entry.stand_in)
    ]
    if differences:
        raise ConfigError(f"{where}: {entry.name} is not what this entry trains: {', '.join(differences)}.")
