"""The zoo builder: any window of compute time turned into finished, measured, publishable entries.

`build(plan, runs, budget)` works through the plan in order. For the first unfinished entry it
resumes the run from its checkpoint (or starts it), trains, and once training ends writes the
weights it will publish (`RUNS/<name>/hub/`), evaluates that very file (kNN at both protocols and
the plan's linear probes, reported with the file's sha256), completes the folder as a Hub
repository (ONNX, card, results) and records the entry in `RUNS/results.json`; then the next one.
The linear probes are the plan's protocols (`fast`, `reference`: `sslzoo.evaluation.LINEAR_PROTOCOLS`),
each result stored under its protocol's name, as `sslzoo-eval --json` reports it.
It stops before the budget runs out, with a checkpoint written, and says there is more to do; the
next call continues from there. A kill at any moment loses at most the work since the last
checkpoint (or an evaluation in progress) and never an entry that was recorded.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sslzoo
from sslzoo import registry
from sslzoo.errors import ConfigError
from sslzoo.evaluation import LINEAR_PROTOCOLS

from . import budget as budgets
from .build_folder import BuildFolder
from .engine import TrainResult, resume, train
from .evaluate import evaluate_on_dataset
from .plans import Plan, PlanEntry
from .runtime import StopRequest, resolve_device

logger = logging.getLogger("sslzoo.train")

#: Runtime options the builder passes to every entry: they never change the weights a step computes.
RUNTIME_OPTIONS = ("device", "precision", "compile", "data_dir", "download")


@dataclass
class BuildOutcome:
    """What one call of `build` did, and whether the plan is finished."""

    finished: list[str] = field(default_factory=list)  # entries recorded in this call
    done: bool = False  # every entry of the plan is recorded
    stopped_at: str | None = None  # the entry in progress when the call stopped
    reason: str | None = None  # "budget" or "sigterm" when stopped


@dataclass(frozen=True)
class EntryStatus:
    """Where an entry stands, for `--dry-run`."""

    name: str
    state: str  # "finished", "evaluate" (trained, not yet evaluated), "resume", "start"
    step: int
    total_steps: int
    estimate_seconds: float | None  # training left plus evaluation and export; None before any measurement


class Builder:
    """One call's work on a plan; `run()` goes entry by entry until the plan is done or time is up."""

    def __init__(
        self,
        plan: Plan,
        runs: str | os.PathLike,
        *,
        budget: budgets.Budget | None = None,
        runtime: dict[str, Any] | None = None,
        progress: bool = True,
        say: Callable[[str], None] = print,
        command: str = "",
    ):
        self.plan = plan
        self.folder = BuildFolder(runs)
        self.budget = budget or budgets.Budget(None)
        self.runtime = {k: v for k, v in (runtime or {}).items() if k in RUNTIME_OPTIONS and v is not None}
        self.progress = progress
        self.say = say
        self.command = command
        self.commit = code_commit()
        self._worked = False  # a call always does its first unit of work, so repeated calls progress

    def run(self) -> BuildOutcome:
        outcome = BuildOutcome()
        with StopRequest() as sigterm:  # SIGTERM outside training: stop once the current entry is recorded
            for entry in self.plan.entries:
                if self.folder.is_finished(entry.name):
                    continue
                stop = self._advance(entry, sigterm)
                if stop is not None:
                    outcome.stopped_at, outcome.reason = entry.name, stop
                    return outcome
                outcome.finished.append(entry.name)
                if sigterm.reason is not None:
                    outcome.reason = "sigterm"
                    outcome.stopped_at = self._next_unfinished()
                    outcome.done = outcome.stopped_at is None
                    return outcome
        outcome.done = True
        return outcome

    # -------------------------------------------------------------------------- one entry
    def _advance(self, entry: PlanEntry, sigterm: StopRequest) -> str | None:
        """Train, evaluate, export and record `entry`; the reason it stopped instead, if it did."""
        run = self.folder.run(entry.name)
        history = budgets.measured_from(list(self.folder.records().values()))
        if not run.is_finished():
            result = self._train(entry, history)  # its stop hook kept time for what follows
            if not result.finished:
                return result.stop_reason or "budget"
        elif self._worked:  # trained in an earlier call: is there time to evaluate it in this one?
            finish = budgets.finish_seconds(
                images=evaluation_images(entry),
                export_to=entry.export.to,
                history=history,
                images_per_s=self._images_per_s(entry),
            )
            if finish > self.budget.remaining() - budgets.SAFETY_SECONDS:
                return "budget"
        if sigterm.reason is not None:
            return "sigterm"
        self._worked = True
        started = time.monotonic()
        hub = self._publish_weights(entry)  # the numbers are measured on the file that is published
        published = time.monotonic()
        report = evaluate_entry(entry, hub, self.runtime, progress=self.progress)
        evaluated = time.monotonic()
        self._export(entry, report)
        export_s = (published - started) + (time.monotonic() - evaluated)
        record = self._record(entry, report, hub, evaluate_s=evaluated - published, export_s=export_s)
        self.folder.add(record)
        self.say(describe(record))
        return None

    def _train(self, entry: PlanEntry, history: list[budgets.Measured]) -> TrainResult:
        run = self.folder.run(entry.name)
        images = evaluation_images(entry)
        config = entry.config(self.runtime)

        def finish(step_seconds: float) -> float:
            return budgets.finish_seconds(
                images=images,
                export_to=entry.export.to,
                history=history,
                images_per_s=config.batch_size / max(step_seconds, 1e-9),
            )

        size = run.checkpoint.stat().st_size if run.checkpoint.is_file() else 0
        stop = budgets.TrainingStop(self.budget, finish, budgets.checkpoint_seconds(size))
        per_image = budgets.seconds_per_image_step(entry.method, history) or 0.0
        needed = budgets.STARTUP_SECONDS + per_image * config.batch_size + stop.checkpoint_seconds
        if self._worked and self.budget.remaining() - budgets.SAFETY_SECONDS < needed:
            return TrainResult(run.path, 0, 0, finished=False, interrupted=True, stop_reason="budget")
        self._worked = True
        command = entry.command(run.path, self.runtime)
        if run.checkpoint.is_file():
            try:  # the plan's settings of the entry: the runtime ones apply, any other must not have changed
                return resume(
                    run.path, asdict(config), command=command, progress=self._bar(entry), stop_when=stop
                )
            except ConfigError as error:
                raise ConfigError(
                    f"{entry.name}: the plan no longer describes the run in progress in {run.path} ({error}) "
                    f"Restore the entry's settings in {self.plan.path}, or delete {run.path} to start it over."
                ) from None
        return train(config, run.path, command=command, progress=self._bar(entry), stop_when=stop)

    def _publish_weights(self, entry: PlanEntry) -> Path:
        """RUNS/<name>/hub/ with the weights as they will be published (config.json + weights, in
        the plan's shards), before anything is measured."""
        from sslzoo.export.folder import export_folder

        run, hub = self.folder.run(entry.name), self.folder.hub(entry.name)
        self.folder.remove_partial_exports(entry.name)
        encoder = sslzoo.load(run.model)
        encoder.provenance["commit"] = self.commit
        if not entry.stand_in:  # a stand-in is not the zoo's model: its folder keeps its own name
            encoder.provenance["name"] = entry.name
        export_folder(
            encoder, hub, to="safetensors", max_shard_size=entry.export.max_shard_size, overwrite=True
        )
        return hub

    def _export(self, entry: PlanEntry, report: dict[str, Any]) -> Path:
        """The Hub folder completed around its published weights (copied byte for byte): the ONNX
        graph, the card and results.json with the numbers measured on those weights."""
        from sslzoo.export.folder import export_folder

        run, hub = self.folder.run(entry.name), self.folder.hub(entry.name)
        repo_id = None if entry.stand_in else registry.model_info(entry.name).hub_repo
        export_folder(
            hub,
            hub,
            to=entry.export.to,
            overwrite=True,
            repo_id=repo_id,
            metrics_log=run.metrics if run.metrics.is_file() else None,
            metrics={k: v for k, v in report.items() if k not in ("model", "seconds")},
        )
        return hub

    def _record(
        self, entry: PlanEntry, report: dict[str, Any], hub: Path, *, evaluate_s: float, export_s: float
    ) -> dict[str, Any]:
        run = self.folder.run(entry.name)
        provenance = sslzoo.load(run.model).provenance
        training = {
            key: provenance.get(key)
            for key in (
                "device",
                "world_size",
                "precision",
                "wall_time_s",
                "train_seconds",
                "views_per_s",
                "steps",
                "epochs",
                "batch_size",
            )
        }
        return {
            "name": entry.name,
            "method": entry.method,
            "plugins": list(entry.plugins),
            "dataset": entry.dataset,
            "stand_in": entry.stand_in,
            "epochs": entry.epochs,
            "metrics": {k: v for k, v in report.items() if k not in ("model", "seconds")},
            "training": training,
            "seconds": {"evaluate": round(evaluate_s, 2), "export": round(export_s, 2)},
            "evaluated_images": int(report.get("train_images", 0)) + int(report.get("test_images", 0)),
            "encoded_images": encoded_images(report),  # what the evaluation's time is measured against
            "export_to": entry.export.to,
            "max_shard_size": entry.export.max_shard_size,
            "run_dir": entry.name,
            "hub_dir": str(hub.relative_to(self.folder.path)),
            "commit": self.commit,
            "command": provenance.get("command") or entry.command(run.path, self.runtime),
            "eval_command": eval_command(entry, hub, self.runtime),
            "build_command": self.command,
            "sslzoo_version": sslzoo.__version__,
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    # ---------------------------------------------------------------------------- helpers
    def _bar(self, entry: PlanEntry) -> bool | str:
        return entry.name if self.progress else False

    def _images_per_s(self, entry: PlanEntry) -> float | None:
        provenance = _provenance(self.folder.run(entry.name).model)
        wall, steps, batch = (provenance.get(k) for k in ("wall_time_s", "steps", "batch_size"))
        return steps * batch / wall if wall and steps and batch else None

    def _next_unfinished(self) -> str | None:
        return next((e.name for e in self.plan.entries if not self.folder.is_finished(e.name)), None)


def build(
    plan: Plan,
    runs: str | os.PathLike,
    *,
    budget_minutes: float | None = None,
    runtime: dict[str, Any] | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    command: str = "",
    clock: Callable[[], float] = time.monotonic,
    already_spent: float = 0.0,
) -> BuildOutcome:
    """Work through `plan` into `runs` for at most `budget_minutes` (None: until it is finished).

    `runtime` holds the options every entry runs with (device, precision, compile, data_dir,
    download). `say` receives one line per finished entry. `command` is the build command,
    recorded with each entry. `already_spent` seconds of the budget are gone before the call
    (the command line passes its process's age).
    """
    if budget_minutes is not None and budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes must be positive, got {budget_minutes}.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("Run sslzoo-train --plan in one process, not under torchrun: it evaluates and exports too.")
    return Builder(
        plan,
        runs,
        budget=budgets.Budget(budget_minutes, clock, already_spent),
        runtime=runtime,
        progress=progress,
        say=say,
        command=command,
    ).run()


def evaluate_entry(
    entry: PlanEntry, model_dir: Path, runtime: dict[str, Any], *, progress: bool = True
) -> dict[str, Any]:
    """kNN at both protocols and each of the entry's linear probes, on its dataset's test split:
    `sslzoo-eval --json`'s report, `linear` keyed by protocol."""
    settings = entry.eval
    device = resolve_device(runtime.get("device") or "auto")
    encoder = sslzoo.load(model_dir, device=device)
    return evaluate_on_dataset(
        encoder,
        entry.dataset,
        data_dir=runtime.get("data_dir"),
        download=bool(runtime.get("download")),
        device=device,
        batch_size=settings.batch_size,
        linear=bool(settings.linear),
        linear_protocol=settings.linear or "fast",
        linear_epochs=settings.linear_epochs,
        train_size=settings.train_size,
        test_size=settings.test_size,
        progress=progress,
    )


def eval_command(entry: PlanEntry, model_dir: Path, runtime: dict[str, Any]) -> str:
    """The `sslzoo-eval` command that measures the entry's numbers again."""
    import shlex

    settings = entry.eval
    words = ["sslzoo-eval", str(model_dir), "--dataset", entry.dataset]
    if runtime.get("data_dir"):
        words += ["--data-dir", str(runtime["data_dir"])]
    if runtime.get("device"):
        words += ["--device", str(runtime["device"])]
    if settings.batch_size != 512:
        words += ["--batch-size", str(settings.batch_size)]
    if not settings.linear:
        words.append("--no-linear")
    else:
        both = set(settings.linear) == set(LINEAR_PROTOCOLS)
        words += ["--linear-protocol", "both" if both else settings.linear[0]]
        if settings.linear_epochs is not None:
            words += ["--linear-epochs", str(settings.linear_epochs)]
    for flag, value in (("--train-size", settings.train_size), ("--test-size", settings.test_size)):
        if value:
            words += [flag, str(value)]
    return " ".join(shlex.quote(word) for word in words + ["--json"])


def evaluation_images(entry: PlanEntry) -> int:
    """Images the entry's evaluation will pass through the encoder (its size for the budget)."""
    settings = entry.eval
    reference_epochs = 0
    if "reference" in settings.linear:
        from sslzoo.methods import resolve
        from sslzoo.reference_probe import reference_probe_for

        host, _ = resolve(entry.method, entry.plugins)
        reference_epochs = settings.linear_epochs or reference_probe_for(entry.method, host).epochs
    return budgets.evaluation_images(
        entry.dataset,
        settings.train_size,
        settings.test_size,
        budgets.FAKE_EVAL_SIZES,
        reference_epochs=reference_epochs,
    )


def encoded_images(report: dict[str, Any]) -> int:
    """Images an evaluation passed through the encoder, from its report: each split once, and the
    train split again in every epoch of a reference probe."""
    train, test = int(report.get("train_images", 0)), int(report.get("test_images", 0))
    reference = (report.get("linear") or {}).get("reference") or {}
    return train + test + int(reference.get("epochs", 0)) * train


def plan_status(
    plan: Plan, runs: str | os.PathLike, runtime: dict[str, Any] | None = None
) -> list[EntryStatus]:
    """Where every entry of `plan` stands in `runs`, with the time left from measured throughput."""
    from .checkpoint import load_checkpoint

    folder = BuildFolder(runs)
    records = folder.records()
    history = budgets.measured_from(list(records.values()))
    statuses = []
    for entry in plan.entries:
        run = folder.run(entry.name)
        config = entry.config(runtime)
        per_epoch = _steps_per_epoch(entry, config)
        total = entry.epochs * per_epoch if per_epoch else 0
        if entry.name in records:
            statuses.append(EntryStatus(entry.name, "finished", total, total, 0.0))
            continue
        step, state = 0, "start"
        if run.is_finished():
            step, state = total, "evaluate"
        elif run.checkpoint.is_file():
            step, state = int(load_checkpoint(run.checkpoint)["step"]), "resume"
        per_image = budgets.seconds_per_image_step(entry.method, history)
        if per_image is None and run.checkpoint.is_file() and step:
            checkpoint = load_checkpoint(run.checkpoint)
            per_image = float(checkpoint.get("wall_seconds", 0.0)) / (step * config.batch_size) or None
        estimate = None
        if per_image is not None and total:
            finish = budgets.finish_seconds(
                images=evaluation_images(entry),
                export_to=entry.export.to,
                history=history,
                images_per_s=1.0 / per_image,
            )
            estimate = (total - step) * config.batch_size * per_image + finish
        statuses.append(EntryStatus(entry.name, state, step, total, estimate))
    return statuses


def code_commit() -> str | None:
    """The git commit of the sslzoo code that runs (`-dirty` when it has uncommitted changes), if it
    runs from a git checkout; None for an installed package."""
    root = Path(sslzoo.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def describe(record: dict[str, Any]) -> str:
    """One line for a finished entry: its headline numbers (each linear one with its protocol),
    time and throughput."""
    metrics, training = record.get("metrics", {}), record.get("training", {})
    knn = metrics.get("knn", {}).get("k200_t0.1", {}).get("top1")
    parts = [f"{record['name']}: kNN {knn:.2f}" if knn is not None else record["name"]]
    for protocol, result in (metrics.get("linear") or {}).items():
        parts.append(f"linear ({protocol}) {result['top1']:.2f}")
    wall = training.get("wall_time_s")
    if wall is not None:
        parts.append(f"{wall / 3600:.2f} h on {training.get('world_size', 1)}x {training.get('device')}")
    if training.get("views_per_s"):
        parts.append(f"{training['views_per_s']:,.0f} views/s")
    return "finished " + ", ".join(parts)


def _steps_per_epoch(entry: PlanEntry, config: Any) -> int:
    """Steps per epoch from the dataset's size, without loading it (0 when it is not known here)."""
    if entry.dataset == "fake":
        images = config.fake_size
    else:
        images = budgets.SPLIT_SIZES.get(entry.dataset, (0, 0))[0]
        if entry.dataset == "stl10":
            images = 105_000  # the labelled train split and the unlabelled one
    return images // config.batch_size


def _provenance(model_dir: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((model_dir / "config.json").read_text()).get("provenance") or {}
    except (OSError, ValueError):
        return {}
