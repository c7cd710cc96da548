"""`sslzoo-serve`: start the retrieval demo. A thin layer: parse, check, call `sslzoo.serve.app`, print.
Its options come from `sslzoo.serve.defaults`; the demo itself is imported when it starts.

What can be checked in a second is checked before the minute of preparation (loading the
model, indexing the gallery): that `--host` resolves to a local interface and `--port` is free.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from sslzoo.errors import MissingExtraError, SslzooError
from sslzoo.registry import default_model
from sslzoo.scratch import exit_on_sigterm, scratch_folder

from .defaults import (
    BACKENDS,
    DEFAULT_GALLERY_SPEC,
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_QUERY_BATCH,
    DEFAULT_UPLOAD_SPACE,
    INDEX_KINDS,
    UPLOAD_TTL_S,
)

#: Gradio's port search when no --port is given: GRADIO_SERVER_PORT (default 7860) and the next 99.
DEFAULT_PORT = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
PORT_TRIES = 100


def check_address(host: str, port: int | None) -> int:
    """The port to listen on: `port`, or the first free one from `DEFAULT_PORT`; `click` errors otherwise.

    Gradio finds out only after the model and gallery are prepared, and then reports any failure
    (an unresolvable host included, after a DNS wait per port) as "Cannot find empty port".
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise click.BadParameter(
            f"{host!r} does not resolve ({error.strerror}).", param_hint="--host"
        ) from error
    family, _, _, _, address = infos[0]
    candidates = [port] if port is not None else range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES)
    last: OSError | None = None
    for candidate in candidates:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address[0], candidate))
                return candidate
            except OSError as error:
                last = error
                if error.errno not in (98, 48):  # EADDRINUSE (Linux, macOS): try the next port
                    raise click.BadParameter(
                        f"cannot listen on {host} ({error.strerror}); use an address of this machine, "
                        "e.g. 127.0.0.1 or 0.0.0.0.",
                        param_hint="--host",
                    ) from error
    if port is not None:
        raise click.BadParameter(
            f"port {port} on {host} is in use ({last.strerror if last else 'busy'}); stop what holds it "
            "or choose another --port.",
            param_hint="--port",
        )
    raise click.BadParameter(
        f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORT_TRIES - 1} on {host} are all in use; choose a --port.",
        param_hint="--port",
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_credentials(auth: str | None, auth_file: Path | None) -> list[tuple[str, str]]:
    """(user, password) pairs from `--auth USER:PASS` and from the lines of `--auth-file`."""
    entries: list[tuple[str, str]] = []
    lines = [(auth, "--auth")] if auth else []
    if auth_file is not None:
        text = auth_file.read_text()
        lines += [
            (line.strip(), f"{auth_file}, line {number}") for number, line in enumerate(text.splitlines(), 1)
        ]
    for line, where in lines:
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not colon or not user or not password:
            raise click.BadParameter(f"{where}: write USER:PASSWORD.", param_hint="--auth")
        entries.append((user, password))
    if auth_file is not None and not entries:
        raise click.BadParameter(f"{auth_file} holds no USER:PASSWORD line.", param_hint="--auth-file")
    return entries


def no_default_model_message() -> str:
    from .app import local_models

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
    "a folder with one subfolder of images per class (the subfolder names are the labels), a folder of "
    "unlabelled images, e.g. your photos (results then show file names), or a FAISS index folder "
    "written by sslzoo-embed (searched as it is, nothing embedded again; --model must be the model "
    "that wrote it).",
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
    help="Largest image accepted, uploaded or inline as a data URL, e.g. 10mb or 500kb; larger ones are "
    "refused before decoding.",
)
@click.option(
    "--max-query-batch",
    type=click.IntRange(min=1),
    default=DEFAULT_QUERY_BATCH,
    help="Queries that arrive together are embedded in one forward pass, up to this many; 1 answers one "
    "query at a time (see benchmarks/serve_latency.py).",
)
@click.option(
    "--upload-space",
    default=DEFAULT_UPLOAD_SPACE,
    help=f"Disk space for uploads, e.g. 1gb. Uploads are deleted after {UPLOAD_TTL_S // 60} minutes; while "
    "the recent ones fill this space, new uploads are refused.",
)
@click.option(
    "--auth",
    metavar="USER:PASSWORD",
    envvar="SSLZOO_SERVE_AUTH",
    default=None,
    help="Require this login for the page and the API (also read from $SSLZOO_SERVE_AUTH, which keeps "
    "the password out of the process list).",
)
@click.option(
    "--auth-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A file of USER:PASSWORD lines, each a login the server accepts.",
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
    max_query_batch: int,
    upload_space: str,
    auth: str | None,
    auth_file: Path | None,
) -> None:
    """Start the image-retrieval demo: upload an image, see its nearest neighbours in a gallery.

    It also answers the API endpoints /search and /embed (gradio_client or plain HTTP; see the
    page's "Use via API" link). The gallery index is built on first use and cached. Refused
    requests are logged one line each; SIGTERM or Ctrl+C stop the server and remove its
    temporary files.
    """
    try:
        from .app import (  # here, not at the top: --help needs neither Gradio nor PyTorch
            RetrievalService,
            UploadLimits,
            build_app,
            examples_folder,
            launch,
            local_models,
            write_examples,
        )
        from .extractor import default_cache_dir
        from .gallery import assets_dir, resolve_gallery
    except MissingExtraError as error:
        raise click.ClickException(str(error)) from None
    except ImportError as error:  # gradio, faiss...: what the serve extra brings
        raise click.ClickException(
            f"sslzoo-serve needs {error.name or error}, which is not installed here. "
            "Install it with: pip install 'sslzoo[serve]'"
        ) from None
    try:
        limits = UploadLimits(max_bytes=_file_size(max_file_size, "--max-file-size"))
        _file_size(upload_space, "--upload-space")
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    credentials = read_credentials(auth, auth_file)
    port = check_address(host, port)
    if not is_loopback(host) and not credentials:
        click.echo(
            f"Warning: --host {host} lets anyone who can reach this machine use the demo and its API, with "
            "no login. Add --auth USER:PASSWORD (or --auth-file) to require one.",
            err=True,
        )
    _log_refusals()
    # SIGTERM is a server's normal way to stop: clean up (finally, atexit), then exit 0.
    with exit_on_sigterm(0), _private_upload_folder():
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
                max_query_batch=max_query_batch,
                limits=limits,
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
        try:
            url = launch(
                demo,
                host=host,
                port=port,
                max_file_size=max_file_size,
                block=False,
                auth=credentials or None,
                limits=limits,
                upload_space=upload_space,
            )
        except OSError as error:  # the port was free a minute ago
            service.close()
            raise click.ClickException(f"Cannot listen on {host}:{port}: {error}") from error
        login = f", login required ({len(credentials)} user(s))" if credentials else ""
        click.echo(f"sslzoo-serve: open {url} (API: /search, /embed{login}). Press Ctrl+C to stop.")
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
            service.close()
            click.echo("sslzoo-serve: stopped.")


@contextlib.contextmanager
def _private_upload_folder() -> Iterator[None]:
    """Gradio's uploads in a folder of this process (unless GRADIO_TEMP_DIR says otherwise): removed
    when the server stops, or by the next server if this one is killed."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    folder = scratch_folder("sslzoo-uploads-")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def _file_size(text: str, option: str) -> int:
    from gradio.utils import _parse_file_size

    try:
        size = _parse_file_size(text)
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{option}: {text!r} is not a size; write e.g. 10mb or 500kb.") from error
    if not size or size < 1:
        raise ValueError(f"{option}: {text!r} must be more than 0 bytes.")
    return size


def _log_refusals() -> None:
    """One line per refused request on stderr (the `sslzoo.serve` logger), with a timestamp."""
    logger = logging.getLogger("sslzoo.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s sslzoo-serve: %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
