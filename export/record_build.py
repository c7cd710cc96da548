"""Recording a zoo build: every finished entry of a builder's RUNS folder into the registry, then
the model cards and the zoo tables regenerated from it.

`sslzoo-train --plan` leaves RUNS/results.json (each finished entry's evaluation, costs, commit
and commands) and RUNS/<name>/hub/ (the folder published to the Hub). Each entry's numbers,
training facts and the checksums of the published weights (every shard's) go into its
registry entry; cards and tables are then written from the registry, their one source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sslzoo import registry
from sslzoo.errors import ConfigError

from .cards import write_model_cards
from .results import record_run
from .zoo_table import write_zoo_tables


@dataclass
class BuildRecord:
    """What `record_build` did."""

    recorded: list[registry.ModelInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # stand-ins (fake data) not asked for
    cards: list[Path] = field(default_factory=list)
    index: Path | None = None


def record_build(
    runs: str | os.PathLike,
    *,
    weights: str = "hub",
    cards_dir: str | os.PathLike = "model_cards",
    readme: str | os.PathLike | None = None,
    allow_stand_ins: bool = False,
) -> BuildRecord:
    """Record every finished entry of `runs` in the registry sslzoo reads, then rewrite the cards
    (`cards_dir/<name>.md`, with training curves) and the zoo tables (and `readme`'s section).

    Entries trained on the fake dataset stand in for their registry dataset only in tests and
    demos: they are skipped unless `allow_stand_ins`.
    """
    from sslzoo.train.build_folder import BuildFolder

    folder = BuildFolder(runs)
    if not folder.is_build():
        raise ConfigError(f"{folder.results_path}: missing; is {folder.path} a folder sslzoo-train --plan built?")
    result = BuildRecord()
    for name, entry in folder.records().items():
        if entry.get("stand_in") and not allow_stand_ins:
            result.skipped.append(name)
            continue
        result.recorded.append(
            record_run(
                folder.path / entry["run_dir"],
                name=name,
                weights=weights,
                eval_report=entry.get("metrics"),
                model_dir=folder.path / entry["hub_dir"],
                allow_stand_in=allow_stand_ins,
            )
        )
    result.cards = write_model_cards(cards_dir, runs_dir=folder.path)
    result.index = write_zoo_tables(cards_dir, readme=readme)
    return result
