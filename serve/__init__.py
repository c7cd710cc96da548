"""Serving encoders: feature extraction, k-nearest-neighbour image retrieval, and the demo.

- `sslzoo.serve.extractor`: `FeatureExtractor`, batched unit-norm features via PyTorch or ONNX Runtime.
- `sslzoo.serve.index`: `GalleryIndex`, FAISS search over a gallery, saved with the model it belongs to.
- `sslzoo.serve.gallery`: `Gallery`, the embedded CIFAR-10 default and image-folder galleries.
- `sslzoo.serve.app` and `.cli`: the Gradio page and `sslzoo-serve` (imported on demand: Gradio is heavy);
  `.uploads`, `.guards` and `.http_limits` hold every route to the same limits, `.batching` shares
  forward passes between concurrent queries.

    >>> from sslzoo.serve import FeatureExtractor, GalleryIndex, load_default_gallery
    >>> index = GalleryIndex.build(FeatureExtractor("simclr-resnet18-cifar10"), load_default_gallery())
    >>> index.search(["cat.png"], k=5)[0].class_names
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extractor import FeatureExtractor
    from .gallery import Gallery, load_default_gallery
    from .index import GalleryIndex, IndexMismatchError, SearchResult

__all__ = [
    "FeatureExtractor",
    "Gallery",
    "GalleryIndex",
    "IndexMismatchError",
    "SearchResult",
    "load_default_gallery",
]

#: Each public name and its module, imported on first use: `sslzoo-serve --help` needs none of them.
_LAZY = {
    "FeatureExtractor": ".extractor",
    "Gallery": ".gallery",
    "load_default_gallery": ".gallery",
    "GalleryIndex": ".index",
    "IndexMismatchError": ".index",
    "SearchResult": ".index",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslzoo.serve' has no attribute {name!r}")
