"""First start of the demo: seconds from launching `sslzoo-serve` to its first answered `/search`.

    python benchmarks/serve_first_start.py                  # default encoder and gallery, ONNX backend
    python benchmarks/serve_first_start.py --backend torch --runs 2

Each run starts `sslzoo-serve` in a process of its own with an empty `$SSLZOO_HOME` (no cached
index, no ONNX export: what a new user meets), uploads an example image over plain HTTP as soon
as the port answers, and times the first search that comes back with neighbours. A second start
on the same cache (`warm`) shows what a returning user meets. Target: the first answer within
seconds on a 2-core CPU. CPU timings move with other load on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import httpx

EXAMPLE = Path(__file__).resolve().parents[1] / "serve" / "assets" / "example-cat.png"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_answer(url: str, deadline_s: float) -> float | None:
    """Try a search until one answers with neighbours; the moment it did (perf_counter), or None."""
    stop = time.perf_counter() + deadline_s
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.perf_counter() < stop:
            try:
                response = http.post(
                    "gradio_api/upload",
                    files=[("files", ("cat.png", EXAMPLE.read_bytes(), "image/png"))],
                )
                response.raise_for_status()
                (path,) = response.json()
                image = {"path": path, "orig_name": "cat.png", "meta": {"_type": "gradio.FileData"}}
                started = http.post("gradio_api/call/search", json={"data": [image, 8, None]})
                started.raise_for_status()
                stream = http.get(f"gradio_api/call/search/{started.json()['event_id']}").text
                if "event: complete" in stream:
                    data = json.loads(stream.split("data: ")[-1])
                    if data and data[0]:
                        return time.perf_counter()
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
    return None


def timed_start(home: Path, backend: str, deadline_s: float) -> float | None:
    port = free_port()
    env = {**os.environ, "SSLZOO_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [
        sys.executable,
        "-c",
        "from sslzoo.serve.cli import main; main()",
        "--backend",
        backend,
        "--port",
        str(port),
    ]
    launched = time.perf_counter()
    with open(home.parent / f"serve-{port}.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            answered = first_answer(f"http://127.0.0.1:{port}/", deadline_s)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return None if answered is None else answered - launched


@click.command()
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Cold starts to time.")
@click.option("--deadline", type=float, default=600.0, show_default=True, help="Seconds to wait per start.")
def main(backend: str, runs: int, deadline: float) -> None:
    """Print a table of cold and warm start times (seconds to the first answered /search)."""
    rows = []
    for run in range(runs):
        root = Path(tempfile.mkdtemp(prefix="sslzoo-first-start-"))
        try:
            cold = timed_start(root / "home", backend, deadline)
            warm = timed_start(root / "home", backend, deadline)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append((run + 1, cold, warm))
    print("| backend | run | cold start s | warm start s |\n|---|---|---|---|")
    for run, cold, warm in rows:
        fmt = lambda value: "no answer" if value is None else f"{value:.1f}"  # noqa: E731
        print(f"| {backend} | {run} | {fmt(cold)} | {fmt(warm)} |")


if __name__ == "__main__":
    main()
