"""Where a training step's time goes: augmentation, forward, backward, optimiser, idle; and the MFU.

The engine itself trains (`sslzoo.train.engine.train`, the recipe's settings: bf16 autocast,
channels_last and the compiled augmentation on CUDA, `--compile` for the model) on fake CIFAR-sized
images. After `--warmup` steps (compilation and cudnn's autotuning happen there) a `torch.profiler`
trace records `--steps` steps, and the run stops. The trace is broken down by the regions the
engine's `Stepper` names (`augment`, `forward`, `backward`, `optimizer`):

- on CUDA, by the GPU time of the kernels each region launched. Backward runs on autograd's own
  thread, outside the region that called it, so its row is every kernel the other regions did not
  launch; idle is the wall time in which no kernel ran (the GPU waiting for the host);
- on a CPU, by the host time of each region; idle is the wall time outside them.

The model FLOPs utilisation divides the training FLOPs the step does (counted by
`torch.utils.flop_counter` on one forward and backward of the method, per view) by the step's
wall time and by the device's measured bf16 matmul throughput, the ceiling a step works under.

    python benchmarks/step_profile.py                                   # GPU, SimCLR, batch 512
    python benchmarks/step_profile.py --method byol --compile
    python benchmarks/step_profile.py --device cpu --batch-size 16 --warmup 1 --steps 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from sslzoo.train import engine
from sslzoo.train.recipes import resolve_config
from sslzoo.train.runtime import resolve_device, resolve_precision
from torch.utils.flop_counter import FlopCounterMode

from sslzoo.encoder import Encoder
from sslzoo.methods import build_method

REGIONS = ("augment", "forward", "backward", "optimizer")


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 matmul throughput of the device (fp32 on a CPU, smaller, for the scale only)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type != "cuda":
        size, repeats = 1024, 5
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def training_flops_per_view(method_name: str, input_size: int = 32, batch: int = 4) -> float:
    """Forward + backward FLOPs of the method per view (counted on the CPU: they do not depend on it)."""
    method = build_method(method_name, Encoder(input_size=input_size))
    views = [
        torch.randn(batch, 3, input_size, input_size) for _ in range(int(getattr(method, "num_views", 2)))
    ]
    labels = torch.arange(batch) % 2 if getattr(method, "supervised", False) else None
    with FlopCounterMode(display=False) as counter:
        loss, _ = method(views, labels)
        loss.backward()
    return counter.get_total_flops() / (batch * len(views))


class ProfiledWindow:
    """The engine's stop hook: profile steps warmup+1 .. warmup+steps, then stop the run."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)
        self.wall_s = 0.0
        self._started = 0.0

    def __call__(self, step: int, end_step: int) -> bool:
        if step == self.warmup:
            _sync(self.device)
            self.profiler.start()
            self._started = time.perf_counter()
        elif step == self.warmup + self.steps:
            _sync(self.device)
            self.wall_s = time.perf_counter() - self._started
            self.profiler.stop()
            return True
        return False


def breakdown(window: ProfiledWindow) -> dict[str, float]:
    """Milliseconds per step of each region and of idle time, from the window's trace."""
    events = window.profiler.events()
    steps = window.steps
    ms: dict[str, float] = {}
    if window.device.type == "cuda":
        for region in ("augment", "forward", "optimizer"):
            ms[region] = sum(e.device_time_total for e in events if e.name == region) / 1e3 / steps
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / steps
        ms["backward"] = max(0.0, busy - sum(ms.values()))
    else:
        for region in REGIONS:
            ms[region] = sum(e.cpu_time_total for e in events if e.name == region) / 1e3 / steps
        busy = sum(ms.values())
    ms["idle"] = max(0.0, window.wall_s * 1e3 / steps - busy)
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--method", default="simclr", help="a method of the zoo (default: simclr)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per step (default: 512)")
    parser.add_argument("--warmup", type=int, default=20, help="steps before the trace (default: 20)")
    parser.add_argument("--steps", type=int, default=10, help="steps traced (default: 10)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="default: bf16 on CUDA, fp32 on CPU",
    )
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model"
    )
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    config = resolve_config(
        args.method,
        "fake",
        options={
            "batch_size": args.batch_size,
            "epochs": 1,
            "device": str(device),
            "precision": precision,
            "compile": args.compile,
            "knn_every": 0,
            "seed": 0,
        },
        sets=[
            f"fake_size={args.batch_size * (args.warmup + args.steps + 1)}",
            "checkpoint_minutes=1000000",
            "log_every=1000000",
            "warmup_epochs=0.0",
        ],
    )
    window = ProfiledWindow(args.warmup, args.steps, device)
    logging.getLogger("sslzoo.train").setLevel(logging.ERROR)  # the planned stop is not news
    with tempfile.TemporaryDirectory() as out:
        engine.train(config, Path(out) / "run", progress=False, stop_when=window, command="step_profile")
    if window.wall_s == 0.0:
        raise SystemExit("The run ended before the traced steps; lower --warmup or --steps.")
    ms = breakdown(window)
    step_ms = window.wall_s * 1e3 / args.steps
    views = args.batch_size * int(getattr(build_method(args.method, Encoder()), "num_views", 2))
    flops = training_flops_per_view(args.method) * views
    peak = matmul_tflops(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{args.method} ResNet-18 (CIFAR stem), 32 px, batch {args.batch_size}, {precision}, "
        f"compile={'on' if args.compile else 'off'}, {name}, torch {torch.__version__}"
    )
    print(
        f"{args.steps} traced steps after {args.warmup}: {step_ms:.2f} ms/step, {views / step_ms * 1e3:,.0f} views/s"
    )
    print()
    print("| part | ms/step | share |")
    print("|---|---:|---:|")
    for part in (*REGIONS, "idle"):
        print(f"| {part} | {ms[part]:.2f} | {100 * ms[part] / step_ms:.1f} % |")
    achieved = flops / (step_ms / 1e3) / 1e12
    print()
    print(
        f"Training FLOPs {flops / 1e9:,.1f} G/step; achieved {achieved:.3g} TFLOP/s; "
        f"measured {'bf16' if device.type == 'cuda' else 'fp32'} matmul {peak:.3g} TFLOP/s; "
        f"MFU {100 * achieved / peak:.1f} %"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
