"""`sslzoo-embed`: embed a folder, a file list or a glob of images. Parses, calls `embed_images`, prints."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from sslzoo.errors import SslzooError

from .defaults import BACKENDS, EMBED_FORMATS, EMBED_SAVE_EVERY, INDEX_KINDS

#: Exit status of a run stopped by Ctrl+C or SIGTERM after saving its work (EX_TEMPFAIL, as sslzoo-train).
EXIT_MORE_TO_DO = 75
#: How many skipped files are named one per line before the rest are counted.
SHOW_SKIPPED = 50


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("model")
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="FILE.safetensors (tensor 'embeddings') or FILE.npy, each with the sidecar FILE.json; or a folder: "
    "a FAISS index that sslzoo-serve --gallery FOLDER searches as it is.",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(EMBED_FORMATS),
    default=None,
    help="Output format [default: from the --out suffix; a folder for faiss].",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="torch",
    show_default=True,
    help="Run the encoder in PyTorch or ONNX Runtime (exported once and cached).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per forward pass."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads decoding image files while the model runs [default: up to 4].",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads of the encoder [default: the library's]."
)
@click.option(
    "--index-kind",
    type=click.Choice(INDEX_KINDS),
    default="flat",
    show_default=True,
    help="With a folder --out: exact FAISS search (flat) or approximate IVF / HNSW for very large sets.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Embed everything again, replacing --out, even if it holds another model's embeddings.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the ONNX export is cached [default: $SSLZOO_HOME/serve-cache].",
)
def main(
    model: str,
    inputs: tuple[str, ...],
    out: Path,
    format_: str | None,
    backend: str,
    device: str,
    batch_size: int,
    workers: int | None,
    threads: int | None,
    index_kind: str,
    overwrite: bool,
    cache_dir: Path | None,
) -> None:
    """Embed images with MODEL (a zoo name, a model folder or hf-hub:org/repo) into --out.

    \b
    Each INPUT is a folder (searched recursively for image files), a glob pattern in quotes
    ('photos/**/*.jpg'), an image file, or a text file listing one path per line ('-' reads the
    list from stdin). Images go through the encoder's own preprocessing, as Encoder.embed does;
    rows are L2-normalised float32, in input order. Files that cannot be read are skipped and
    listed (on stderr and in the sidecar).

    \b
    Running it again over the same --out embeds only new or changed files (by size and mtime)
    and drops rows of files no longer there; the output must come from the same model. The work
    done is saved every few minutes and on Ctrl+C or SIGTERM (exit status 75: run the same
    command again to finish).

    \b
    Examples:
      sslzoo-embed simclr-resnet18-cifar10 photos/ --out photos.safetensors
      sslzoo-embed runs/x/model 'data/**/*.png' --out embeddings.npy --backend onnx
      sslzoo-embed simclr-resnet18-cifar10 gallery/ --out gallery-index && sslzoo-serve --gallery gallery-index
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        from .embed import embed_images  # here, so --help answers without PyTorch or FAISS

        report = embed_images(
            model,
            inputs,
            out,
            format=format_,
            backend=backend,
            device=device,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            overwrite=overwrite,
            index_kind=index_kind,
            cache_dir=cache_dir,
            save_every=EMBED_SAVE_EVERY,
        )
    except KeyboardInterrupt:
        click.echo(
            f"Stopped; the images embedded so far are saved in {out}. Run the same command again to finish.",
            err=True,
        )
        sys.exit(EXIT_MORE_TO_DO)
    except SslzooError as error:
        raise click.ClickException(str(error)) from error
    finally:
        signal.signal(signal.SIGTERM, previous)
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)
    if report.skipped:
        click.echo(f"Skipped {len(report.skipped)} file(s) that could not be read:", err=True)
        for item in report.skipped[:SHOW_SKIPPED]:
            click.echo(f"  {item.path}: {item.reason}", err=True)
        if len(report.skipped) > SHOW_SKIPPED:
            click.echo(f"  ... and {len(report.skipped) - SHOW_SKIPPED} more, listed in {report.sidecar}", err=True)
    kept = f", {report.reused} kept from before" if report.reused else ""
    dropped = f", {report.dropped} old row(s) dropped" if report.dropped else ""
    target = f"a FAISS index in {report.out}" if report.format == "faiss" else str(report.out)
    click.echo(
        f"Embedded {report.embedded} image(s){kept}{dropped}: {report.rows} x {report.dim} float32 into {target} "
        f"(paths and model in {report.sidecar}) in {report.seconds:.1f} s."
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # embed_images saves its work on the way out


if __name__ == "__main__":
    main()
