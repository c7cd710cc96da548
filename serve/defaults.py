"""The demo's defaults and choices, readable without PyTorch, Gradio or FAISS.

`sslzoo-serve` and `sslzoo-embed` build their options and `--help` from these, so help answers at once; the modules
that use them (`app`, `extractor`, `gallery`, `index`) import them from here.
"""

from __future__ import annotations

#: Per-file upload limit (Gradio's size syntax).
DEFAULT_MAX_FILE_SIZE = "10mb"
#: Queries the encoder embeds together at most (the micro-batcher's batch).
DEFAULT_QUERY_BATCH = 16
#: Uploads (and Gradio's cached results) are deleted once this old.
UPLOAD_TTL_S = 15 * 60
#: What the uploads of the last `UPLOAD_TTL_S` (plus one sweep) may add up to on disk.
DEFAULT_UPLOAD_SPACE = "1gb"
#: The encoder runs in PyTorch or in ONNX Runtime.
BACKENDS = ("torch", "onnx", "onnx-int8")
#: FAISS index kinds (`sslzoo.serve.index`).
INDEX_KINDS = ("flat", "ivf", "hnsw")
#: `--gallery` value for the embedded 1,000 CIFAR-10 test images.
DEFAULT_GALLERY_SPEC = "default"
#: `sslzoo-embed --format`: embeddings as safetensors or .npy (with a JSON sidecar), or a FAISS index.
EMBED_FORMATS = ("safetensors", "npy", "faiss")
#: Seconds between the saves of a long `sslzoo-embed` run (what a kill can cost at most).
EMBED_SAVE_EVERY = 120.0
