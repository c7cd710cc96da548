"""Gallery features shipped with the package, so the demo's first start needs no minute of embedding.

The embedded default gallery's features under the bundled default encoder live next to the
gallery (`assets/cifar10_gallery_features.safetensors`, float16, 1 MB). The file records what
made them: the gallery's fingerprint, the model's fingerprint (weights and preprocessing) and
the sha256 of the weights file. `load_features` returns them only when all of these match the
gallery and the extractor at hand; for any other model, or after the weights change, it returns
None and the server embeds the gallery afresh. Rebuild the file after changing the default:

    python -m sslzoo.serve.precomputed
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from .extractor import FeatureExtractor
from .gallery import FEATURES_FILE, Gallery, assets_dir, load_default_gallery

_LOG = logging.getLogger("sslzoo.serve")


def features_path() -> Path:
    """Where the embedded gallery's precomputed features are shipped."""
    return assets_dir() / FEATURES_FILE


def write_features(extractor: FeatureExtractor, gallery: Gallery, path: Path) -> Path:
    """Embed `gallery` with `extractor` and store the features as float16 with what made them."""
    features = extractor.embed(gallery.items(), progress=True, description=f"embedding {gallery.name}")
    metadata = {
        "gallery_fingerprint": gallery.fingerprint,
        "model_fingerprint": extractor.fingerprint,
        "weights_sha256": extractor.encoder.weights_sha256 or "",
        "model": extractor.model_id,
        "format": "float16 L2-normalised features, one row per gallery item",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": features.astype(np.float16)}, str(path), metadata=metadata)
    path.chmod(0o644)  # package data: readable by every user of an installation
    return path


def load_features(
    extractor: FeatureExtractor, gallery: Gallery, path: Path | None = None
) -> np.ndarray | None:
    """The precomputed (N, D) float32 features of `gallery` under `extractor`'s model, or None when
    the file is missing, unreadable, or was made by another model, weights file or gallery."""
    path = path or features_path()
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        features = load_file(str(path))["features"]
    except (SafetensorError, OSError, KeyError) as error:
        _LOG.warning("%s is unreadable (%s); embedding the gallery afresh", path, error)
        return None
    weights = extractor.encoder.weights_sha256
    if (
        metadata.get("gallery_fingerprint") != gallery.fingerprint
        or metadata.get("model_fingerprint") != extractor.fingerprint
        or (weights and metadata.get("weights_sha256") not in ("", weights))
        or features.shape != (len(gallery), extractor.num_features)
    ):
        return None
    return features.astype(np.float32)


@click.command()
@click.option("--model", default=None, help="Encoder (default: the bundled default encoder).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"File to write (default: the package's assets/{FEATURES_FILE}).",
)
def main(model: str | None, out: Path | None) -> None:
    """Write the embedded gallery's features under the default encoder (a maintenance tool)."""
    from sslzoo.registry import default_model

    name = model or default_model()
    if name is None:
        raise click.ClickException("No default encoder is bundled; pass --model.")
    path = write_features(
        FeatureExtractor(name, model_id=name), load_default_gallery(), out or features_path()
    )
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
