"""Command line: `sslzoo-export` (one model to a Hub-ready folder, optionally pushed), and the zoo's
bookkeeping (`python -m sslzoo.export record|stash|cards`). Each command parses, calls the library, prints.

The library (PyTorch, huggingface_hub) is imported inside the commands, so `--help` answers at once."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click

from sslzoo import registry
from sslzoo.errors import SslzooError
from sslzoo.scratch import exit_on_sigterm

from . import CALIBRATION_SIZE, FORMATS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option(
    "--to",
    "to",
    type=click.Choice(FORMATS),
    default="all",
    show_default=True,
    help="Weight formats to write: safetensors (PyTorch / sslzoo.load), onnx (ONNX Runtime, TensorRT, "
    "browsers) or all. config.json, README.md (the model card) and results.json are always written.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write: a complete Hugging Face Hub repository. Built beside it and moved in at the "
    "end, so a failed export leaves it untouched.",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="Convert the weights to half precision (half the size). The ONNX graph then computes in fp16 "
    "with float32 inputs/outputs, checked against PyTorch within 1% of the feature scale. Default: the "
    "weights file as MODEL stores it, byte for byte (for a zoo model, the published file).",
)
@click.option(
    "--fp32",
    is_flag=True,
    help="Convert the weights to float32 (e.g. the zoo's float16 files, for tools that want float32). "
    "The values stay exactly the same, and so do the measured numbers.",
)
@click.option(
    "--eval-json",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Output of `sslzoo-eval MODEL --json`: the measured numbers to put on the card. They must be of "
    "the weights exported (the report names their sha256). Default: the registry's numbers for a zoo "
    "model, else those stored with the weights.",
)
@click.option(
    "--max-shard-size",
    metavar="SIZE",
    default=None,
    help="Split the weights into safetensors shards of at most SIZE (e.g. 15MB, 2GB) plus "
    "model.safetensors.index.json, the layout the Hub and transformers use; sslzoo.load reads it. "
    "Default: one model.safetensors.",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Also write model.int8.onnx: ONNX Runtime static quantization (QDQ, uint8 activations, int8 "
    "per-channel weights) for fast CPU serving (sslzoo-serve --backend onnx-int8). Needs --to onnx or all.",
)
@click.option(
    "--calibration",
    metavar="INPUT",
    default=None,
    help="With --quantize: images to calibrate on (a folder, a quoted glob or a file list) "
    "[default: the model's training split in --data-dir; for a CIFAR-10 model without it, the embedded "
    "gallery's CIFAR-10 test images, which results.json then says].",
)
@click.option(
    "--calibration-size",
    type=click.IntRange(min=2),
    default=CALIBRATION_SIZE,
    show_default=True,
    help="With --quantize: calibration images drawn (seeded) from the source.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --quantize: the folder holding the model's dataset [default: $SSLZOO_HOME/datasets].",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace OUT even if it holds another model or other files (re-exporting the same weights "
    "never needs it).",
)
@click.option(
    "--metrics-log",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A training run's metrics.jsonl to draw loss and kNN curves into the card. Found automatically "
    "when MODEL is a run's model/ folder.",
)
@click.option(
    "--push",
    "push",
    metavar="ORG/REPO",
    default=None,
    help="After exporting, create this Hub model repository if needed and upload the folder. Uses the "
    "token from HF_TOKEN or `hf auth login`.",
)
@click.option("--private", is_flag=True, help="With --push: create the repository as private.")
@click.option(
    "--revision",
    metavar="BRANCH",
    default=None,
    help="With --push: upload to this branch (created from main if missing) instead of main.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --push: list the files and sizes that would be uploaded; no network, no token needed.",
)
def main(
    model: str,
    to: str,
    out: Path,
    fp16: bool,
    fp32: bool,
    eval_json: Path | None,
    max_shard_size: str | None,
    quantize: str | None,
    calibration: str | None,
    calibration_size: int,
    data_dir: Path | None,
    overwrite: bool,
    metrics_log: Path | None,
    push: str | None,
    private: bool,
    revision: str | None,
    dry_run: bool,
) -> None:
    """Export MODEL (a zoo name, a model folder, or hf-hub:ORG/REPO[@REV]) to OUT.

    \b
    OUT holds config.json + model.safetensors (sslzoo.load(OUT) reads it; with --max-shard-size,
    shards and their index instead), model.onnx (one file, input `images` (N,3,H,W) float32
    normalised, output `features` (N,D), checked against PyTorch
    at a batch size other than the traced one), README.md (the model card, from measured results
    only), results.json and the training curves when there are any.

    \b
    The weights are MODEL's own file, byte for byte: for a zoo model, the published file whose
    sha256 the registry holds (and sslzoo.load checks), so a push uploads exactly that. --fp16,
    --fp32 and --max-shard-size convert it. The card shows numbers measured on the exported file
    (or on one whose values it holds exactly, as --fp32 of a float16 file does).

    \b
    Examples:
      sslzoo-export simclr-resnet18-cifar10 --to all --out exports/simclr-resnet18-cifar10
      sslzoo-export simclr-resnet18-cifar10 --to onnx --quantize int8 --data-dir data --out exports/int8
      sslzoo-export runs/simclr/model --out exports/simclr --push me/simclr-cifar10 --dry-run
    """
    from sslzoo import hub

    from .folder import export_folder

    try:
        if push is None and (private or revision or dry_run):
            raise SslzooError("--private, --revision and --dry-run only apply with --push ORG/REPO.")
        if fp16 and fp32:
            raise SslzooError("--fp16 and --fp32 ask for different files; choose one (or neither: the file as it is).")
        report = _read_report(eval_json) if eval_json else None
        if quantize is None and (calibration or data_dir):
            raise SslzooError("--calibration and --data-dir only apply with --quantize int8.")
        if push is not None:
            hub.check_repo_id(push)  # fail before any work
        token = hub.resolve_token() if push and not dry_run else None
        with exit_on_sigterm():  # a stopped export removes its staging folder (the next export would, too)
            result = export_folder(
                model,
                out,
                to=to,
                dtype="float16" if fp16 else "float32" if fp32 else None,
                overwrite=overwrite,
                repo_id=push,
                metrics_log=metrics_log,
                max_shard_size=_shard_size(max_shard_size),
                quantize=quantize,
                calibration=calibration,
                data_dir=data_dir,
                calibration_size=calibration_size,
                metrics=report,
            )
        click.echo(f"Exported {result.name} to {result.folder}")
        for name, size in result.files.items():
            click.echo(f"  {name:<22} {_size(size):>10}")
        report = result.onnx_report
        if report:
            click.echo(
                f"ONNX parity: max |diff| {report['max_abs_diff']:.2g} <= {report['tolerance']:.2g} at batch "
                f"{report['parity_batch']} (traced at {report['trace_batch']}, "
                f"{', '.join(report['providers'])})"
            )
        int8 = result.results.get("int8")
        if int8:
            click.echo(_describe_int8(int8))
        if push:
            try:
                upload = hub.upload_folder(
                    result.folder, push, private=private, revision=revision, token=token, dry_run=dry_run
                )
            except hub.HubPushError as error:
                raise SslzooError(
                    f"{str(error).rstrip('.')}. {_push_later(result.folder, push, revision, private)}"
                ) from error
            click.echo(_describe_upload(upload))
    except SslzooError as error:
        raise click.ClickException(_one_line(error)) from error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def tools() -> None:
    """Keep the zoo's numbers, cards and tables in step (run from the repository root)."""


@tools.command("record")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--name", default=None, help="Registry name; default: the run's provenance, else METHOD-BACKBONE-DATASET."
)
@click.option(
    "--weights",
    type=click.Choice(registry.WEIGHTS_STATES),
    default="hub",
    show_default=True,
    help="Where the published weights are: on the Hub, bundled in the package, or none (numbers only).",
)
@click.option(
    "--weights-file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="The exact file published, or the folder that holds it (one file or shards; every sha256 is "
    "checked on each load); default: the weights in RUN_DIR/model/.",
)
@click.option(
    "--eval-json",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Output of `sslzoo-eval ... --json`; default: the metrics the run stored in its provenance.",
)
@click.option(
    "--registry",
    "registry_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The zoo.json to update; default: the one sslzoo reads (sslzoo/zoo.json in a source checkout).",
)
@click.option(
    "--cards",
    "cards_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("model_cards"),
    show_default=True,
    help="For a builder's RUNS folder: where the model cards and the zoo table are rewritten.",
)
@click.option(
    "--readme",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="For a builder's RUNS folder: the README whose zoo table is refreshed [default: ./README.md if "
    "it has the zoo markers].",
)
@click.option(
    "--allow-stand-ins",
    is_flag=True,
    help="For a builder's RUNS folder: also record entries trained on the fake dataset in place of "
    "their own (tests and demos only; never for published numbers).",
)
def record_main(
    run_dir: Path,
    name: str | None,
    weights: str,
    weights_file: Path | None,
    eval_json: Path | None,
    registry_file: Path | None,
    cards_dir: Path,
    readme: Path | None,
    allow_stand_ins: bool,
) -> None:
    """Copy finished training results (metrics, training facts, sha256) into the registry.

    \b
    RUN_DIR is one sslzoo-train run (its RUN/model/ is recorded), or a RUNS folder built by
    sslzoo-train --plan: then every finished entry is recorded, with the checksums of its
    RUNS/NAME/hub/ weights, and the model cards, model_cards/README.md and the README's zoo
    table are regenerated.
    """
    from sslzoo.train.build_folder import BuildFolder

    from .results import record_run

    try:
        if BuildFolder(run_dir).is_build():
            single = {"--name": name, "--weights-file": weights_file, "--eval-json": eval_json}
            given = [flag for flag, value in single.items() if value is not None]
            if registry_file is not None and registry_file.resolve() != registry.registry_path().resolve():
                given.append("--registry")  # cards and tables are generated from the registry sslzoo reads
            if given:
                raise SslzooError(f"{', '.join(given)}: only for one run; {run_dir} is a plan's RUNS folder.")
            _record_build(run_dir, weights, cards_dir, readme, allow_stand_ins)
            return
        report = json.loads(eval_json.read_text()) if eval_json else None
        info = record_run(
            run_dir,
            name=name,
            weights=weights,
            weights_file=weights_file,
            eval_report=report,
            registry_file=registry_file,
        )
    except (SslzooError, ValueError) as error:
        raise click.ClickException(_one_line(error)) from error
    click.echo(
        f"Recorded {info.name}: weights={info.weights}, sha256={info.sha256}, "
        f"metrics={json.dumps(info.metrics)}"
    )


def _record_build(runs: Path, weights: str, cards_dir: Path, readme: Path | None, allow_stand_ins: bool) -> None:
    from .record_build import record_build
    from .zoo_table import START_MARKER

    if readme is None and Path("README.md").is_file() and START_MARKER in Path("README.md").read_text():
        readme = Path("README.md")
    result = record_build(
        runs, weights=weights, cards_dir=cards_dir, readme=readme, allow_stand_ins=allow_stand_ins
    )
    for info in result.recorded:
        shards = f", {len(info.shards)} shards" if info.shards else ""
        click.echo(f"Recorded {info.name}: weights={info.weights}{shards}, sha256={info.sha256}")
    if result.skipped:
        click.echo(
            f"Skipped {len(result.skipped)} stand-in entr{'y' if len(result.skipped) == 1 else 'ies'} trained on "
            f"fake data ({', '.join(result.skipped)}); --allow-stand-ins records them.",
            err=True,
        )
    click.echo(
        f"Wrote {len(result.cards)} model cards and {result.index}" + (f"; refreshed {readme}" if readme else "")
    )


@tools.command("stash")
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Registry name(s) to store (repeatable); default: every finished entry of a RUNS folder, or "
    "the model folder's own name.",
)
@click.option(
    "--max-shard-size",
    metavar="SIZE",
    default="15MB",
    show_default=True,
    help="Largest fp16 safetensors shard to commit (e.g. 15MB, 5MB).",
)
@click.option(
    "--allow-stand-ins",
    is_flag=True,
    help="Also store entries trained on the fake dataset in place of their own (tests and demos only).",
)
def stash_main(source: Path, names: tuple[str, ...], max_shard_size: str, allow_stand_ins: bool) -> None:
    """Keep models' fp16 weights in the repository's history, out of the tracked tree.

    \b
    SOURCE is a RUNS folder of sslzoo-train --plan (each finished entry's RUNS/NAME/hub/) or one
    model folder. Two commits, run from a clone of the repository:
      1. weights/NAME/: config.json and fp16 safetensors shards;
      2. the registry (weights "history": that commit, the path, every file's sha256), the model
         cards and zoo tables, and weights/NAME/ removed from the tree again.
    sslzoo.load(NAME) in any clone that holds commit 1 then restores the weights into
    $SSLZOO_HOME/NAME, every sha256 checked; sslzoo-export NAME --push can publish them from there.
    Every check runs before anything is written; a stash that stopped between its two commits is
    finished by running it again. Other changes in the work tree are left alone.
    """
    from sslzoo.history import WEIGHTS_ROOT

    from .stash import stash

    try:
        result = stash(
            source,
            names=list(names) or None,
            max_shard_size=_shard_size(max_shard_size),
            allow_stand_ins=allow_stand_ins,
        )
    except SslzooError as error:
        raise click.ClickException(_one_line(error)) from error
    for info in result.stored:
        files = len(info.history["files"]) - 1
        click.echo(
            f"Stored {info.name}: {files} weight file{'s' if files > 1 else ''} in commit "
            f"{info.history['commit']} ({info.history['path']}/), sha256={info.sha256}"
        )
    if result.recorded_in:
        click.echo(f"Recorded in commit {result.recorded_in}; {WEIGHTS_ROOT}/ is out of the tree again.")
    for name in result.unchanged:
        click.echo(f"{name}: already in the history with these weights; nothing to do.")
    if result.skipped:
        click.echo(
            f"Skipped stand-in entries trained on fake data ({', '.join(result.skipped)}); "
            "--allow-stand-ins stores them.",
            err=True,
        )


@tools.command("cards")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("model_cards"),
    show_default=True,
    help="Folder of the generated cards and of the zoo table (README.md).",
)
@click.option(
    "--runs",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Folder of training runs named like the models (RUNS/<name>/metrics.jsonl) to draw curves from.",
)
@click.option(
    "--readme",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Also refresh this README's zoo table between <!-- zoo:start --> and <!-- zoo:end -->.",
)
def cards_main(out: Path, runs: Path | None, readme: Path | None) -> None:
    """Regenerate every trained model's card and the zoo tables from the registry."""
    from .cards import write_model_cards
    from .zoo_table import write_zoo_tables

    try:
        cards = write_model_cards(out, runs_dir=runs)
        index = write_zoo_tables(out, readme=readme)
    except SslzooError as error:
        raise click.ClickException(_one_line(error)) from error
    click.echo(f"Wrote {len(cards)} model cards and {index}" + (f"; refreshed {readme}" if readme else ""))


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except ValueError as error:
        raise SslzooError(f"{path}: not JSON ({error}); pass the output of sslzoo-eval ... --json.") from None
    if not isinstance(report, dict):
        raise SslzooError(f"{path}: not an sslzoo-eval report; pass the output of sslzoo-eval ... --json.")
    return report


def _shard_size(text: str | None) -> int | str | None:
    """Check a --max-shard-size before any work: bytes, or a number with KB, MB, GB or TB (powers of 1000,
    as huggingface_hub counts them, which parses it)."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]B", text, flags=re.IGNORECASE) and float(text[:-2]) > 0:
        return text
    raise SslzooError(f"--max-shard-size {text!r}: write a size such as 15MB, 500KB or 2GB.")


def _describe_int8(record: dict) -> str:
    agreement = record.get("cosine_to_fp32") or {}
    line = (
        f"int8: calibrated on {record['calibration']['images']} images ({record['calibration']['source']}); "
        f"cosine to fp32 mean {agreement.get('mean', float('nan')):.4f}, min {agreement.get('min', float('nan')):.4f}"
    )
    knn = record.get("gallery_knn")
    if knn:
        pairs = ", ".join(f"{key} {knn['fp32'][key]:.2f} -> {knn['int8'][key]:.2f}" for key in knn["fp32"])
        same = " (calibrated on these images)" if knn["calibrated_on_these_images"] else ""
        line += f"\nint8 kNN top-1 on {knn['gallery']} (leave-one-out, fp32 -> int8){same}: {pairs}"
    return line


def _describe_upload(upload: dict) -> str:
    target = f"{upload['repo_id']}@{upload['revision']}" + (" (private)" if upload["private"] else "")
    if upload["dry_run"]:
        lines = [
            f"Dry run: would upload {len(upload['files'])} files "
            f"({_size(upload['total_bytes'])}) to {target}:"
        ]
        lines += [f"  {path:<22} {_size(size):>10}" for path, size in upload["files"]]
        return "\n".join(lines)
    total = _size(upload["total_bytes"])
    return f"Pushed {len(upload['files'])} files ({total}) to {target}: {upload['commit_url']}"


def _push_later(folder: Path, repo_id: str, revision: str | None, private: bool) -> str:
    command = ["hf", "upload", repo_id, str(folder)]
    command += ["--revision", revision] if revision else []
    command += ["--private"] if private else []
    return (
        f"The export in {folder} is complete: push it when the Hub is reachable with "
        f"`{shlex.join(command)}`, or run this command again."
    )


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"  # pragma: no cover


if __name__ == "__main__":
    main()
