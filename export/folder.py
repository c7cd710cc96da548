"""One encoder as a complete Hugging Face Hub repository folder, written all at once or not at all.

The folder holds `config.json` + the weights (what `sslzoo.load` and `Encoder.from_pretrained`
read: `model.safetensors` or, with `max_shard_size`, safetensors shards and their index),
`model.onnx` (one file, parity-checked), `README.md` (the model card), `results.json` (measured
numbers, file checksums, the ONNX parity report) and `training_curves.png` when the run's
`metrics.jsonl` or the source folder has one. Everything is built and verified in a staging
folder beside OUT, then moved into place: a failure leaves OUT as it was. The staging
folder names its process (`.OUT.partial-<pid>-<random>`), so an export that was killed leaves
nothing the next export into OUT does not clean up (`remove_abandoned_staging`).

The weights are the source's own file, byte for byte, unless a conversion is asked for (another
dtype, shards): a zoo model exports exactly the file whose sha256 the registry holds, so what is
pushed is what `sslzoo.load` checks and what the numbers were measured on. The card carries
numbers only when they belong to the exported file: measured on it, or on a file whose values
it holds exactly (a float32 copy of float16 weights).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import sslzoo
from sslzoo import registry, scratch
from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError, CorruptWeightsError, SslzooError
from sslzoo.hub import CONFIG_NAME, HUB_PREFIX, WEIGHTS_NAME, parse_hub_ref
from sslzoo.loading import model_folder, sha256_of
from sslzoo.progress import progress_bar
from sslzoo.weight_files import weight_paths, weights_sha256

from . import FORMATS
from .cards import RESULTS_NAME, build_card, model_facts
from .curves import plot_training_curves
from .onnx import ONNX_NAME, export_onnx
from .quantize import CALIBRATION_SIZE, INT8_NAME, calibration_images, gallery_knn, quantize_int8
from .results import model_name, normalise_metrics

#: Weight dtypes an export converts to on request; by default the source's file is kept as it is.
DTYPES = {"float32": torch.float32, "float16": torch.float16}
CARD_NAME = "README.md"
CURVES_NAME = "training_curves.png"


class OutputFolderError(SslzooError):
    """OUT already holds something other than an export of the same weights."""


@dataclass
class ExportResult:
    """What `export_folder` wrote: the folder, its files with their sizes, and results.json's content."""

    folder: Path
    name: str
    files: dict[str, int]
    results: dict[str, Any]

    @property
    def onnx_report(self) -> dict[str, Any] | None:
        return self.results.get("onnx")


@dataclass(frozen=True)
class _Source:
    """What is exported: the loaded encoder, its registry entry, and the folder its weights came from."""

    encoder: Encoder
    info: registry.ModelInfo | None
    by_name: bool  # loaded by registry name
    folder: Path | None  # None for an Encoder passed in memory


def export_folder(
    model: str | os.PathLike | Encoder,
    out: str | os.PathLike,
    *,
    to: str = "all",
    dtype: str | None = None,
    overwrite: bool = False,
    repo_id: str | None = None,
    metrics_log: str | os.PathLike | None = None,
    max_shard_size: int | str | None = None,
    metrics: Mapping[str, Any] | None = None,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    calibration_size: int = CALIBRATION_SIZE,
    progress: bool = True,
) -> ExportResult:
    """Export `model` (registry name, folder, `hf-hub:` id or an `Encoder`) into the folder `out`.

    `to` picks the weight formats: `safetensors`, `onnx` or `all`. By default the weights are
    the source's file copied byte for byte (for a zoo model: the published file, whose sha256
    the registry holds); an `Encoder` passed in memory is saved in float32. `dtype` converts:
    `"float16"` stores half-precision weights (about half the size; `sslzoo.load` casts them back
    to float32) and a half-precision ONNX graph with float32 inputs and outputs; `"float32"`
    stores float32 weights. `max_shard_size` ("15MB", or bytes) writes the weights as safetensors
    shards of at most that size with their index (`model.safetensors.index.json`), the layout
    the Hub and `transformers` use. `repo_id` is the Hub repository the card's usage snippets
    point at (default: the registry's). `metrics_log` draws training curves into the card; a
    run's log is found on its own next to `RUN/model/`, and a source folder's
    `training_curves.png` is kept.

    `metrics` are measured results of the exported weights (`sslzoo-eval --json`): they must name
    the file (`weights_sha256`) they were measured on, this export's or one whose values it holds
    exactly. Without them, the registry's numbers (for a zoo model) or those stored with the
    weights are used under the same rule.

    `quantize="int8"` adds `model.int8.onnx`, ONNX Runtime's static int8 quantization of the fp32
    graph (`sslzoo.export.quantize`) for fast CPU serving, calibrated on `calibration_size`
    images: `calibration` (a folder, glob or file list), else the training split of the model's
    dataset in `data_dir`, else (CIFAR-10 models) the embedded gallery. results.json records its
    calibration, its agreement with fp32 and, for CIFAR-10 models, both graphs' kNN on the
    embedded gallery. `progress` shows the stages (a bar, or log lines when stderr is no terminal).

    Refuses (`OutputFolderError`) an `out` that holds anything but an export of the same weights,
    unless `overwrite`. Verifies that the weights load back bit-exactly and that the ONNX graph
    matches PyTorch before anything reaches `out`.
    """
    if to not in FORMATS:
        raise ConfigError(f"Unknown format {to!r}; choose one of {list(FORMATS)}.")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"Unknown dtype {dtype!r}; choose one of {list(DTYPES)} (or none: keep the file as it is).")
    if quantize not in (None, "int8"):
        raise ConfigError(f"Unknown quantization {quantize!r}; the one supported is 'int8'.")
    if quantize and to == "safetensors":
        raise ConfigError("--quantize int8 quantizes the ONNX graph: use it with --to onnx or --to all.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out} is a file; choose a folder for --out.")
    source = _resolve(model)
    encoder, info, by_name = source.encoder, source.info, source.by_name
    if repo_id is None and isinstance(model, str) and model.startswith(HUB_PREFIX):
        repo_id = parse_hub_ref(model)[0]  # re-exporting a Hub model: its card keeps pointing there
    if metrics_log is None and not isinstance(model, Encoder) and Path(model).is_dir():
        beside_run = Path(model).parent / "metrics.jsonl"  # RUN/model/ -> RUN/metrics.jsonl
        metrics_log = beside_run if beside_run.is_file() else None
    measured = normalise_metrics(metrics, percent=True) if metrics else None
    file_metrics = measured
    if file_metrics is None and info is not None and source_sha(source) is not None:
        registered = info.metrics or {}
        if registered.get("weights_sha256") == source_sha(source):  # the registry's numbers are this file's
            file_metrics = dict(registered)
    if file_metrics is not None:
        encoder = copy.deepcopy(encoder)
        encoder.provenance["metrics"] = dict(file_metrics)  # config.json carries the numbers of its weights

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(out)
    staging = out.parent / scratch.owned_name(f".{out.name}.partial-")
    staging.mkdir()
    bar = None
    try:
        stored_dtype = _write_weights(source, encoder, staging, dtype, max_shard_size)
        weights_sha = weights_sha256(staging)
        _check_output(out, weights_sha, overwrite)
        # The bar starts once the output is known to be acceptable: a refused --out is one line of error.
        stages = 2 + (to in ("onnx", "all")) + bool(quantize)  # round trip, [onnx], [int8], card
        bar = progress_bar(total=stages, desc=f"exporting {out.name}", unit="stage", disable=not progress)
        bar.set_postfix_str("checking the weights load back")
        exact = _verify_round_trip(staging, encoder, stored_dtype)
        onnx_report = None
        if to in ("onnx", "all"):
            _next_stage(bar, "ONNX export and parity check")
            onnx_report = export_onnx(encoder, staging / ONNX_NAME, fp16=dtype == "float16")
        int8_report = None
        if quantize:
            _next_stage(bar, "int8 calibration and quantization")
            int8_report = _quantize(encoder, staging, calibration, data_dir, calibration_size)
        _next_stage(bar, "results.json and the model card")
        weights = [path.name for path in weight_paths(staging)]  # model.safetensors, or index + shards
        if to == "onnx":
            for name in weights:
                (staging / name).unlink()
            weights = []

        from_file = source_sha(source)
        published = info is not None and (by_name or info.sha256 == from_file)  # the zoo's published file
        if info is not None and not published:
            # The zoo's name, other weights: the registry's numbers and training facts are not theirs.
            info = dataclasses.replace(info, metrics={}, training={}, weights="none", sha256=None)
        elif info is not None and info.sha256 != weights_sha:
            # A conversion of the published file: users load this folder, not the zoo name.
            info = dataclasses.replace(info, weights="none", sha256=None)
        if info is not None and measured is not None:
            info = dataclasses.replace(info, metrics=measured)
        facts = model_facts(encoder, info)
        facts["metrics"], facts["monitor"] = _metrics_of_this_file(
            facts["metrics"], weights_sha, from_file if exact else None, given=measured is not None
        )
        curves = _curves(metrics_log, source, staging, facts["name"])
        weight_files = [
            name
            for name in (CONFIG_NAME, *weights, ONNX_NAME, INT8_NAME, CURVES_NAME)
            if (staging / name).is_file()
        ]
        results = {
            "name": facts["name"],
            "weights_sha256": weights_sha,
            "dtype": str(stored_dtype).removeprefix("torch."),
            "metrics": facts["metrics"],
            "training": facts["training"],
            "preprocessing": {
                key: encoder.config[key] for key in ("input_size", "mean", "std", "interpolation")
            },
            "files": {
                name: {"bytes": (staging / name).stat().st_size, "sha256": sha256_of(staging / name)}
                for name in weight_files
            },
            "onnx": {key: value for key, value in onnx_report.items() if key != "path"}
            if onnx_report
            else None,
            "int8": int8_report,
            "sslzoo_version": sslzoo.__version__,
        }
        (staging / RESULTS_NAME).write_text(json.dumps(results, indent=2) + "\n")
        card = build_card(
            dict(facts, int8=int8_report),
            repo_id=repo_id or (info.hub_repo if by_name and info.weights != "none" else None),
            files=[*weight_files, RESULTS_NAME],
            curves=CURVES_NAME if curves else None,
            weights_sha256=weights_sha if weights else None,
            weights_dtype=results["dtype"],
        )
        card.save(staging / CARD_NAME)
        _move_into_place(staging, out)
        _next_stage(bar, "done")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bar is not None:
            bar.close()
    files = {path.name: path.stat().st_size for path in sorted(out.iterdir()) if path.is_file()}
    return ExportResult(folder=out, name=facts["name"], files=files, results=results)


def _next_stage(bar: Any, what: str) -> None:
    bar.update(1)
    bar.set_postfix_str(what)


def _quantize(
    encoder: Encoder,
    staging: Path,
    calibration: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
    calibration_size: int,
) -> dict[str, Any]:
    """`model.int8.onnx` beside `model.onnx`, and its record (with the gallery kNN of both, for CIFAR-10)."""
    calibration_set, holdout, source = calibration_images(
        encoder, images=calibration, data_dir=data_dir, count=calibration_size
    )
    record = quantize_int8(encoder, staging / ONNX_NAME, staging / INT8_NAME, calibration_set, holdout, source)
    if encoder.provenance.get("dataset") == "cifar10" and encoder.num_classes == 0:
        record["gallery_knn"] = gallery_knn(staging / ONNX_NAME, staging / INT8_NAME, record)
    return record


def source_sha(source: _Source) -> str | None:
    """The checksum of the weights file the source encoder was loaded from, if it was."""
    return source.encoder.weights_sha256 if source.folder is not None else None


def _write_weights(
    source: _Source, encoder: Encoder, staging: Path, dtype: str | None, max_shard_size: int | str | None
) -> torch.dtype:
    """config.json and the weights into `staging`; returns the dtype the weights are stored in.

    Without a conversion the source's weight files are copied byte for byte (checked against the
    checksum they were loaded with); otherwise the tensors are saved in `dtype` (default: the
    source file's dtype) and, with `max_shard_size`, as shards.
    """
    stored_in = _file_dtype(source.folder) if source.folder is not None else torch.float32
    if source.folder is not None and dtype is None and max_shard_size is None:
        for path in weight_paths(source.folder):
            shutil.copyfile(path, staging / path.name)  # a new file: the umask's mode, not the source's
        if weights_sha256(staging) != source.encoder.weights_sha256:
            raise CorruptWeightsError(
                staging / WEIGHTS_NAME, f"the weights in {source.folder} changed while they were exported."
            )
        # The format PyTorchModelHubMixin.save_pretrained writes.
        (staging / CONFIG_NAME).write_text(json.dumps(encoder.config, sort_keys=True, indent=2))
        return stored_in
    target = DTYPES[dtype] if dtype is not None else stored_in
    stored = copy.deepcopy(encoder).cpu().eval().to(target)
    stored.save_pretrained(staging, max_shard_size=max_shard_size)
    return target


def _file_dtype(folder: Path) -> torch.dtype:
    """The floating dtype the weights in `folder` are stored in (float32 when they hold several)."""
    from safetensors import safe_open

    dtypes = set()
    for path in weight_paths(folder):
        if path.suffix != ".safetensors":
            continue  # the shard index
        with safe_open(path, "pt") as handle:
            for key in handle.keys():
                tensor = handle.get_slice(key)
                dtypes.add(tensor.get_dtype())
    floats = {name for name in dtypes if name.startswith(("F", "BF"))}
    return {frozenset({"F16"}): torch.float16, frozenset({"BF16"}): torch.bfloat16}.get(
        frozenset(floats), torch.float32
    )


def _metrics_of_this_file(
    metrics: Mapping[str, Any], weights_sha: str, exact_copy_of: str | None, given: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the numbers that belong to the exported file, or {}; numbers a training monitor measured).

    Numbers belong to the file when they were measured on it, or on the source file when the
    export holds exactly its values (`exact_copy_of`). Numbers without a file (a training run's
    kNN monitor, measured on the weights in memory) are shown apart, as the monitor's.
    """
    metrics = dict(metrics)
    measured_on = metrics.get("weights_sha256")
    if measured_on is None:
        if given:
            raise ConfigError(
                "The results do not say which weights file they were measured on (no weights_sha256); "
                "pass the output of `sslzoo-eval MODEL --json` for the weights exported."
            )
        return {}, metrics or None
    if measured_on in (weights_sha, exact_copy_of):
        return metrics, None
    if given:
        raise ConfigError(
            f"The results were measured on weights with sha256 {measured_on}, not on the weights exported "
            f"(sha256 {weights_sha}); measure these with `sslzoo-eval MODEL --json`."
        )
    return {}, None


def _curves(metrics_log: str | os.PathLike | None, source: _Source, staging: Path, title: str) -> Path | None:
    """Training curves drawn from the run's log, else the source folder's figure, kept as it is."""
    if metrics_log:
        return plot_training_curves(metrics_log, staging / CURVES_NAME, title=title)
    if source.folder is not None and (source.folder / CURVES_NAME).is_file():
        return Path(shutil.copyfile(source.folder / CURVES_NAME, staging / CURVES_NAME))
    return None


def _resolve(model: str | os.PathLike | Encoder) -> _Source:
    """The encoder, its registry entry if it has one, how it was named, and its weights' folder."""
    if isinstance(model, Encoder):
        encoder, folder = model, None
    else:
        ref = os.fspath(model)
        # A registry name, as sslzoo.load decides: not a Hub id, not a path.
        is_folder = isinstance(model, os.PathLike) or os.sep in ref or Path(ref).is_dir()
        if not ref.startswith(HUB_PREFIX) and not is_folder:
            info = registry.model_info(ref)  # an unknown name fails here, before any loading
            encoder = sslzoo.load(ref)
            return _Source(encoder, info, True, model_folder(ref))
        encoder = sslzoo.load(ref)
        folder = model_folder(ref)
    name = model_name(encoder.config)
    info = registry.model_info(name) if name in registry.list_models() else None
    if info is not None and list(encoder.provenance.get("plugins", info.plugins)) != info.plugins:
        info = None  # same method name, different plug-ins: not the zoo's model
    return _Source(encoder, info, False, folder)


def _check_output(out: Path, weights_sha: str, overwrite: bool) -> None:
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / RESULTS_NAME).read_text())
    except (OSError, ValueError):
        raise OutputFolderError(
            f"{out} is not empty and is not an sslzoo export; choose another --out, "
            "or pass --overwrite to replace it."
        ) from None
    if previous.get("weights_sha256") != weights_sha:
        raise OutputFolderError(
            f"{out} already holds another model ({previous.get('name', 'unknown')}); choose another --out, "
            "or pass --overwrite to replace it."
        )


def _verify_round_trip(folder: Path, encoder: Encoder, stored_dtype: torch.dtype) -> bool:
    """The written folder must give back, through the public loader, exactly the tensors saved:
    `encoder`'s in `stored_dtype`. Returns whether they are also exactly `encoder`'s values (the
    export holds the same model, as a float32 copy of float16 weights does)."""
    loaded = sslzoo.load(folder).state_dict()
    exact = True
    for key, tensor in encoder.state_dict().items():
        expected = tensor.to(stored_dtype) if tensor.is_floating_point() else tensor
        if key not in loaded or not torch.equal(loaded[key], expected.to(loaded[key].dtype)):
            raise CorruptWeightsError(folder / WEIGHTS_NAME, f"{key} does not load back bit-exactly.")
        exact = exact and torch.equal(loaded[key], tensor.to(loaded[key].dtype))
    return exact


def remove_abandoned_staging(out: Path) -> list[Path]:
    """Clean up after exports into `out` that were killed: their staging folders go; a previous OUT
    that was moved aside but not yet replaced comes back (or goes, if the new one made it in)."""

    def restore_or_remove(aside: Path) -> None:
        if out.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, out)

    removed = scratch.remove_abandoned(out.parent, f".{out.name}.partial-")
    removed += scratch.remove_abandoned(out.parent, f".{out.name}.replaced-", on_removed=restore_or_remove)
    return removed


def _move_into_place(staging: Path, out: Path) -> None:
    """Swap the finished folder in; an existing OUT is moved aside first and removed only after."""
    if not out.exists():
        os.replace(staging, out)
        return
    aside = out.parent / scratch.owned_name(f".{out.name}.replaced-")
    os.replace(out, aside)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
