"""Packages that only some commands need, imported where they are needed, with the extra that brings them.

The library installs with PyTorch, torchvision, safetensors, huggingface_hub, NumPy, Pillow, click
and tqdm only (`pip install sslzoo`). The demo, ONNX export, training and plotting need more;
`pip install 'sslzoo[serve]'`, `'sslzoo[export]'`, `'sslzoo[train]'` or `'sslzoo[all]'` installs
it. `require` imports such a package, or says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

#: The distribution that provides each optional module, as pip names it.
DISTRIBUTIONS = {
    "gradio": "gradio",
    "faiss": "faiss-cpu",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "matplotlib": "matplotlib",
    "timm": "timm",
}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """`importlib.import_module(module)`, or a `MissingExtraError` naming the extra that installs it.

    `purpose` says what needs it, e.g. "sslzoo-serve" or "ONNX export".
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        package = DISTRIBUTIONS.get(top, top)
        raise MissingExtraError(
            f"{purpose} needs {package}, which is not installed here ({error}). "
            f"Install it with: pip install 'sslzoo[{extra}]'"
        ) from error
