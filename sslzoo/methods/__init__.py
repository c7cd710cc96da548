"""The ten methods, their plug-ins, and `build_method`, the one way to make any of them.

`build_method(name, encoder, plugins=(), **hparams)`: `name` is one of `METHOD_NAMES`. The plug-in
registry names build their default host: `mixco` = MoCo-v2 + MixCo, `batchfusion` = SimCLR + batch
fusion, `iecl` = SimCLR + IE-CL. Any host that implements `host_forward` takes plug-ins:
`build_method("byol", encoder, plugins=["mixco"])`. Hyperparameters are the constructor keywords of
the host and of each plug-in (`method_hparams` lists them with their defaults), so a recipe can set
them by name.

Plug-ins stack in one fixed order, whatever order they are named in (`PLUGIN_ORDER`, innermost
first): MixCo wraps the host (its mix term is part of the objective), IE-CL wraps that (it replaces
the second view that the host and MixCo's mixing then see), batch fusion wraps everything (it
transforms the views that every other part sees: the host, MixCo's mixing, IE-CL's transform and
entropy terms). So `--plugin batchfusion --plugin mixco` and `--plugin mixco --plugin batchfusion`
build the same module. Combinations that cannot work are refused here, with the reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..encoder import Encoder
from ..errors import ConfigError
from ..limits import Flag, Limit, Number, Text, whole
from .base import HostOutput, Method
from .batchfusion import BatchFusion
from .byol import BYOL
from .iecl import IECL
from .minc import MINC
from .mixco import MixCo
from .mocov2 import MoCoV2
from .plugin import Plugin
from .selfcon import SelfCon
from .simclr import SimCLR
from .spectral import Spectral
from .supcon import SupCon

#: Every registry method name (the zoo's `method` field).
METHOD_NAMES: tuple[str, ...] = (
    "simclr",
    "mocov2",
    "byol",
    "supcon",
    "spectral",
    "selfcon",
    "mixco",
    "batchfusion",
    "iecl",
    "minc",
)
#: Plug-ins that wrap a host method.
PLUGIN_NAMES: tuple[str, ...] = ("mixco", "batchfusion", "iecl")

#: Registry names that are a host plus default plug-ins.
DEFAULT_COMPOSITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mixco": ("mocov2", ("mixco",)),
    "batchfusion": ("simclr", ("batchfusion",)),
    "iecl": ("simclr", ("iecl",)),
}


#: The methods that stand alone (the other registry names are one of these plus plug-ins).
HOSTS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "mocov2": MoCoV2,
    "byol": BYOL,
    "supcon": SupCon,
    "spectral": Spectral,
    "selfcon": SelfCon,
    "minc": MINC,
}
#: The plug-in wrappers by name.
PLUGINS: dict[str, type[Plugin]] = {"mixco": MixCo, "batchfusion": BatchFusion, "iecl": IECL}
#: The order plug-ins wrap the host in, innermost first (see the module docstring).
PLUGIN_ORDER: tuple[str, ...] = tuple(sorted(PLUGINS, key=lambda name: PLUGINS[name].wrap_rank))


@dataclass(frozen=True)
class MethodSpec:
    """What `build_method` built: the registry name, its host, the plug-ins in wrapping order, all hparams."""

    name: str
    host: str
    plugins: tuple[str, ...]
    hparams: dict[str, Any] = field(default_factory=dict)


def resolve(name: str, plugins: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
    """(host method, plug-ins innermost first) for a registry name plus extra plug-ins.

    The plug-ins come back in `PLUGIN_ORDER`, each once, whatever order they were given in.
    """
    if isinstance(plugins, str):
        plugins = (plugins,)
    if name not in METHOD_NAMES:
        raise ConfigError(f"Unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}.")
    unknown = [p for p in plugins if p not in PLUGIN_NAMES]
    if unknown:
        raise ConfigError(f"Unknown plug-in(s) {unknown}; choose from {', '.join(PLUGIN_NAMES)}.")
    host, default_plugins = DEFAULT_COMPOSITIONS.get(name, (name, ()))
    wanted = {*default_plugins, *plugins}
    return host, tuple(plugin for plugin in PLUGIN_ORDER if plugin in wanted)


def _keyword_defaults(cls: type) -> dict[str, Any]:
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # skip self, encoder/host
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}


def method_hparams(name: str, plugins: Sequence[str] = ()) -> dict[str, Any]:
    """Every hyperparameter `build_method(name, plugins=...)` accepts, with its default value."""
    host, chain = resolve(name, plugins)
    hparams = _keyword_defaults(_class_for(host, HOSTS))
    for plugin in chain:
        hparams.update(_keyword_defaults(_class_for(plugin, PLUGINS)))
    return hparams


def validate_hparams(
    name: str, plugins: Sequence[str], hparams: Mapping[str, Any], key_prefix: str = ""
) -> dict[str, Any]:
    """`hparams` checked against each class's `hparam_limits`, in their canonical types.

    Raises `ConfigError` for an unknown keyword or a value out of its range, naming the key
    (after `key_prefix`, e.g. "hparams."), the value and what is allowed.
    """
    host, chain = resolve(name, plugins)
    limits: dict[str, Limit] = {}
    for cls in (_class_for(host, HOSTS), *(_class_for(p, PLUGINS) for p in chain)):
        for key, default in _keyword_defaults(cls).items():
            limits[key] = cls.hparam_limits.get(key) or _limit_of_default(default)
    unknown = sorted(set(hparams) - set(limits))
    if unknown:
        raise ConfigError(
            f"Unknown hyperparameter(s) {unknown} for method {name!r}"
            f"{' with plug-ins ' + str(list(chain)) if chain else ''}; valid: {', '.join(sorted(limits))}."
        )
    return {key: limits[key].check(key_prefix + key, value) for key, value in hparams.items()}


def _limit_of_default(default: Any) -> Limit:
    """The type of a keyword's default, for a keyword whose class declares no limit for it."""
    if isinstance(default, bool):
        return Flag()
    if isinstance(default, int):
        return whole()
    if isinstance(default, float):
        return Number()
    return Text(optional=default is None)


def build_method(name: str, encoder: Encoder, plugins: Sequence[str] = (), **hparams: Any) -> Method:
    """The `Method` for registry name `name` on `encoder`, wrapped by `plugins`, with `hparams` set.

    Raises `ConfigError` for an unknown method, plug-in or hyperparameter, naming the valid ones.
    """
    host, chain = resolve(name, plugins)
    host_cls = _class_for(host, HOSTS)
    plugin_classes = [_class_for(p, PLUGINS) for p in chain]
    _check_composition(host, host_cls, chain)
    accepted = method_hparams(name, plugins)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Unknown hyperparameter(s) {unknown} for method {name!r}"
            f"{' with plug-ins ' + str(list(chain)) if chain else ''}; valid: {', '.join(sorted(accepted))}."
        )
    hparams = validate_hparams(name, plugins, hparams)
    host_keys = _keyword_defaults(host_cls)
    method = host_cls(encoder, **{k: v for k, v in hparams.items() if k in host_keys})
    for plugin_cls in plugin_classes:
        plugin_keys = _keyword_defaults(plugin_cls)
        method = plugin_cls(method, **{k: v for k, v in hparams.items() if k in plugin_keys})
    method.spec = MethodSpec(name, host, chain, {**accepted, **hparams})
    return method


def can_host_plugins(host_cls: type[Method]) -> bool:
    """Whether a method exposes the per-view embeddings and targets (`host_forward`, `embed`)
    that MixCo and IE-CL build on."""
    return host_cls.host_forward is not Method.host_forward and host_cls.embed is not Method.embed


def _check_composition(host: str, host_cls: type[Method], chain: Sequence[str]) -> None:
    """Refuse, before anything is built, a plug-in that cannot work on `host`, saying why."""
    for plugin in chain:
        plugin_cls = PLUGINS[plugin]
        if plugin_cls.needs_host_interface and not can_host_plugins(host_cls):
            workable = [p for p in PLUGIN_NAMES if not PLUGINS[p].needs_host_interface]
            raise ConfigError(
                f"{plugin_cls.title} cannot wrap {host}: it {plugin_cls.host_requirement}, and {host} "
                f"{host_cls.why_no_plugins}. With {host}, use {' or '.join(workable)} instead."
            )


def _class_for(name: str, classes: Mapping[str, type[Method]]) -> type[Method]:
    if name not in classes:
        raise ConfigError(f"{name!r} is not one of {', '.join(classes)}.")
    return classes[name]


__all__ = [
    "BYOL",
    "DEFAULT_COMPOSITIONS",
    "HOSTS",
    "IECL",
    "METHOD_NAMES",
    "MINC",
    "PLUGINS",
    "PLUGIN_NAMES",
    "PLUGIN_ORDER",
    "BatchFusion",
    "HostOutput",
    "Method",
    "MethodSpec",
    "MixCo",
    "MoCoV2",
    "Plugin",
    "SelfCon",
    "SimCLR",
    "Spectral",
    "SupCon",
    "build_method",
    "can_host_plugins",
    "method_hparams",
    "resolve",
    "validate_hparams",
]
