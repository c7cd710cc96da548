"""Augmentation throughput: sslzoo's batched views against kornia and torchvision v2, in one run.

For the SimCLR and BYOL recipes (CIFAR-10, 32 px, two views per image) at each batch size, on
--device, the views/s of:

- sslzoo: `sslzoo.train.augment.MultiViewAugmentation`, eager and `compile()`d (fullgraph);
- kornia: the pipeline sslzoo used before (built below: kornia is a benchmark-only dependency),
  eager and `torch.compile`d (kornia's crop is known to break under compile: the failure is
  reported in the table rather than stopping the run);
- torchvision v2: the same recipe as a per-image transform over uint8 tensors, as one DataLoader
  worker runs it (always on the CPU; N workers make at most N times these views/s). Its rate does
  not depend on the batch, so it is timed on at most --loop-images images per batch.

Then the share of one SimCLR ResNet-18 (CIFAR stem) training step that the augmentation takes:
augment + forward + backward + the recipe's LARS step, bf16 autocast and channels_last on CUDA,
as the engine runs it.

Targets: on a 2-core CPU, sslzoo >= 3x kornia for SimCLR at batch 512; on one H100/H200,
>= 500,000 views/s at 1,024 views per call (batch 512), >= 10x kornia, and <= 5 % of a SimCLR
step. Times are the best of --repeats calls after --warmup calls (compilation happens there); the
pipelines take turns call by call, so that a change of the machine's load slows them alike.

    python benchmarks/augment_throughput.py --device cuda
    python benchmarks/augment_throughput.py --device cpu
    python benchmarks/augment_throughput.py --device cpu --batch-sizes 512 --repeats 2 --no-compile
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sslzoo.train.augment import ViewAugmentation, build_augmentation, view_generator
from sslzoo.train.optim import build_optimizer
from sslzoo.train.recipes import TrainConfig, resolve_config
from sslzoo.train.runtime import resolve_device, resolve_precision
from torch import nn

from sslzoo.encoder import Encoder
from sslzoo.methods import build_method

RECIPES = ("simclr", "byol")
PIPELINES = ("sslzoo", "kornia", "torchvision")


# ------------------------------------------------------------------------------ the pipelines
class KorniaViews(nn.Module):
    """The kornia pipeline sslzoo's engine ran before its own: same recipe keys, one op per module."""

    def __init__(self, config: TrainConfig, num_views: int):
        import kornia.augmentation as K

        super().__init__()
        size = config.input_size
        views = []
        for view in range(num_views):
            settings = config.view_augment(view)
            ops: list[nn.Module] = [
                K.RandomResizedCrop(
                    (size, size),
                    scale=tuple(settings["crop_scale"]),
                    ratio=tuple(settings["crop_ratio"]),
                    cropping_mode="resample",
                )
            ]
            if settings["hflip"] > 0:
                ops.append(K.RandomHorizontalFlip(p=settings["hflip"]))
            if settings["jitter_p"] > 0 and any(settings["jitter"]):
                ops.append(K.ColorJitter(*settings["jitter"], p=settings["jitter_p"]))
            if settings["grayscale"] > 0:
                ops.append(K.RandomGrayscale(p=settings["grayscale"]))
            if settings["blur"] > 0:
                sigma = tuple(settings["blur_sigma"])
                kernel = min(2 * math.ceil(3 * sigma[1]) + 1, size - 1 + size % 2)
                ops.append(K.RandomGaussianBlur(kernel, sigma, p=settings["blur"]))
            if settings["solarize"] > 0:
                ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=settings["solarize"]))
            views.append(nn.Sequential(*ops))
        self.views = nn.ModuleList(views)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = config.channels_last

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        pixels = images.float().div_(255.0)
        views = [(view(pixels) - self.mean) / self.std for view in self.views]
        if self.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        return views


class TorchvisionLoop:
    """torchvision v2 transforms of the same recipe, image by image, as a DataLoader worker runs them."""

    def __init__(self, config: TrainConfig, num_views: int):
        from torchvision.transforms import v2

        size = config.input_size
        self.views = []
        for view in range(num_views):
            settings = config.view_augment(view)
            ops: list[Any] = [
                v2.RandomResizedCrop(
                    size,
                    scale=tuple(settings["crop_scale"]),
                    ratio=tuple(settings["crop_ratio"]),
                    interpolation=v2.InterpolationMode(config.interpolation),
                    antialias=True,
                )
            ]
            if settings["hflip"] > 0:
                ops.append(v2.RandomHorizontalFlip(settings["hflip"]))
            if settings["jitter_p"] > 0 and any(settings["jitter"]):
                ops.append(v2.RandomApply([v2.ColorJitter(*settings["jitter"])], p=settings["jitter_p"]))
            if settings["grayscale"] > 0:
                ops.append(v2.RandomGrayscale(settings["grayscale"]))
            if settings["blur"] > 0:
                kernel = ViewAugmentation(size, config.mean, config.std, settings).blur_kernel
                blur = v2.GaussianBlur(kernel, sigma=tuple(settings["blur_sigma"]))
                ops.append(v2.RandomApply([blur], p=settings["blur"]))
            if settings["solarize"] > 0:
                ops.append(v2.RandomSolarize(threshold=128, p=settings["solarize"]))  # uint8: 0.5 of 255
            ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)]
            self.views.append(v2.Compose(ops))

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([transform(image) for image in images]) for transform in self.views]


# ---------------------------------------------------------------------------------- timing
@dataclass
class Row:
    recipe: str
    batch: int
    pipeline: str
    mode: str
    views_per_s: float | None = None
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(call: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """The fastest of `repeats` timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def _failure(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"fails: {type(error).__name__}: {first}"[:110]


def _pipelines(args: argparse.Namespace, config: TrainConfig, device: torch.device) -> dict[tuple, Callable]:
    """(pipeline, mode) -> a callable on a uint8 batch, one module each, reused over batch sizes."""
    calls: dict[tuple, Callable] = {}
    for mode in args.modes:
        if "sslzoo" in args.pipelines:
            augmentation = build_augmentation(config, 2, generator=view_generator(device, 0)).to(device)
            if mode == "compiled":
                augmentation.compile()
            calls["sslzoo", mode] = augmentation
        if "kornia" in args.pipelines:
            kornia_views = KorniaViews(config, 2).to(device)
            calls["kornia", mode] = torch.compile(kornia_views) if mode == "compiled" else kornia_views
    return calls


def measure(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Every (recipe, batch, pipeline, mode) cell.

    The pipelines take turns, one call each per round, so that a machine whose load changes
    during the run slows them alike; each cell keeps its fastest call.
    """
    rows = []
    views = 2
    for recipe in args.recipes:
        config = resolve_config(recipe, "cifar10", options={"channels_last": device.type == "cuda"})
        calls = _pipelines(args, config, device)
        loop = TorchvisionLoop(config, views) if "torchvision" in args.pipelines else None
        loop_seconds = math.inf
        for batch in args.batch_sizes:
            images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
            subset = images[: args.loop_images].cpu()
            best: dict[tuple, float] = {}
            failed: dict[tuple, str] = {}
            for key, call in calls.items():  # warm-up, and compilation for this shape
                try:
                    for _ in range(args.warmup):
                        call(images)
                except Exception as error:  # e.g. kornia under torch.compile: report, do not stop
                    failed[key] = _failure(error)
            for _ in range(args.repeats):
                for key, call in calls.items():
                    if key not in failed:
                        best[key] = min(best.get(key, math.inf), _seconds(call, images, device))
                if loop is not None and batch == args.batch_sizes[0]:  # per image: once per recipe
                    loop_seconds = min(loop_seconds, _seconds(loop, subset, torch.device("cpu")))
            for (pipeline, mode), seconds in best.items():
                rows.append(Row(recipe, batch, pipeline, mode, views * batch / seconds))
            rows += [
                Row(recipe, batch, pipeline, mode, None, note) for (pipeline, mode), note in failed.items()
            ]
            if loop is not None:
                note = f"1 CPU process, uint8 tensors, timed on {len(subset)} images"
                rows.append(
                    Row(
                        recipe, batch, "torchvision v2", "per image", views * len(subset) / loop_seconds, note
                    )
                )
            print(f"  {recipe} batch {batch}: done", flush=True)
    order = {name: i for i, name in enumerate(("sslzoo", "kornia", "torchvision v2"))}
    modes = {"eager": 0, "compiled": 1, "per image": 2}
    return sorted(
        rows, key=lambda r: (args.recipes.index(r.recipe), r.batch, order[r.pipeline], modes[r.mode])
    )


def _seconds(call: Callable[[torch.Tensor], Any], images: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    call(images)
    _sync(device)
    return time.perf_counter() - started


# ----------------------------------------------------------------------- share of a step
def step_share(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Seconds of the augmentation alone and of a whole SimCLR step at --step-batch-size."""
    cuda = device.type == "cuda"
    config = resolve_config(
        "simclr",
        "cifar10",
        options={"batch_size": args.step_batch_size, "channels_last": cuda, "device": str(device)},
    )
    torch.manual_seed(0)
    encoder = Encoder(
        backbone=config.backbone,
        stem=config.stem,
        input_size=config.input_size,
        mean=config.mean,
        std=config.std,
    )
    method = build_method("simclr", encoder, **config.hparams).to(device)
    if cuda:
        method.to(memory_format=torch.channels_last)
    model = torch.compile(method) if args.compile_step else method
    optimizer = build_optimizer(method.param_groups(config.weight_decay), config, device)
    augmentation = build_augmentation(config, 2, generator=view_generator(device, 0)).to(device)
    if "compiled" in args.modes:
        augmentation.compile()
    images = torch.randint(0, 256, (args.step_batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    dtype = torch.bfloat16 if resolve_precision("auto", device) == "bf16" else None

    def step() -> None:
        views = augmentation(images)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = model(views, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_seconds = best_seconds(step, device, args.warmup, args.step_repeats)
    augment_seconds = best_seconds(lambda: augmentation(images), device, args.warmup, args.step_repeats)
    return {
        "step": step_seconds,
        "augment": augment_seconds,
        "precision": "bf16" if dtype is not None else "fp32",
        "augment_mode": "compiled" if "compiled" in args.modes else "eager",
    }


# ------------------------------------------------------------------------------------ table
def print_table(rows: list[Row], device_name: str, args: argparse.Namespace) -> None:
    import kornia

    print(
        f"\nAugmentation throughput, 2 views per image, CIFAR-10 32 px, {device_name}, torch {torch.__version__}, "
        f"kornia {kornia.__version__}; best of {args.repeats} calls\n"
    )
    print("| recipe | batch | pipeline | mode | views/s | x kornia eager | note |")
    print("|---|---:|---|---|---:|---:|---|")
    for row in rows:
        baseline = next(
            (
                r.views_per_s
                for r in rows
                if (r.recipe, r.batch, r.pipeline, r.mode) == (row.recipe, row.batch, "kornia", "eager")
            ),
            None,
        )
        rate = f"{row.views_per_s:,.0f}" if row.views_per_s else "-"
        ratio = f"{row.views_per_s / baseline:.2f}" if row.views_per_s and baseline else "-"
        print(f"| {row.recipe} | {row.batch} | {row.pipeline} | {row.mode} | {rate} | {ratio} | {row.note} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument(
        "--batch-sizes", nargs="+", type=int, default=[256, 512, 1024], help="images per call"
    )
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per cell (default: 20 CUDA, 3 CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls first (default: 5 CUDA, 1 CPU)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the compiled pipelines",
    )
    parser.add_argument(
        "--loop-images", type=int, default=256, help="images the torchvision per-image loop is timed on"
    )
    parser.add_argument(
        "--step-batch-size",
        type=int,
        default=None,
        help="batch of the SimCLR step (default: 512 CUDA, 32 CPU; 0 skips)",
    )
    parser.add_argument(
        "--step-repeats", type=int, default=None, help="timed SimCLR steps (default: 10 CUDA, 2 CPU)"
    )
    parser.add_argument(
        "--compile-step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model in the SimCLR step (default: on CUDA only)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")  # as the engine
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.step_repeats = args.step_repeats or (10 if cuda else 2)
    args.step_batch_size = args.step_batch_size if args.step_batch_size is not None else (512 if cuda else 32)
    args.compile_step = cuda if args.compile_step is None else args.compile_step
    args.modes = ["eager", "compiled"] if args.compile else ["eager"]
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"

    print(f"Timing on {device_name} ...", flush=True)
    rows = measure(args, device)
    print_table(rows, device_name, args)
    if args.step_batch_size > 0:
        share = step_share(args, device)
        print(
            f"\nSimCLR ResNet-18 (CIFAR stem) training step, batch {args.step_batch_size} (2 views), "
            f"{share['precision']}, model compile {'on' if args.compile_step else 'off'}, "
            f"augmentation {share['augment_mode']}\n"
        )
        print("| part | ms | share of the step |")
        print("|---|---:|---:|")
        print(
            f"| augmentation (sslzoo) | {share['augment'] * 1e3:,.1f} | {share['augment'] / share['step']:.1%} |"
        )
        print(f"| whole step | {share['step'] * 1e3:,.1f} | 100% |")


if __name__ == "__main__":
    main()
