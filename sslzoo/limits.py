"""Allowed values of settings: a type and a range for each, checked before anything is built.

Recipe keys (`sslzoo.train.recipes.LIMITS`) and method hyperparameters (each method class's
`hparam_limits`) declare theirs as data, next to where they are defined:

    hparam_limits = {"temperature": positive(), "proj_hidden_dim": whole(1)}

`limit.check(key, value)` returns the value in its canonical type (a whole 2048.0 becomes 2048)
or raises `ConfigError` with one line that names the key, the value and what is allowed:

    hparams.temperature = 0 is not allowed: expected a number > 0.

Our own few lines rather than pydantic's validators: the one-line messages are the point (pydantic
reports "Input should be greater than 0" at a location tuple), and the library does not depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


class Refused(ValueError):
    """Raised inside `Limit.convert`; `check` turns it into the `ConfigError` that names the key."""

    def __init__(self, why: str = ""):
        super().__init__(why)
        self.why = why


class Limit:
    """What one setting may hold: `describe()` says it in words, `convert` checks and normalises."""

    def describe(self, plural: bool = False) -> str:
        """What is allowed, e.g. "a number > 0" (plural: "numbers > 0", for the items of a list)."""
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        raise NotImplementedError

    def check(self, key: str, value: Any) -> Any:
        """`value` in its canonical type, or `ConfigError`: "KEY = VALUE is not allowed: expected ..."."""
        try:
            return self.convert(value)
        except Refused as refused:
            why = f" ({refused.why})" if refused.why else ""
            raise ConfigError(
                f"{key} = {show(value)} is not allowed: expected {self.describe()}{why}."
            ) from None


@dataclass(frozen=True)
class Number(Limit):
    """A finite int or float (never a bool), optionally whole, between optional bounds."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self, plural: bool = False) -> str:
        kind = {(False, False): "a number", (False, True): "numbers"}.get((self.integer, plural))
        kind = kind or ("whole numbers" if plural else "a whole number")
        return f"{kind} {self.bounds()}".rstrip()

    def bounds(self) -> str:
        """The range alone: "> 0", "in [0, 1)", "from 8 to 4096", or "" when unbounded."""
        if self.low is not None and self.high is not None:
            if self.integer:
                return f"from {_num(self.low)} to {_num(self.high)}"
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return ""

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused()
        if not math.isfinite(value):
            raise Refused()
        if self.integer and not float(value).is_integer():
            raise Refused()
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise Refused()
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise Refused()
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class OneOf(Limit):
    """One of a few named choices."""

    choices: tuple[Any, ...]

    def describe(self, plural: bool = False) -> str:
        return ("values, each " if plural else "") + "one of " + ", ".join(show(c) for c in self.choices)

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or value not in self.choices:  # True == 1 must not pass for 1
            raise Refused()
        return value


@dataclass(frozen=True)
class Flag(Limit):
    """true or false."""

    def describe(self, plural: bool = False) -> str:
        return "true or false" + (" values" if plural else "")

    def convert(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Refused()
        return value


@dataclass(frozen=True)
class Text(Limit):
    """Any string; `optional` also allows None (TOML has no null: the default stands for it)."""

    optional: bool = False

    def describe(self, plural: bool = False) -> str:
        return "strings" if plural else "a string"

    def convert(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise Refused()
        return value


@dataclass(frozen=True)
class Table(Limit):
    """A table (dict) whose entries are checked by whoever owns them."""

    def describe(self, plural: bool = False) -> str:
        return "tables" if plural else "a table"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise Refused()
        return dict(value)


@dataclass(frozen=True)
class ListOf(Limit):
    """A list of items that each pass `item`: `length` of them if set, in increasing order if `ordered`."""

    item: Limit
    length: int | None = None
    ordered: bool = False
    meaning: str = ""  # e.g. "one per RGB channel"

    def describe(self, plural: bool = False) -> str:
        count = f"{self.length} " if self.length is not None else "a list of "
        text = ("lists of " if plural else "") + count + self.item.describe(plural=True)
        if self.ordered:
            text += ", the first at most the second" if self.length == 2 else ", in increasing order"
        return text + (f", {self.meaning}" if self.meaning else "")

    def convert(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise Refused()
        if self.length is not None and len(value) != self.length:
            raise Refused(f"{len(value)} value{'s' if len(value) != 1 else ''}")
        items = []
        for item in value:
            try:
                items.append(self.item.convert(item))
            except Refused:
                raise Refused(f"{show(item)} is not {self.item.describe()}") from None
        if self.ordered and any(a > b for a, b in zip(items, items[1:])):
            raise Refused("the first is larger" if len(items) == 2 else "not in increasing order")
        return items


@dataclass(frozen=True)
class NamedNumbers(Limit):
    """A list of numbers with a name and a range for each position (colour jitter's four strengths)."""

    parts: tuple[tuple[str, Number], ...]

    def describe(self, plural: bool = False) -> str:
        return f"{len(self.parts)} numbers: " + ", ".join(
            f"{name} {part.bounds()}" for name, part in self.parts
        )

    def convert(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise Refused()
        if len(value) != len(self.parts):
            raise Refused(f"{len(value)} value{'s' if len(value) != 1 else ''}")
        items = []
        for (name, part), item in zip(self.parts, value):
            try:
                items.append(part.convert(item))
            except Refused:
                raise Refused(f"{name} {show(item)} is not {part.describe()}") from None
        return items


# ------------------------------------------------------------------ the ways limits are declared
def whole(low: int | None = None, high: int | None = None) -> Number:
    """A whole number in [low, high] (either bound may be open-ended)."""
    return Number(low, high, integer=True)


def positive() -> Number:
    """A number > 0."""
    return Number(0, low_open=True)


def non_negative() -> Number:
    """A number >= 0."""
    return Number(0)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Number:
    """A number in [low, high]; `low_open` / `high_open` exclude a bound."""
    return Number(low, high, low_open, high_open)


def probability() -> Number:
    """A probability: a number in [0, 1]."""
    return Number(0, 1)


def one_of(choices: Sequence[Any]) -> OneOf:
    return OneOf(tuple(choices))


def show(value: Any) -> str:
    """A value as the user wrote it (TOML-like), short enough for one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{key} = {show(item)}" for key, item in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
