"""One encoder as a complete Hugging Face Hub repository folder, written all at once or not at all.

The folder holds `config.json` + `model.safetensors` (what `sslzoo.load` and
`Encoder.from_pretrained` read; or, with `max_shard_size`, safetensors shards and their index), `model.onnx` (one file, parity-checked), `README.md` (the model
card), `results.json` (measured numbers, file checksums, the ONNX parity report) and, when the
run's `metrics.jsonl` is at hand, `training_curves.png`. Everything is built and verified in a
staging folder beside OUT, then moved into place: a failure leaves OUT as it was. The staging
folder names its process (`.OUT.partial-<pid>-<random>`), so an export that was killed leaves
nothing the next export into OUT does not clean up (`remove_abandoned_staging`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import sslzoo
from sslzoo import registry, scratch
from sslzoo.encoder import Encoder
from sslzoo.errors import ConfigError, CorruptWeightsError, SslzooError
from sslzoo.hub import CONFIG_NAME, HUB_PREFIX, WEIGHTS_NAME, parse_hub_ref
from sslzoo.loading import sha256_of
from sslzoo.progress import progress_bar
from sslzoo.weight_files import weight_paths, weights_sha256

from .cards import RESULTS_NAME, build_card, model_facts
from .curves import plot_training_curves
from .onnx import ONNX_NAME, export_onnx
from .quantize import CALIBRATION_SIZE, INT8_NAME, calibration_images, gallery_knn, quantize_int8
from .results import model_name

FORMATS = ("safetensors", "onnx", "all")
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


def export_folder(
    model: str | os.PathLike | Encoder,
    out: str | os.PathLike,
    *,
    to: str = "all",
    fp16: bool = False,
    overwrite: bool = False,
    repo_id: str | None = None,
    metrics_log: str | os.PathLike | None = None,
    max_shard_size: int | str | None = None,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    calibration_size: int = CALIBRATION_SIZE,
    progress: bool = True,
) -> ExportResult:
    """Export `model` (registry name, folder, `hf-hub:` id or an `Encoder`) into the folder `out`.

    `to` picks the weight formats: `safetensors`, `onnx` or `all`. `fp16` stores half-precision
    weights (about half the size; `sslzoo.load` casts them back to float32) and a half-precision
    ONNX graph with float32 inputs and outputs. `repo_id` is the Hub repository the card's usage
    snippets point at (default: the registry's). `metrics_log` draws training curves into the card;
    a run's log is found on its own next to `RUN/model/`. `max_shard_size` ("15MB", or bytes)
    writes the weights as safetensors shards of at most that size with their index
    (`model.safetensors.index.json`), the layout the Hub and `transformers` use.

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
    if quantize not in (None, "int8"):
        raise ConfigError(f"Unknown quantization {quantize!r}; the one supported is 'int8'.")
    if quantize and to == "safetensors":
        raise ConfigError("--quantize int8 quantizes the ONNX graph: use it with --to onnx or --to all.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out} is a file; choose a folder for --out.")
    encoder, info, by_name = _resolve(model)
    if repo_id is None and isinstance(model, str) and model.startswith(HUB_PREFIX):
        repo_id = parse_hub_ref(model)[0]  # re-exporting a Hub model: its card keeps pointing there
    if metrics_log is None and not isinstance(model, Encoder) and Path(model).is_dir():
        beside_run = Path(model).parent / "metrics.jsonl"  # RUN/model/ -> RUN/metrics.jsonl
        metrics_log = beside_run if beside_run.is_file() else None

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(out)
    staging = out.parent / scratch.owned_name(f".{out.name}.partial-")
    staging.mkdir()
    bar = None
    try:
        stored = copy.deepcopy(encoder).cpu().eval()
        if fp16:
            stored = stored.half()
        stored.save_pretrained(staging, max_shard_size=max_shard_size)
        weights_sha = weights_sha256(staging)
        _check_output(out, weights_sha, overwrite)
        # The bar starts once the output is known to be acceptable: a refused --out is one line of error.
        stages = 2 + (to in ("onnx", "all")) + bool(quantize)  # round trip, [onnx], [int8], card
        bar = progress_bar(total=stages, desc=f"exporting {out.name}", unit="stage", disable=not progress)
        bar.set_postfix_str("checking the weights load back")
        _verify_round_trip(staging, stored)
        onnx_report = None
        if to in ("onnx", "all"):
            _next_stage(bar, "ONNX export and parity check")
            onnx_report = export_onnx(encoder, staging / ONNX_NAME, fp16=fp16)
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

        if info is not None and not (by_name or info.sha256 == weights_sha):
            # Registry numbers and load instructions describe the published weights; these are others:
            # their provenance speaks, and the card tells users to load this folder, not the zoo name.
            info = dataclasses.replace(info, metrics={}, training={}, weights="none", sha256=None)
        facts = model_facts(encoder, info)
        curves = (
            plot_training_curves(metrics_log, staging / CURVES_NAME, title=facts["name"])
            if metrics_log
            else None
        )
        weight_files = [
            name
            for name in (CONFIG_NAME, *weights, ONNX_NAME, INT8_NAME, CURVES_NAME)
            if (staging / name).is_file()
        ]
        results = {
            "name": facts["name"],
            "weights_sha256": weights_sha,
            "dtype": "float16" if fp16 else "float32",
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
            repo_id=repo_id or (info.hub_repo if by_name else None),
            files=[*weight_files, RESULTS_NAME],
            curves=CURVES_NAME if curves else None,
        )
        card.save(staging / CARD_NAME)
        _next_stage(bar, "done")
        _move_into_place(staging, out)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(staging, ignore_errors=True)
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


def _resolve(model: str | os.PathLike | Encoder) -> tuple[Encoder, registry.ModelInfo | None, bool]:
    """The encoder, its registry entry if it has one, and whether it was loaded by registry name."""
    if isinstance(model, Encoder):
        encoder = model
    else:
        ref = os.fspath(model)
        # A registry name, as sslzoo.load decides: not a Hub id, not a path.
        is_folder = isinstance(model, os.PathLike) or os.sep in ref or Path(ref).is_dir()
        if not ref.startswith(HUB_PREFIX) and not is_folder:
            info = registry.model_info(ref)  # an unknown name fails here, before any loading
            return sslzoo.load(ref), info, True
        encoder = sslzoo.load(ref)
    name = model_name(encoder.config)
    info = registry.model_info(name) if name in registry.list_models() else None
    if info is not None and list(encoder.provenance.get("plugins", info.plugins)) != info.plugins:
        info = None  # same method name, different plug-ins: not the zoo's model
    return encoder, info, False


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


def _verify_round_trip(folder: Path, stored: Encoder) -> None:
    """The written folder must give back exactly the tensors we saved, through the public loader."""
    loaded = sslzoo.load(folder).state_dict()
    for key, tensor in stored.state_dict().items():
        if key not in loaded or not torch.equal(loaded[key], tensor.to(loaded[key].dtype)):
            raise CorruptWeightsError(folder / WEIGHTS_NAME, f"{key} does not load back bit-exactly.")


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
