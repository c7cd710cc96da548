"""Training throughput: sslzoo's engine against the loop most users write with lightly.

Both sides train SimCLR on the same ResNet-18 (CIFAR stem), batch, precision and device, in one run:

- sslzoo: `sslzoo.train.engine.train` itself (uint8 images on the device, views made there in
  batches by `sslzoo.train.augment`, compiled on CUDA, channels_last, bf16 autocast, fused
  optimiser, optional torch.compile of the model). Its views/s is the engine's own measurement
  of the second epoch (the first one warms up and compiles).
- reference: lightly's `SimCLRTransform` in a torchvision `DataLoader` with worker processes
  (PIL per image), lightly's `SimCLRProjectionHead` and `NTXentLoss`, momentum SGD, the same
  autocast; no channels_last, no compile.

Targets (one H100/H200, SimCLR ResNet-18 CIFAR-10 at batch 512): >= 40,000 views/s and >= 5x the
reference. On CUDA sslzoo runs with and without torch.compile of the model, in the same run. The
model FLOPs utilisation of each row divides its training FLOPs (forward + backward, counted by
`torch.utils.flop_counter`) by the device's measured bf16 matmul throughput; where the step's time
goes is `benchmarks/step_profile.py`'s table.

    python benchmarks/train_throughput.py                        # GPU, batch 512
    python benchmarks/train_throughput.py --device cpu --batch-size 16 --steps 3 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from sslzoo.train import engine
from sslzoo.train.datasets import load_split
from sslzoo.train.recipes import resolve_config
from sslzoo.train.runtime import resolve_device, resolve_precision
from torch.utils.data import DataLoader, Dataset

from sslzoo.encoder import Encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_profile import matmul_tflops, training_flops_per_view  # noqa: E402  (a sibling script)


def sslzoo_views_per_s(args: argparse.Namespace, device: torch.device, compile: bool) -> float:
    """Views/s of the engine in its second epoch of `args.steps` steps."""
    config = resolve_config(
        "simclr",
        "fake",
        options={
            "batch_size": args.batch_size,
            "epochs": 2,
            "device": str(device),
            "precision": args.precision,
            "compile": compile,
            "knn_every": 0,
            "seed": 0,
        },
        sets=[f"fake_size={args.batch_size * args.steps}", "checkpoint_minutes=1000000", "log_every=1000000"],
    )
    with tempfile.TemporaryDirectory() as out:
        engine.train(config, Path(out) / "run", progress=False, command="benchmarks/train_throughput.py")
        lines = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    return lines[-1]["views_per_s"]


class _PILImages(Dataset):
    """The same uint8 images as PIL, as a torchvision dataset hands them to a transform."""

    def __init__(self, images: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i]))


def reference_views_per_s(args: argparse.Namespace, device: torch.device) -> float:
    """Views/s of the lightly loop over `args.steps` timed steps, after warm-up steps."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    warmup = max(2, args.steps // 5)
    data = load_split("fake", "pretrain", fake_size=args.batch_size * (args.steps + warmup))
    encoder = Encoder()
    transform = SimCLRTransform(
        input_size=32, normalize={"mean": list(encoder.mean), "std": list(encoder.std)}
    )
    loader = DataLoader(
        _PILImages(data.images, transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    model = torch.nn.Sequential(encoder, SimCLRProjectionHead(512, 2048, 256, batch_norm=False)).to(device)
    criterion = NTXentLoss(temperature=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp32": None}[_precision(args, device)]
    started = None
    for step, (x0, x1) in enumerate(loader):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return 2 * args.batch_size * args.steps / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _precision(args: argparse.Namespace, device: torch.device) -> str:
    return resolve_precision(args.precision, device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per step (default: 512)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per pipeline (default: 50)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of the reference loop (default: min(8, CPUs))",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="autocast precision of both pipelines (default: bf16 on CUDA, fp32 on CPU)",
    )
    parser.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "on", "off", "both"],
        help="torch.compile the sslzoo step: both (a row each) on CUDA, off on a CPU (default: auto)",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.compile == "auto":
        args.compile = "both" if device.type == "cuda" else "off"
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.compile]
    ours = {mode: sslzoo_views_per_s(args, device, mode) for mode in modes}
    reference = reference_views_per_s(args, device)
    precision = _precision(args, device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    peak = matmul_tflops(device)
    flops_per_view = training_flops_per_view("simclr")
    print(
        f"SimCLR ResNet-18 (CIFAR stem), 32 px, batch {args.batch_size}, {precision}, {name}, "
        f"torch {torch.__version__}"
    )
    print(
        f"Measured {'bf16' if device.type == 'cuda' else 'fp32'} matmul: {peak:.3g} TFLOP/s; "
        f"a view's forward + backward: {flops_per_view / 1e9:.3g} GFLOP"
    )
    print()
    print("| pipeline | views/s | x reference | MFU |")
    print("|---|---:|---:|---:|")
    rows = [(f"sslzoo engine (compile={'on' if mode else 'off'})", rate) for mode, rate in ours.items()]
    rows.append((f"lightly loop ({args.workers} workers)", reference))
    for label, rate in rows:
        mfu = 100 * rate * flops_per_view / 1e12 / peak
        print(f"| {label} | {rate:,.0f} | {rate / reference:.2f} | {mfu:.1f} % |")


if __name__ == "__main__":
    main()
