"""`sslzoo-train` and `sslzoo-eval`: thin command lines over `train.engine` and `sslzoo.evaluation`."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from sslzoo.errors import MissingExtraError, SslzooError

from .catalog import DATASETS, SETTABLE_KEYS, available_recipes

TRAIN_EPILOG = f"""\b
Any setting can also be changed with --set KEY=VALUE (repeatable; values are TOML):
  --set hparams.temperature=0.5     a method hyperparameter (constructor keyword)
  --set augment.blur=0.0            an augmentation of every view
  --set augment.view2.solarize=0.2  an augmentation of view 2 only
  --set knn_bank_size=5000          kNN monitor on 5000 training images (0 = all)
  --set knn_test_size=1000          ... and 1000 test images (0 = all)
  --set checkpoint_minutes=10       checkpoint at least this often (and every epoch; 0 = every step)
  --set workers=8                   DataLoader workers for image folders
Every value is checked against its type and range before any data loads.
\b
Top-level keys: {", ".join(SETTABLE_KEYS)}.
\b
A plan builds many zoo entries in priority order (train/plans/*.toml), in as many calls as it takes:
  sslzoo-train --plan zoo --out runs/zoo --data-dir data --budget-minutes 25
exits 75 when it stopped with more to do (run it again), 0 when every entry is finished.

Examples:
  sslzoo-train --method simclr --dataset cifar10 --out runs/simclr-c10
  sslzoo-train --method byol --dataset fake --max-steps 5 --device cpu --out /path/to/smoke
  sslzoo-train --resume --out runs/simclr-c10
  torchrun --nproc_per_node 4 -m sslzoo.train --method mocov2 --dataset cifar100 --out runs/m
  sslzoo-train --plan zoo --out runs/zoo --dry-run
\b
Exit status:
  0   finished: OUT/model/ is written (with --plan: every entry is finished)
  75  stopped cleanly and resumable (EX_TEMPFAIL, so a scheduler can tell it from a finished run):
      by SIGTERM (e.g. a preemption) or, with --plan, the budget; the checkpoint is written.
      Continue with --resume (with --plan: run the same command again)
  1   an error; the message says what to do
  2   a usage error (unknown option, missing --out...)
"""

#: `sslzoo-train`'s exit status when it stopped cleanly with more to do (EX_TEMPFAIL): call it again.
EXIT_MORE_TO_DO = 75
#: Options a plan sets per entry; the others apply to every entry of a plan.
_PER_ENTRY_OPTIONS = ("method", "plugins", "backbone", "dataset", "epochs", "batch_size", "lr", "seed")
_PER_ENTRY_OPTIONS += ("resume", "from_previous", "max_steps", "knn_every", "sets")


@click.command(
    epilog=TRAIN_EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option(
    "--method",
    type=click.Choice(available_recipes()),
    help="Self-supervised method to train; its recipe (train/recipes/METHOD.toml) sets every default. "
    "mixco, batchfusion and iecl are a host method plus their plug-in.",
)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    type=click.Choice(["mixco", "batchfusion", "iecl"]),
    help="Add a plug-in to the method (repeatable), e.g. --method byol --plugin mixco. "
    "Its hyperparameters take their defaults unless set with --set hparams.NAME=VALUE.",
)
@click.option(
    "--backbone", type=click.Choice(["resnet18", "resnet50"]), help="Encoder backbone [recipe: resnet18]."
)
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    help="Pretraining data. cifar10/cifar100/stl10 are downloaded with --download; imagenet100 and "
    "imagefolder read DATA_DIR/train/<class>/<image> (and val/ for kNN); fake is random images "
    "for smoke tests.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that holds the dataset [default: $SSLZOO_HOME/datasets].",
)
@click.option(
    "--download/--no-download",
    default=None,
    help="Download CIFAR-10/100 or STL-10 into --data-dir if it is not there [default: no].",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs [recipe].")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Global batch size, summed over all processes [recipe]. The learning rate follows it "
    "(the recipe's lr_scaling).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Base learning rate at the recipe's reference batch (lr_batch), scaled to --batch-size [recipe].",
)
@click.option("--device", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N [default: auto].")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    help="Autocast precision of the forward pass; auto = bf16 on CUDA, fp32 on CPU [default: auto].",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=None,
    help="Compile the training step with torch.compile (faster on GPU after a warm-up) [default: no].",
)
@click.option("--seed", type=int, help="Seed of the weights, the data order and the views [default: 0].")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: config.json, metrics.jsonl, checkpoint.pt (and checkpoint.prev.pt, the one before) "
    "and, at the end, model/. Locked while a process trains in it: a second one is refused.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its checkpoint, with its own recipe. Only runtime options "
    "(device, precision, compile, max-steps, knn-every, epochs, data-dir) may change. A damaged "
    "checkpoint (it fails its checksum) is refused and nothing is written.",
)
@click.option(
    "--from-previous",
    is_flag=True,
    help="With --resume, when checkpoint.pt is damaged or missing: continue from checkpoint.prev.pt, "
    "the checkpoint before it (the damaged file is kept as checkpoint.damaged-TIME.pt).",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=0),
    help="Stop after this many optimiser steps in total, then export (smoke runs); the schedule still "
    "spans all epochs. 0 = no limit [default: 0].",
)
@click.option(
    "--knn-every",
    type=click.IntRange(min=0),
    help="Measure kNN accuracy on the test split every N epochs (and at the end); 0 = never [recipe].",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any configuration key (repeatable); see below.",
)
@click.option(
    "--plan",
    metavar="PLAN",
    help="Build the zoo entries of a plan into --out, in order: a plan file, or a shipped plan's name "
    "(zoo: the twenty CIFAR ResNet-18 models). Each entry is trained (resumed from its checkpoint), "
    "evaluated, exported to OUT/NAME/hub/ and recorded in OUT/results.json. --device, --precision, "
    "--compile, --data-dir and --download apply to every entry.",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="With --plan: stop cleanly (checkpoint written, exit status 75) before this much wall time has "
    "passed, keeping time for the evaluation and export of an entry it finishes [default: no limit].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --plan: list each entry's state and the time left, estimated from the measured "
    "throughput of earlier entries; train nothing.",
)
def train_main(
    method: str | None,
    plugins: tuple[str, ...],
    backbone: str | None,
    dataset: str | None,
    data_dir: Path | None,
    download: bool | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    device: str | None,
    precision: str | None,
    compile_: bool | None,
    seed: int | None,
    out: Path,
    resume: bool,
    from_previous: bool,
    max_steps: int | None,
    knn_every: int | None,
    sets: tuple[str, ...],
    plan: str | None,
    budget_minutes: float | None,
    dry_run: bool,
) -> None:
    """Pretrain an encoder with a self-supervised (or supervised contrastive) method.

    Defaults come from the method's recipe and the dataset; the options below override them.
    The run folder receives config.json (the resolved recipe), metrics.jsonl (one line per epoch),
    checkpoint.pt (every epoch, every few minutes, and on SIGTERM, which then exits with status 75)
    and finally model/, an encoder folder that sslzoo.load reads. Under torchrun, every process runs
    this same command.
    """
    engine = _training_engine()
    from .recipes import parse_set, resolve_config

    _setup_logging()
    options: dict[str, Any] = {
        "backbone": backbone,
        "data_dir": str(data_dir) if data_dir else None,
        "download": download,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "device": device,
        "precision": precision,
        "compile": compile_,
        "seed": seed,
        "max_steps": max_steps,
        "knn_every": knn_every,
    }
    ctx = click.get_current_context()
    command = _command_line(ctx)
    if plan is not None:
        source = click.core.ParameterSource.COMMANDLINE
        given = [
            param.opts[0]
            for param in ctx.command.params
            if param.name in _PER_ENTRY_OPTIONS and ctx.get_parameter_source(param.name) is source
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)}: with --plan, each entry sets these in the plan file.")
        runtime = {k: options[k] for k in ("device", "precision", "compile", "data_dir", "download")}
        _run_plan(plan, out, budget_minutes, dry_run, runtime, command)
        return
    if budget_minutes is not None or dry_run:
        raise click.UsageError("--budget-minutes and --dry-run apply to --plan.")
    if from_previous and not resume:
        raise click.UsageError("--from-previous goes with --resume.")
    try:
        if resume:
            overrides = {k: v for k, v in options.items() if v is not None}
            overrides.update({k: v for k, v in (("method", method), ("dataset", dataset)) if v is not None})
            if plugins:
                overrides["plugins"] = list(plugins)
            for assignment in sets:
                path, value = parse_set(assignment)
                overrides[".".join(path)] = value
            result = engine.resume(out, overrides, command=command, from_previous=from_previous)
        else:
            if method is None or dataset is None:
                raise click.UsageError("--method and --dataset are required (unless --resume).")
            config = resolve_config(method, dataset, plugins, options, sets)
            result = engine.train(config, out, command=command)
    except SslzooError as error:
        raise click.ClickException(str(error)) from error
    if result.interrupted:
        click.echo(
            f"Stopped at step {result.step}/{result.total_steps}; checkpoint in {out}. "
            f"Continue with: sslzoo-train --resume --out {shlex.quote(str(out))}",
            err=True,
        )
        ctx.exit(EXIT_MORE_TO_DO)
    knn = result.metrics.get("knn", {})
    summary = ", ".join(f"kNN {key} top-1 {value['top1']:.2f}%" for key, value in knn.items())
    click.echo(
        f"Trained {result.step} steps. Model: {result.model_dir}" + (f" ({summary})" if summary else "")
    )


def _training_engine() -> Any:
    """`sslzoo.train.engine`, or the one-line error that says which extra brings what it needs."""
    try:
        from . import engine
    except MissingExtraError as error:
        raise click.ClickException(str(error)) from None
    except ImportError as error:  # a package the training extra brings, imported by name
        raise click.ClickException(
            f"sslzoo-train needs {error.name or error}, which is not installed here. "
            "Install it with: pip install 'sslzoo[train]'"
        ) from None
    return engine


def _run_plan(
    plan_ref: str, out: Path, budget_minutes: float | None, dry_run: bool, runtime: dict[str, Any], command: str
) -> None:
    """`--plan`: the dry-run table, or one call of the builder; exits 75 while there is more to do."""
    from tqdm.auto import tqdm

    _training_engine()  # the builder trains, evaluates and exports: say first what is missing

    from .budget import process_age
    from .builder import build, plan_status
    from .plans import load_plan

    try:
        plan = load_plan(plan_ref)
        if dry_run:
            click.echo(_describe_status(plan, out, plan_status(plan, out, runtime), budget_minutes))
            return
        outcome = build(
            plan,
            out,
            budget_minutes=budget_minutes,
            runtime=runtime,
            say=tqdm.write,
            command=command,
            already_spent=process_age() if _started_as_command() else 0.0,
        )
    except SslzooError as error:
        raise click.ClickException(str(error)) from error
    if outcome.done:
        click.echo(
            f"Plan finished: {len(plan.entries)} entries in {out / 'results.json'}. Record them in the zoo with: "
            f"python -m sslzoo.export record {shlex.quote(str(out))}"
        )
        return
    why = "SIGTERM" if outcome.reason == "sigterm" else "the time budget"
    click.echo(
        f"Stopped by {why} in {outcome.stopped_at}, checkpoint written; run the same command again to continue.",
        err=True,
    )
    click.get_current_context().exit(EXIT_MORE_TO_DO)


def _started_as_command() -> bool:
    """This process was started to run sslzoo-train (not a Python session that calls it): then the
    budget also covers its start-up and imports."""
    return Path(sys.argv[0]).name in ("sslzoo-train", "__main__.py")


def _describe_status(plan: Any, out: Path, statuses: list[Any], budget_minutes: float | None) -> str:
    finished = sum(status.state == "finished" for status in statuses)
    lines = [f"Plan {plan.path} into {out}: {len(statuses)} entries, {finished} finished."]
    width = max(len(status.name) for status in statuses)
    states = {"finished": "finished", "evaluate": "to evaluate", "resume": "in progress", "start": "to start"}
    known, unknown, elapsed = 0.0, 0, 0.0
    for number, status in enumerate(statuses, start=1):
        if status.state == "finished":
            when = ""
        elif status.estimate_seconds is None:
            unknown += 1
            when = "time: not yet measured"
        else:
            known += status.estimate_seconds
            elapsed += status.estimate_seconds
            fits = budget_minutes is not None and elapsed <= 60 * budget_minutes
            when = f"~{_duration(status.estimate_seconds)}" + (" (fits this budget)" if fits else "")
        steps = f"{status.step:,}/{status.total_steps:,} steps"
        lines.append(f"{number:>3}  {status.name:<{width}}  {states[status.state]:<11}  {steps:>20}  {when}")
    left = [f"~{_duration(known)} for the entries measured so far"] if known else []
    if unknown:
        left.append(
            f"{unknown} entr{'y' if unknown == 1 else 'ies'} without a measured throughput yet "
            "(estimates appear once an entry of the same method, or any entry, has trained)"
        )
    if left:
        lines.append("Time left: " + "; ".join(left) + ".")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _command_line(ctx: click.Context) -> str:
    """The options the user gave, rebuilt from what click parsed (not `sys.argv`, which belongs to
    whatever process called us), so the recorded command reruns the same training."""
    words = ["sslzoo-train"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            words.append(param.opts[0])
        else:
            for item in value if param.multiple else [value]:
                words += [param.opts[0], str(item)]
    return " ".join(shlex.quote(word) for word in words)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("model")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    required=True,
    help="Labelled dataset to evaluate on: the train split is the kNN bank and the probe's "
    "training set, the test split is scored.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that holds the dataset [default: $SSLZOO_HOME/datasets].",
)
@click.option(
    "--download/--no-download", default=False, help="Download CIFAR/STL-10 if missing [default: no]."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Images per forward pass while extracting features.",
)
@click.option(
    "--linear/--no-linear",
    default=True,
    show_default=True,
    help="Also train a linear probe on the frozen encoder (kNN is always measured).",
)
@click.option(
    "--linear-protocol",
    type=click.Choice(["fast", "reference", "both"]),
    default="fast",
    show_default=True,
    help="fast: cached, un-augmented features standardised with the training set's statistics, SGD lr "
    "0.03, cosine, 100 epochs (minutes on a CPU). reference: the papers' probe (SupContrast/SelfCon "
    "main_linear.py): random resized crops and flips through the frozen encoder every epoch, SGD "
    "batch 512, lr 1 (SupCon 5, SelfCon 3), step decay, 100 epochs (meant for a GPU). both: each "
    "result names its protocol; the two are never compared.",
)
@click.option(
    "--linear-epochs",
    type=click.IntRange(min=1),
    help="Epochs of the linear probe [protocol's own: 100]; the reference decay epochs move with it.",
)
@click.option(
    "--linear-lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Learning rate of the linear probe [protocol's own: fast 0.03; reference 1, SupCon 5, SelfCon 3].",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Use a fixed random subset of this many training images (0 = all): quicker on a CPU.",
)
@click.option(
    "--test-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Score a fixed random subset of this many test images (0 = all).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object on stdout instead of a table. Progress still goes to stderr: a bar on a "
    "terminal, a line every 30 s (SSLZOO_PROGRESS_SECONDS) when stderr is a pipe or a file.",
)
@click.option(
    "--figure",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG of the kNN (k=200, t=0.1) confusion matrix and accuracy per class; the report "
    "(and --json) then holds them as per_class.",
)
def eval_main(
    model: str,
    dataset: str,
    data_dir: Path | None,
    download: bool,
    device: str,
    batch_size: int,
    linear: bool,
    linear_protocol: str,
    linear_epochs: int | None,
    linear_lr: float | None,
    train_size: int,
    test_size: int,
    as_json: bool,
    figure: Path | None,
) -> None:
    """Evaluate a frozen encoder: weighted kNN (k=200, t=0.1 and k=20, t=0.07) and a linear probe.

    MODEL is a zoo name, a model folder (e.g. a run's OUT/model) or hf-hub:org/repo[@revision].
    Features are extracted once, with the encoder's own test-time preprocessing, and cached in
    memory for kNN and the fast probe; the reference probe runs the encoder on augmented training
    images every epoch. Accuracies are top-1 / top-5 percentages on the test split; every linear
    result names its protocol.
    """
    import sslzoo

    from .evaluate import evaluate_on_dataset
    from .runtime import resolve_device

    _setup_logging()
    try:
        torch_device = resolve_device(device)
        encoder = sslzoo.load(model, device=torch_device)
        report = {
            "model": model,
            **evaluate_on_dataset(
                encoder,
                dataset,
                data_dir=data_dir,
                download=download,
                device=torch_device,
                batch_size=batch_size,
                linear=linear,
                linear_protocol=linear_protocol,
                linear_epochs=linear_epochs,
                linear_lr=linear_lr,
                train_size=train_size,
                test_size=test_size,
                progress=True,  # stderr: a bar on a terminal, log lines in a pipe; stdout stays JSON
                per_class=figure is not None,
            ),
        }
        if figure is not None:
            from sslzoo.export.class_figure import plot_per_class

            per_class = report["per_class"]
            title = f"{model} on {dataset}: {report['train_images']:,} bank / {report['test_images']:,} test images"
            plot_per_class(per_class, figure, names=per_class["class_names"], title=title)
            report["figure"] = str(figure)
    except SslzooError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(
        f"{model} on {dataset}: {report['train_images']} train / {report['test_images']} test images, "
        f"{report['feature_dim']}-d features"
    )
    for key, accuracy in report["knn"].items():
        click.echo(f"  kNN {key:<10} top-1 {accuracy['top1']:6.2f}%  top-5 {accuracy['top5']:6.2f}%")
    for protocol, accuracy in report.get("linear", {}).items():
        click.echo(
            f"  linear probe ({protocol}) top-1 {accuracy['top1']:6.2f}%  top-5 {accuracy['top5']:6.2f}%"
        )
    if figure is not None:
        worst = min(
            (acc, name)
            for acc, name in zip(report["per_class"]["accuracy"], report["per_class"]["class_names"])
            if acc is not None
        )
        click.echo(f"  per class (kNN k=200): worst {worst[1]} {worst[0]:.2f}%; figure: {figure}")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
