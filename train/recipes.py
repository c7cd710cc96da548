"""Training recipes kept as data: one TOML file per method in `recipes/`, resolved into a `TrainConfig`.

A recipe file holds the method's reference settings at the top level (CIFAR, where every
reference recipe was published), a `[hparams]` table of the method's constructor keywords, an
`[augment]` table (shared by every view, with `[augment.view1]`, `[augment.view2]` overrides)
and `[dataset.<name>]` tables that override any of these for one dataset. `inherits = "mocov2"`
starts from another recipe (a plug-in recipe from its host's).

Resolution order, later wins: recipe top level, its `[dataset.<name>]` table, the dataset's own
facts (input size, mean/std, stem), the named command-line options, then `--set key=value`.

Every key has a type and a range (`LIMITS`, `AUGMENT_LIMITS`, and each method class's
`hparam_limits`), checked when the configuration is resolved, before any data loads: a bad value
is refused with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sslzoo.backbones import BACKBONES, STEMS
from sslzoo.errors import ConfigError
from sslzoo.limits import (
    Flag,
    Limit,
    ListOf,
    NamedNumbers,
    Table,
    Text,
    between,
    non_negative,
    one_of,
    positive,
    probability,
    whole,
)
from sslzoo.methods import PLUGIN_NAMES, validate_hparams

from .catalog import DATASETS, available_recipes, recipes_dir
from .datasets import dataset_facts

#: Settings of one augmented view; every key of `[augment]` must be one of these.
AUGMENT_DEFAULTS: dict[str, Any] = {
    "crop_scale": [0.08, 1.0],  # RandomResizedCrop area range
    "crop_ratio": [0.75, 1.3333333333333333],  # RandomResizedCrop aspect-ratio range
    "hflip": 0.5,  # probability of a horizontal flip
    "jitter": [0.4, 0.4, 0.4, 0.1],  # colour jitter strength: brightness, contrast, saturation, hue
    "jitter_p": 0.8,  # probability of applying colour jitter
    "grayscale": 0.2,  # probability of converting to grayscale
    "blur": 0.0,  # probability of a Gaussian blur
    "blur_sigma": [0.1, 2.0],  # blur sigma range (pixels)
    "solarize": 0.0,  # probability of solarising (threshold 0.5)
}
#: What each augmentation setting may be (kornia's ranges).
AUGMENT_LIMITS: dict[str, Limit] = {
    "crop_scale": ListOf(between(0, 1, low_open=True), length=2, ordered=True, meaning="of the image's area"),
    "crop_ratio": ListOf(positive(), length=2, ordered=True, meaning="width / height"),
    "hflip": probability(),
    "jitter": NamedNumbers(
        (
            ("brightness", non_negative()),
            ("contrast", non_negative()),
            ("saturation", non_negative()),
            ("hue", between(0, 0.5)),
        )
    ),
    "jitter_p": probability(),
    "grayscale": probability(),
    "blur": probability(),
    "blur_sigma": ListOf(positive(), length=2, ordered=True, meaning="in pixels"),
    "solarize": probability(),
}


@dataclass
class TrainConfig:
    """Everything one training run needs; `config.json` of a run is `asdict(config)` plus derived values."""

    # What is trained, on what.
    method: str
    dataset: str
    plugins: list[str] = field(default_factory=list)
    recipe: str = ""
    description: str = ""
    sources: list[str] = field(default_factory=list)
    backbone: str = "resnet18"
    stem: str = "cifar"
    input_size: int = 32
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    interpolation: str = "bilinear"
    hparams: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    # Optimisation.
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_batch: int = 256
    lr_scaling: str = "linear"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    # Biases and norm parameters get no weight decay (and, under LARS, no trust ratio), as solo-learn's
    # LARS recipes (SimCLR, BYOL); off, every parameter decays, as the SGD references do.
    exclude_bias_norm_wd: bool = False
    lars_eta: float = 0.02
    lars_clip: bool = True
    warmup_epochs: float = 10.0
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0
    sync_batchnorm: bool = True
    # Monitoring.
    knn_every: int = 10
    knn_bank_size: int = 0
    knn_test_size: int = 0
    log_every: int = 20
    checkpoint_minutes: float = 5.0
    # Runtime.
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = True
    max_steps: int = 0
    data_dir: str | None = None
    download: bool = False
    workers: int = 8
    fake_size: int = 64
    fake_test_size: int = 32

    @property
    def effective_lr(self) -> float:
        """The peak learning rate at this run's (global) batch size."""
        ratio = self.batch_size / self.lr_batch
        scale = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[self.lr_scaling]
        return self.lr * scale

    def view_augment(self, view: int) -> dict[str, Any]:
        """Augmentation settings of view `view` (0-based): shared settings, then `view{n}` overrides."""
        shared = {k: v for k, v in self.augment.items() if not k.startswith("view")}
        return {**AUGMENT_DEFAULTS, **shared, **self.augment.get(f"view{view + 1}", {})}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["effective_lr"] = self.effective_lr
        return data


#: What each `TrainConfig` field may be. A field missing here is checked by its type alone (true or
#: false, a string); every number has its range here.
LIMITS: dict[str, Limit] = {
    "method": Text(),
    "dataset": one_of(DATASETS),
    "plugins": ListOf(one_of(PLUGIN_NAMES)),
    "recipe": Text(),
    "description": Text(),
    "sources": ListOf(Text()),
    "backbone": one_of(sorted(BACKBONES)),
    "stem": one_of(STEMS),
    "input_size": whole(8, 4096),  # pixels: enough for a ResNet, few enough to fit in memory
    "mean": ListOf(between(0, 1), length=3, meaning="one per RGB channel, for pixels in [0, 1]"),
    "std": ListOf(
        between(0, 1, low_open=True), length=3, meaning="one per RGB channel, for pixels in [0, 1]"
    ),
    "interpolation": one_of(("bilinear", "bicubic", "nearest", "nearest-exact")),
    "hparams": Table(),  # each method's `hparam_limits`
    "augment": Table(),  # `AUGMENT_LIMITS`
    "epochs": whole(1),
    "batch_size": whole(1),
    "optimizer": one_of(("sgd", "lars")),
    "lr": positive(),
    "lr_batch": whole(1),
    "lr_scaling": one_of(("linear", "sqrt", "none")),
    "momentum": between(0, 1, high_open=True),
    "weight_decay": non_negative(),
    "lars_eta": positive(),
    "warmup_epochs": non_negative(),
    "warmup_start_factor": probability(),
    "min_lr_factor": probability(),
    "knn_every": whole(0),  # 0: never
    "knn_bank_size": whole(0),  # 0: all
    "knn_test_size": whole(0),  # 0: all
    "log_every": whole(1),
    "checkpoint_minutes": non_negative(),  # 0: after every step
    "seed": whole(0, 2**32 - 1),
    "device": Text(),  # checked against the machine when training starts
    "precision": one_of(("auto", "fp32", "bf16", "fp16")),
    "max_steps": whole(0),  # 0: no limit
    "data_dir": Text(optional=True),
    "workers": whole(0),
    "fake_size": whole(1),
    "fake_test_size": whole(1),
}
#: Keys a recipe file may hold besides `TrainConfig` fields.
_RECIPE_ONLY = ("inherits", "dataset")
#: `TrainConfig` fields a recipe file may not set (they describe the run, not the method).
_NOT_IN_RECIPES = ("method", "dataset", "recipe", "device", "data_dir", "download", "max_steps", "compile")


def load_recipe_file(method: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw recipe of `method`, with `inherits` already merged in (the parent first)."""
    path = recipes_dir() / f"{method}.toml"
    if not path.is_file():
        raise ConfigError(
            f"No recipe for method {method!r}. Recipes exist for: {', '.join(available_recipes())}."
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error}).") from error
    parent = raw.pop("inherits", None)
    if parent is None:
        return raw
    if parent in _seen:
        raise ConfigError(f"Recipe {method!r} inherits from itself through {' -> '.join(_seen)}.")
    return deep_merge(load_recipe_file(parent, (*_seen, method)), raw)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, merging nested tables key by key (lists are replaced whole)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`"hparams.temperature=0.5"` -> (["hparams", "temperature"], 0.5); values are read as TOML.

    A value that is not valid TOML (`optimizer=lars`) is taken as a string.
    """
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: write KEY=VALUE, e.g. --set hparams.temperature=0.5.")
    try:
        parsed = tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.split("."), parsed


def resolve_config(
    method: str,
    dataset: str,
    plugins: typing.Sequence[str] = (),
    options: dict[str, Any] | None = None,
    sets: typing.Sequence[str] = (),
) -> TrainConfig:
    """The full configuration of a run: recipe, dataset section, dataset facts, options, `--set`s.

    `options` holds the named command-line options that were given (None values are ignored).
    """
    raw = load_recipe_file(method)
    sections = raw.pop("dataset", {})
    section_name = "imagenet100" if dataset == "imagefolder" else dataset
    resolved = deep_merge(raw, sections.get(section_name, {}))
    _check_keys(resolved, f"recipe {method!r}", recipe=True)
    resolved = deep_merge(resolved, dataset_facts(dataset))
    resolved.update(method=method, dataset=dataset, recipe=f"{method}/{dataset}")
    resolved["plugins"] = [
        *resolved.get("plugins", []),
        *[p for p in plugins if p not in resolved.get("plugins", [])],
    ]
    resolved = deep_merge(resolved, {k: v for k, v in (options or {}).items() if v is not None})
    for assignment in sets:
        path, value = parse_set(assignment)
        _assign(resolved, path, value)
    _check_keys(resolved, "the configuration", recipe=False)
    return _build(resolved)


def config_from_json(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a `TrainConfig` from `config.json` / a checkpoint (derived keys are dropped).

    A configuration written before `exclude_bias_norm_wd` existed trained with biases and norms
    excluded from weight decay (then the only behaviour), so it resumes that way.
    """
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in data.items() if k in known}
    values.setdefault("exclude_bias_norm_wd", True)
    return _build(values)


def settable_keys() -> list[str]:
    """Top-level keys `--set` accepts (plus `hparams.NAME`, `augment.KEY` and `augment.viewN.KEY`)."""
    return [f.name for f in fields(TrainConfig)]


def replace_checked(config: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """`config` with `changes` (top-level keys), checked like a resolved configuration."""
    return _build({**asdict(config), **changes})


def _assign(config: dict[str, Any], path: list[str], value: Any) -> None:
    target = config
    for part in path[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a table.")
        target = node
    target[path[-1]] = value


def _check_keys(config: dict[str, Any], where: str, recipe: bool) -> None:
    known = {f.name for f in fields(TrainConfig)}
    allowed = (known - set(_NOT_IN_RECIPES)) | set(_RECIPE_ONLY) if recipe else known
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; valid keys: {', '.join(sorted(allowed))}.")
    augment = config.get("augment", {})
    if not isinstance(augment, dict):
        raise ConfigError(f"`augment` in {where} must be a table of view settings.")
    for key, value in augment.items():
        if key.startswith("view") and isinstance(value, dict):
            bad = sorted(set(value) - set(AUGMENT_DEFAULTS))
            where_key = f"augment.{key}"
        else:
            bad = [] if key in AUGMENT_DEFAULTS else [key]
            where_key = "augment"
        if bad:
            raise ConfigError(
                f"Unknown augmentation setting(s) {bad} in {where_key} of {where}; "
                f"valid: {', '.join(AUGMENT_DEFAULTS)}."
            )


def _build(values: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` of `values`, each checked against its limit (`ConfigError` names the first bad one)."""
    hints = typing.get_type_hints(TrainConfig)
    checked = {name: _limit(name, hints[name]).check(name, value) for name, value in values.items()}
    if "augment" in checked:
        checked["augment"] = _check_augment(checked["augment"])
    try:
        config = TrainConfig(**checked)
    except TypeError as error:
        raise ConfigError(f"Incomplete configuration: {error}.") from error
    config.hparams = validate_hparams(config.method, config.plugins, config.hparams, key_prefix="hparams.")
    if config.nesterov and config.momentum == 0:
        raise ConfigError(
            "nesterov = true needs momentum > 0 (Nesterov momentum without momentum is plain SGD)."
        )
    return config


def _limit(name: str, hint: Any) -> Limit:
    if name in LIMITS:
        return LIMITS[name]
    return Flag() if hint is bool else Text(optional=True)  # numbers all have an entry in LIMITS


def _check_augment(augment: dict[str, Any]) -> dict[str, Any]:
    """Augmentation settings checked against `AUGMENT_LIMITS`, shared ones and per-view tables."""
    _check_keys({"augment": augment}, "the configuration", recipe=False)
    checked: dict[str, Any] = {}
    for key, value in augment.items():
        if isinstance(value, dict):  # a `viewN` table
            if not key.removeprefix("view").isdigit() or int(key.removeprefix("view")) < 1:
                raise ConfigError(f"augment.{key}: per-view tables are named view1, view2, ...")
            checked[key] = {k: AUGMENT_LIMITS[k].check(f"augment.{key}.{k}", v) for k, v in value.items()}
        else:
            checked[key] = AUGMENT_LIMITS[key].check(f"augment.{key}", value)
    return checked
