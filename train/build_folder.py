"""The zoo builder's folder `RUNS/`: one run per entry, its Hub folder, and the record of what finished.

    RUNS/results.json        every finished entry: its results, costs, commit and commands
    RUNS/<name>/             the entry's training run (see `run_folder.py`)
    RUNS/<name>/hub/         the entry's complete Hub repository (sslzoo-export --to all)

`results.json` is the one place that says an entry is finished. It is rewritten whole and
atomically after each one, so a build killed at any moment keeps every entry it finished; the
entry it was working on continues from its checkpoint (or its finished model) next time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .run_folder import RunFolder

RESULTS_NAME = "results.json"
HUB_DIR = "hub"
FORMAT = "sslzoo-zoo-build"
VERSION = 1


class BuildFolder:
    """Paths of `RUNS/` and its results file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_NAME

    def run(self, name: str) -> RunFolder:
        return RunFolder(self.path / name)

    def hub(self, name: str) -> Path:
        return self.path / name / HUB_DIR

    def is_build(self) -> bool:
        """True for a folder the builder wrote (as opposed to a single training run)."""
        try:
            return json.loads(self.results_path.read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            return False

    def records(self) -> dict[str, dict[str, Any]]:
        """Every finished entry's record, by name, in the order they finished."""
        if not self.results_path.is_file():
            return {}
        try:
            data = json.loads(self.results_path.read_text())
        except ValueError as error:
            raise ValueError(
                f"{self.results_path}: not valid JSON ({error}); restore it from a copy."
            ) from error
        if data.get("format") != FORMAT:
            raise ValueError(f"{self.results_path}: not a zoo builder's results file.")
        return dict(data.get("entries", {}))

    def is_finished(self, name: str) -> bool:
        return name in self.records()

    def add(self, record: dict[str, Any]) -> None:
        """Add (or replace) one finished entry's record; the file is replaced in one step."""
        self.path.mkdir(parents=True, exist_ok=True)
        entries = self.records()
        entries[record["name"]] = record
        tmp = self.results_path.with_name(f".{RESULTS_NAME}.tmp")
        tmp.write_text(
            json.dumps({"format": FORMAT, "version": VERSION, "entries": entries}, indent=2) + "\n"
        )
        with open(tmp, "rb") as handle:  # on disk before the rename makes it the record
            os.fsync(handle.fileno())
        os.replace(tmp, self.results_path)

    def remove_partial_exports(self, name: str) -> None:
        """Staging folders an export killed midway left beside RUNS/<name>/hub/ (never the folder itself)."""
        folder = self.path / name
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.is_dir() and path.name.startswith((f".{HUB_DIR}.partial-", f".{HUB_DIR}.replaced-")):
                shutil.rmtree(path, ignore_errors=True)
