"""Errors a user can act on: each message says what went wrong and what to do next."""

from __future__ import annotations

from pathlib import Path


class SslzooError(Exception):
    """Base class of every error sslzoo raises on purpose."""


class UnknownModelError(SslzooError, LookupError):
    """A registry name that the zoo does not hold."""

    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"Unknown model {name!r}.{hint} `sslzoo.list_models()` lists every name; "
            "a local folder or 'hf-hub:org/repo' also works."
        )

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return self.args[0]


class WeightsNotAvailableError(SslzooError, FileNotFoundError):
    """A known model whose weights exist nowhere sslzoo may look."""

    def __str__(self) -> str:
        return self.args[0]


class CorruptWeightsError(SslzooError, ValueError):
    """A weights or config file that cannot be read or does not match its checksum."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {reason}")


class ConfigError(SslzooError, ValueError):
    """A value given by the user that sslzoo cannot use (bad backbone, stem, option...)."""


class MissingExtraError(SslzooError, ImportError):
    """A command needs a package that only one of sslzoo's extras installs (see `sslzoo.extras`)."""

    def __str__(self) -> str:
        return self.args[0]
