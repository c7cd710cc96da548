"""Serving speed: encoder throughput (PyTorch eager vs ONNX Runtime fp32 and int8), the int8 graph's
kNN top-1 beside the fp32 graph's, FAISS search time, end-to-end query latency through the demo's
`/search` API, and throughput under concurrent clients with queries answered one at a time or batched.

    python benchmarks/serve_latency.py                      # the bundled default encoder
    python benchmarks/serve_latency.py --model runs/x/model --threads 2 --queries 200
    python benchmarks/serve_latency.py --int8 exports/int8/model.int8.onnx  # from sslzoo-export --quantize
    python benchmarks/serve_latency.py --concurrency-only   # just the concurrent-clients table

Targets: ONNX Runtime >= 1.5x PyTorch eager on CPU; int8 >= 2x eager at batch 1, 16 and 64 with kNN
top-1 within 0.5 points of fp32 on the embedded gallery; p50 end-to-end <= 150 ms on a 2-core CPU
with the default gallery (1,000 CIFAR-10 images); with 50 concurrent clients, batched queries >= 2x
the queries/s of one-at-a-time. Without --int8 the int8 graph is quantized here (calibrated on the
model's training split under $SSLZOO_HOME/datasets, else, for CIFAR-10, on the embedded gallery,
which the kNN line then says). Without a bundled default and no --model, it times a randomly
initialised encoder of the default architecture (same cost, meaningless neighbours) and says so.
CPU timings move with other load on the machine: compare rows of one run.

The concurrent-clients table runs `sslzoo-serve` in processes of its own (as deployed: the
clients' Python does not share the server's), one with `--max-query-batch 1` and one batched,
and drives them in turn at each load with asyncio plain-HTTP clients, each uploading an example
image, calling /search and reading the event stream, then starting its next query.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import click  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sslzoo.export.quantize import gallery_knn  # noqa: E402
from sslzoo.export.results import knn_key_label  # noqa: E402
from sslzoo.serve.app import RetrievalService, build_app, launch, local_models  # noqa: E402
from sslzoo.serve.extractor import FeatureExtractor  # noqa: E402
from sslzoo.serve.gallery import assets_dir, load_default_gallery  # noqa: E402
from sslzoo.serve.index import INDEX_KINDS, GalleryIndex  # noqa: E402

from sslzoo import Encoder, default_model  # noqa: E402


def images_per_second(extractor: FeatureExtractor, batch: torch.Tensor, seconds: float) -> float:
    """Model-only throughput on a preprocessed batch: warm up, then repeat for about `seconds`."""
    extractor.embed_tensor(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        extractor.embed_tensor(batch)
        done += batch.shape[0]
    return done / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CLIENTS = {
    "http": "plain HTTP: upload + /gradio_api/call/search + event stream",
    "gradio_client": "gradio_client.predict (answer: JSON + thumbnail URLs)",
    "gradio_client+files": "gradio_client.predict, thumbnails downloaded too",
}


def api_latencies(service: RetrievalService, queries: int, k: int, client_kind: str) -> list[float]:
    """Milliseconds per `/search` call from a client on the same machine, one call at a time.

    gradio_client polls its event stream every 50 ms, which sets a floor under its latency; the
    plain-HTTP client shows what the server itself takes.
    """
    import httpx
    from gradio_client import Client, handle_file

    demo = build_app(service)
    url = launch(demo, port=free_port(), block=False, quiet=True)
    examples = sorted(str(path) for path in assets_dir().glob("example-*.png"))
    try:
        if client_kind == "http":
            http = httpx.Client(base_url=url, timeout=60)

            def call(path: str) -> dict:
                with open(path, "rb") as handle:
                    (uploaded,) = http.post(
                        "gradio_api/upload", files=[("files", (Path(path).name, handle))]
                    ).json()
                data = [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, k, service.default_key]
                event = http.post("gradio_api/call/search", json={"data": data}).json()["event_id"]
                stream = http.get(f"gradio_api/call/search/{event}").text
                return json.loads(stream.rsplit("data: ", 1)[1])[1]
        else:
            client = Client(url, verbose=False, download_files=client_kind == "gradio_client+files")

            def call(path: str) -> dict:
                return client.predict(handle_file(path), k, service.default_key, api_name="/search")[1]

        for path in examples[:3]:  # warm-up: first requests pay for connections and caches
            call(path)
        latencies = []
        for i in range(queries):
            started = time.perf_counter()
            details = call(examples[i % len(examples)])
            latencies.append(1000 * (time.perf_counter() - started))
            assert len(details["neighbours"]) == k
        return latencies
    finally:
        demo.close()


def gradio_client_floor(queries: int) -> list[float]:
    """Milliseconds per gradio_client call of an endpoint that does nothing: the client's own cost."""
    import gradio as gr
    from gradio_client import Client

    with gr.Blocks(analytics_enabled=False) as demo:
        number = gr.Number()
        gr.Button().click(lambda value: value, number, number, api_name="echo")
    demo.queue()
    _, url, _ = demo.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        client.predict(1, api_name="/echo")
        latencies = []
        for i in range(queries):
            started = time.perf_counter()
            client.predict(i, api_name="/echo")
            latencies.append(1000 * (time.perf_counter() - started))
        return latencies
    finally:
        demo.close()


def start_server(
    model: str, port: int, cache: Path, threads: int, max_query_batch: int, log: Path
) -> subprocess.Popen:
    """`sslzoo-serve` in its own process, ready to answer (ONNX Runtime backend, default gallery).

    Its output goes to `log`, which is printed if it fails.
    """
    command = [
        sys.executable,
        "-c",
        "from sslzoo.serve.cli import main; main()",
        "--model",
        model,
        "--backend",
        "onnx",
        "--threads",
        str(threads),
        "--port",
        str(port),
        "--index-cache",
        str(cache),
        "--max-query-batch",
        str(max_query_batch),
    ]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    while "open http" not in log.read_text():
        if process.poll() is not None:
            raise RuntimeError("sslzoo-serve did not start:\n" + log.read_text())
        time.sleep(0.5)
    return process


async def concurrent_load(url: str, clients: int, queries: int, k: int) -> tuple[float, list[float], int]:
    """(queries/s, per-query ms, retries) with `clients` plain-HTTP clients running queries back to back.

    A query whose connection breaks (a keep-alive connection closed as it was reused) is sent
    again, at most twice; the retries are counted and reported.
    """
    import httpx

    images = [path.read_bytes() for path in sorted(assets_dir().glob("example-*.png"))]
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    retries = 0
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def attempt(i: int) -> None:
            files = [("files", (f"query{i}.png", images[i % len(images)], "image/png"))]
            (path,) = (await http.post("gradio_api/upload", files=files)).json()
            data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, k, None]
            event = (await http.post("gradio_api/call/search", json={"data": data})).json()["event_id"]
            stream = (await http.get(f"gradio_api/call/search/{event}")).text
            if "event: complete" not in stream:
                raise RuntimeError(f"query {i} failed: {stream[-300:]}")

        async def one(i: int) -> float:
            nonlocal retries
            started = time.perf_counter()
            for tries_left in (2, 1, 0):
                try:
                    await attempt(i)
                    break
                except httpx.TransportError:
                    if not tries_left:
                        raise
                    retries += 1
            return 1000 * (time.perf_counter() - started)

        for i in range(min(clients, 8)):  # warm-up: connections, caches, ONNX Runtime's first runs
            await one(i)
        retries = 0
        pending = iter(range(queries))
        latencies: list[float] = []

        async def client() -> None:
            for i in pending:
                latencies.append(await one(i))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return queries / (time.perf_counter() - started), latencies, retries


def concurrency_table(model: str, cache: Path, threads: int, queries: int, k: int, batch: int) -> None:
    print(
        f"\n## Concurrent clients: one query at a time vs batched (plain HTTP, {queries} queries per row, k={k})\n"
    )
    print(
        "| clients | mode | queries/s | p50 ms | p99 ms | batched / one at a time |\n|---:|---|---:|---:|---:|---:|"
    )
    rates: dict[tuple[int, int], float] = {}
    rows = []
    retried = 0
    servers: dict[int, tuple[subprocess.Popen, int, Path]] = {}
    try:
        for max_query_batch in (1, batch):
            port, log = free_port(), cache / f"server-batch{max_query_batch}.log"
            servers[max_query_batch] = (
                start_server(model, port, cache, threads, max_query_batch, log),
                port,
                log,
            )
        for clients in (1, 8, 50):  # both modes back to back at each load: other load on the machine
            for max_query_batch, (_, port, log) in servers.items():  # moves less between them
                try:
                    rate, latencies, retries = asyncio.run(
                        concurrent_load(f"http://127.0.0.1:{port}/", clients, queries, k)
                    )
                except Exception:
                    print(f"The server's log ({log}):\n" + "".join(log.read_text().splitlines(True)[-40:]))
                    raise
                rates[(clients, max_query_batch)] = rate
                rows.append((clients, max_query_batch, rate, latencies))
                retried += retries
    finally:
        for server, _, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    for clients in (1, 8, 50):
        for max_query_batch in (1, batch):
            _, _, rate, latencies = next(row for row in rows if row[:2] == (clients, max_query_batch))
            mode = "one at a time" if max_query_batch == 1 else f"batched (up to {max_query_batch})"
            ratio = f"{rate / rates[(clients, 1)]:.2f}x" if max_query_batch != 1 else ""
            print(
                f"| {clients} | {mode} | {rate:.1f} | {percentile(latencies, 50):.0f} | "
                f"{percentile(latencies, 99):.0f} | {ratio} |"
            )
    if retried:
        print(
            f"\n{retried} queries were sent again after their connection broke (counted once, timed in full)."
        )
    print(
        f"\nTarget: batched >= 2x the queries/s of one at a time at 50 clients ({threads} thread(s) per server)."
    )


@click.command()
@click.option(
    "--model",
    "model_ref",
    default=None,
    help="Encoder to time (registry name, folder, hf-hub:...). "
    "Default: the bundled default encoder, else a randomly initialised ResNet-18 (CIFAR stem).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CPU threads for PyTorch and ONNX Runtime (1 is fastest on a busy 2-core machine).",
)
@click.option("--seconds", type=float, default=4.0, show_default=True, help="Time spent per throughput cell.")
@click.option(
    "--queries",
    type=click.IntRange(min=10),
    default=100,
    show_default=True,
    help="End-to-end /search calls per backend.",
)
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="Neighbours per query.")
@click.option(
    "--int8",
    "int8_graph",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The model.int8.onnx `sslzoo-export --quantize int8` wrote for the same model "
    "[default: quantize here, calibrated on the model's training distribution].",
)
@click.option(
    "--load-queries",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Queries per row of the concurrent-clients table.",
)
@click.option(
    "--max-query-batch",
    type=click.IntRange(min=2),
    default=16,
    show_default=True,
    help="The batched server's --max-query-batch.",
)
@click.option("--concurrency-only", is_flag=True, help="Print only the concurrent-clients table.")
def main(
    model_ref: str | None,
    threads: int,
    seconds: float,
    queries: int,
    k: int,
    load_queries: int,
    max_query_batch: int,
    concurrency_only: bool,
    int8_graph: Path | None,
) -> None:
    """Print throughput, search and end-to-end latency tables for serving on CPU."""
    torch.set_num_threads(threads)
    model_ref = model_ref or default_model()
    note = ""
    cache = Path(tempfile.mkdtemp(prefix="sslzoo-bench-"))
    if model_ref is None:
        torch.manual_seed(0)
        model: Encoder | str = Encoder("resnet18", "cifar", input_size=32)
        model.save_pretrained(cache / "random-resnet18")  # the server process loads it from here
        note = (
            " (randomly initialised: no default encoder is bundled yet; timings are the same architecture's)"
        )
    else:
        model = model_ref
    served = str(cache / "random-resnet18") if model_ref is None else model_ref
    if concurrency_only:
        print(
            f"# sslzoo serving benchmark\n\nmodel: {model_ref or 'resnet18-cifar'}{note}; {os.cpu_count()} CPUs"
        )
        concurrency_table(served, cache, threads, load_queries, k, max_query_batch)
        shutil.rmtree(cache, ignore_errors=True)
        return
    eager = FeatureExtractor(model, backend="torch", cache_dir=cache, model_id="bench")
    ort = FeatureExtractor(eager.encoder, backend="onnx", cache_dir=cache, threads=threads, model_id="bench")
    int8 = FeatureExtractor(
        eager.encoder, backend="onnx-int8", cache_dir=cache, threads=threads, model_id="bench", int8_graph=int8_graph
    )
    size = eager.encoder.input_size
    print(
        f"# sslzoo serving benchmark\n\nmodel: {model_ref or 'resnet18-cifar'}{note}; input {size} px; "
        f"{threads} thread(s); torch {torch.__version__}; {os.cpu_count()} CPUs visible (shared machine: "
        "other processes may be running).\n"
    )

    print("## Encoder throughput (images/s, model only, preprocessed input)\n")
    print(
        "| batch | PyTorch eager | ORT fp32 | ORT int8 | fp32 / eager | int8 / eager |\n"
        "|---:|---:|---:|---:|---:|---:|"
    )
    for batch_size in (1, 16, 64):
        batch = torch.randn(batch_size, 3, size, size)
        torch_rate = images_per_second(eager, batch, seconds)
        ort_rate = images_per_second(ort, batch, seconds)
        int8_rate = images_per_second(int8, batch, seconds)
        print(
            f"| {batch_size} | {torch_rate:.1f} | {ort_rate:.1f} | {int8_rate:.1f} | "
            f"{ort_rate / torch_rate:.2f}x | {int8_rate / torch_rate:.2f}x |"
        )
    calibration = (int8.quantization or {}).get("calibration", {})
    print(
        f"\nint8: {int8.onnx_path.name}, calibrated on {calibration.get('images')} images "
        f"({calibration.get('source')}).\n"
    )
    knn = gallery_knn(ort.onnx_path, int8.onnx_path, int8.quantization or {}, threads=threads)
    same = "; these are the images it was calibrated on" if knn["calibrated_on_these_images"] else ""
    print(
        f"## kNN top-1 on the embedded gallery ({knn['images']:,} images, leave-one-out{same})\n\n"
        "| protocol | ORT fp32 | ORT int8 | int8 - fp32 (points) |\n|---|---:|---:|---:|"
    )
    for key, fp32_top1 in knn["fp32"].items():
        print(f"| {knn_key_label(key)} | {fp32_top1:.2f} | {knn['int8'][key]:.2f} | {knn['int8'][key] - fp32_top1:+.2f} |")

    gallery = load_default_gallery()
    started = time.perf_counter()
    features = ort.embed(gallery.items())
    index_seconds = time.perf_counter() - started
    print(
        f"\nEmbedding the {len(gallery):,}-image default gallery with ONNX Runtime (incl. preprocessing): "
        f"{index_seconds:.1f} s ({len(gallery) / index_seconds:.0f} images/s).\n"
    )

    print(f"## Search time over the default gallery ({len(gallery):,} x {features.shape[1]}, k={k})\n")
    print(
        "| index | build ms | single query ms (median) | batched ms/query (100 queries) |\n"
        "|---|---:|---:|---:|"
    )
    rng = np.random.default_rng(0)
    queries_features = features[rng.choice(len(gallery), 100, replace=False)]
    for kind in INDEX_KINDS:
        started = time.perf_counter()
        index = GalleryIndex.from_features(features, gallery, model=ort.describe(), kind=kind)
        build_ms = 1000 * (time.perf_counter() - started)
        singles = []
        for row in queries_features:
            started = time.perf_counter()
            index.search_features(row[None], k)
            singles.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        index.search_features(queries_features, k)
        batched = 1000 * (time.perf_counter() - started) / len(queries_features)
        print(f"| {kind} | {build_ms:.1f} | {statistics.median(singles):.3f} | {batched:.4f} |")

    print(f"\n## End-to-end /search latency through the API ({queries} sequential queries, k={k})\n")
    print("| backend | client | p50 ms | p99 ms | mean ms |\n|---|---|---:|---:|---:|")
    for backend in ("torch", "onnx", "onnx-int8"):
        choices = local_models(extra=model if isinstance(model, str) else eager.encoder, extra_key="bench")
        service = RetrievalService(gallery, choices, backend=backend, cache_dir=cache, threads=threads)
        service.index(service.default_key, progress=False)
        for client_kind, description in CLIENTS.items():
            latencies = api_latencies(service, queries, k, client_kind)
            print(
                f"| {backend} | {description} | {percentile(latencies, 50):.1f} | "
                f"{percentile(latencies, 99):.1f} | {statistics.mean(latencies):.1f} |"
            )
    floor = gradio_client_floor(queries)
    print(
        f"| - | gradio_client.predict of a do-nothing endpoint (the client's floor) | "
        f"{percentile(floor, 50):.1f} | {percentile(floor, 99):.1f} | {statistics.mean(floor):.1f} |"
    )
    print(
        "\nTargets: ORT >= 1.5x eager on CPU; int8 >= 2x eager at every batch, kNN within 0.5 points of fp32; "
        "p50 <= 150 ms on 2 cores with the default gallery."
    )
    concurrency_table(served, cache, threads, load_queries, k, max_query_batch)
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
