"""`sslzoo-serve`: start the retrieval demo. A thin layer: parse, call `sslzoo.serve.app`, print."""

from __future__ import annotations

from pathlib import Path

import click

from sslzoo.errors import SslzooError
from sslzoo.registry import default_model

from .app import (
    DEFAULT_MAX_FILE_SIZE,
    RetrievalService,
    build_app,
    examples_folder,
    launch,
    local_models,
    write_examples,
)
from .extractor import BACKENDS, default_cache_dir
from .gallery import DEFAULT_GALLERY_SPEC, assets_dir, resolve_gallery
from .index import INDEX_KINDS


def no_default_model_message() -> str:
    found = [choice.key for choice in local_models()]
    where = f" Models found on this machine: {', '.join(found)}." if found else ""
    return (
        "No default encoder is bundled with this installation, so there is nothing to serve yet. "
        "Pass --model with a registry name whose weights you have, a folder written by sslzoo-train "
        "(config.json + model.safetensors) or hf-hub:org/repo." + where
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--model",
    "model_ref",
    default=None,
    help="Encoder to serve: a registry name (see sslzoo.list_models()), a folder holding config.json "
    "and model.safetensors, or hf-hub:org/repo[@revision]. Default: the encoder bundled with sslzoo.",
)
@click.option(
    "--gallery",
    "gallery_spec",
    default=DEFAULT_GALLERY_SPEC,
    help="Images to search: 'default' for the embedded 1,000 CIFAR-10 test images (100 per class), "
    "or a folder with one subfolder of images per class (the subfolder names are the labels).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="onnx",
    help="Run the encoder in ONNX Runtime (exported once, cached under --index-cache; about twice "
    "as fast per query on CPU, see benchmarks/serve_latency.py) or in PyTorch.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    help="Interface to listen on. The default accepts local connections only; 0.0.0.0 opens the demo to "
    "your network.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port to listen on. Default: 7860, or the next free one.",
)
@click.option(
    "--index-cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for cached gallery indexes and ONNX exports, reused across runs. "
    "Default: $SSLZOO_HOME/serve-cache.",
)
@click.option(
    "--index-kind",
    type=click.Choice(INDEX_KINDS),
    default="flat",
    help="FAISS index: exact inner product (flat), or approximate IVF / HNSW for galleries of "
    "hundreds of thousands of images.",
)
@click.option("--device", default="cpu", help="Where the encoder runs: cpu, cuda or cuda:N.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for the encoder (PyTorch and ONNX Runtime). Default: the libraries' own choice.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    help="Images per forward pass while indexing the gallery.",
)
@click.option(
    "--max-file-size",
    default=DEFAULT_MAX_FILE_SIZE,
    help="Largest upload accepted, e.g. 10mb or 500kb; larger uploads are refused before decoding.",
)
def main(
    model_ref: str | None,
    gallery_spec: str,
    backend: str,
    host: str,
    port: int | None,
    index_cache: Path | None,
    index_kind: str,
    device: str,
    threads: int | None,
    batch_size: int,
    max_file_size: str,
) -> None:
    """Start the image-retrieval demo: upload an image, see its nearest neighbours in a gallery.

    It also answers the API endpoints /search and /embed (gradio_client or plain HTTP; see the
    page's "Use via API" link). The gallery index is built on first use and cached.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    model_ref = model_ref or default_model()
    if model_ref is None:
        raise click.UsageError(no_default_model_message())
    try:
        gallery = resolve_gallery(gallery_spec)
        choices = local_models(extra=model_ref)
        service = RetrievalService(
            gallery,
            choices,
            backend=backend,
            device=device,
            cache_dir=index_cache or default_cache_dir(),
            kind=index_kind,
            batch_size=batch_size,
            threads=threads,
        )
        click.echo(
            f"Preparing {choices[0].key} ({backend}) and the index of {len(gallery):,} gallery images ..."
        )
        bundled_examples = (
            sorted(assets_dir().glob("example-*.png")) if gallery_spec == DEFAULT_GALLERY_SPEC else []
        )
        examples = write_examples(gallery, examples_folder(), extra=bundled_examples)
        demo = build_app(service, examples=examples)
    except SslzooError as error:
        hint = " (--backend torch runs the encoder without the ONNX export)" if backend == "onnx" else ""
        raise click.ClickException(f"{error}{hint}") from error
    url = launch(demo, host=host, port=port, max_file_size=max_file_size, block=False)
    click.echo(f"sslzoo-serve: open {url} (API: /search, /embed). Press Ctrl+C to stop.")
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
