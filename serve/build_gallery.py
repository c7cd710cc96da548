"""Rebuild the embedded default gallery from the official CIFAR-10 test batch.

    python -m sslzoo.serve.build_gallery CIFAR_ROOT

`CIFAR_ROOT` holds `cifar-10-batches-py/` (torchvision's layout; torchvision checks the files'
md5 against the official release before reading them). The first 100 images of every class, in
test-set order, go to `assets/cifar10_gallery.safetensors` (uint8 pixels) and
`assets/cifar10_gallery.json` (labels, class names, source indices, provenance); the next image
of every class, which is not in the gallery, becomes an example query
`assets/example-<class>.png`. The package
itself never reads the pickled batches: only these two files ship.

This is a maintenance tool; nothing runs it at install or test time.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from PIL import Image

from .gallery import DEFAULT_GALLERY_NAME, assets_dir, write_gallery_assets

PER_CLASS = 100


def select_first_per_class(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Indices of the first `per_class` items of each class, kept in their original order."""
    chosen: list[int] = []
    counts = np.zeros(num_classes, dtype=np.int64)
    for index, label in enumerate(labels.tolist()):
        if counts[label] < per_class:
            chosen.append(index)
            counts[label] += 1
    short = [c for c in range(num_classes) if counts[c] < per_class]
    if short:
        raise click.ClickException(f"Classes {short} have fewer than {per_class} images in the test set.")
    return np.asarray(chosen, dtype=np.int64)


@click.command()
@click.argument("cifar_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write the two asset files to (default: the package's assets/ folder).",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=PER_CLASS,
    show_default=True,
    help="Images taken from each of the 10 classes.",
)
def main(cifar_root: Path, out: Path | None, per_class: int) -> None:
    """Write the default retrieval gallery from CIFAR_ROOT/cifar-10-batches-py (the official test batch)."""
    from torchvision.datasets import CIFAR10  # maintenance-only import

    test_set = CIFAR10(root=str(cifar_root), train=False, download=False)
    labels = np.asarray(test_set.targets, dtype=np.int64)
    indices = select_first_per_class(labels, per_class, len(test_set.classes))
    provenance = (
        f"The first {per_class} images of each class, in test-set order, from the CIFAR-10 test batch "
        "(Krizhevsky, 2009, 'Learning Multiple Layers of Features from Tiny Images'; "
        "https://www.cs.toronto.edu/~kriz/cifar.html), original 32x32 pixels. Built by "
        "`python -m sslzoo.serve.build_gallery`."
    )
    paths = write_gallery_assets(
        out or assets_dir(),
        name=DEFAULT_GALLERY_NAME,
        images=test_set.data[indices],
        labels=labels[indices].tolist(),
        class_names=list(test_set.classes),
        source_indices=indices.tolist(),
        provenance=provenance,
    )
    examples = select_first_per_class(labels, per_class + 1, len(test_set.classes))
    for index in sorted(set(examples.tolist()) - set(indices.tolist())):
        path = (out or assets_dir()) / f"example-{test_set.classes[labels[index]]}.png"
        Image.fromarray(test_set.data[index]).save(path, optimize=True)
        path.chmod(0o644)
        paths.append(path)
    for path in paths:
        click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
