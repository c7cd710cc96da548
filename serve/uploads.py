"""What a client sends as a query image, checked the same way whatever route it came by.

An image reaches the server as a multipart upload (the page, `gradio_client`, plain HTTP) or
inline, as a base64 data URL inside the JSON of a call. Both end up as a file that
`load_query_image` opens under one set of `UploadLimits` (bytes, pixels, aspect ratio) and with
one set of messages, which name the upload as the client named it. Inline images are written to
a file at the door (`save_data_url`), so neither Gradio's own decoder (which rotates and
re-encodes before any check) nor a queued request ever holds the decoded image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sslzoo.errors import SslzooError
from sslzoo.preprocessing import MAX_PIXELS, decode

SUPPORTED_FORMATS = "PNG, JPEG, WebP, BMP, GIF or TIFF"
#: Subfolder of the upload folder that holds inline (data URL) images written to files.
INLINE_FOLDER = "sslzoo-inline"
#: A photo is rarely more than 4:1; beyond 20:1 it is a strip, not a picture of something.
MAX_ASPECT_RATIO = 20.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # Gradio's "10mb"

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*(?P<b64>;base64)?,", re.ASCII)
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
               "image/bmp": ".bmp", "image/tiff": ".tiff"}  # fmt: skip


class QueryInputError(SslzooError, ValueError):
    """An upload that is not a usable image; the message is safe to show to the client."""


@dataclass(frozen=True)
class UploadLimits:
    """What one query image may cost: bytes on the wire, decoded pixels, and the ratio of its sides."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_aspect_ratio: float = MAX_ASPECT_RATIO

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.max_aspect_ratio < 1:
            raise ValueError(f"Upload limits must be positive (got {self}).")


class Upload(str):
    """A query image on disk (the string is its path) and what the client called it.

    A `str`, so an event function written for `gr.Image(type="filepath")` takes it as it is;
    `name` is None for an inline image sent without one.
    """

    name: str | None

    def __new__(cls, path: str | os.PathLike, name: str | None = None) -> Upload:
        upload = super().__new__(cls, os.fspath(path))
        upload.name = name
        return upload

    @classmethod
    def of(cls, upload: str | os.PathLike) -> Upload:
        if isinstance(upload, Upload):
            return upload
        path = Path(os.fspath(upload))
        return cls(path, None if path.parent.parent.name == INLINE_FOLDER else path.name)

    @property
    def path(self) -> str:
        return str.__str__(self)

    @property
    def label(self) -> str:
        """How messages name it; HTML-escaped, as Gradio may render messages as HTML."""
        return f"'{html.escape(self.name)}'" if self.name else "The inline image"


def check_upload(upload: str | os.PathLike, limits: UploadLimits = UploadLimits()) -> tuple[int, int]:
    """(width, height) of an upload within `limits`, read from the file size and image header only."""
    upload = Upload.of(upload)
    try:
        with _opened(upload, limits) as image:
            return image.size
    except QueryInputError:
        raise
    except Image.DecompressionBombError as error:
        raise QueryInputError(f"{upload.label} is too large to decode safely ({error}).") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise QueryInputError(unreadable(upload.label)) from error


def load_query_image(
    upload: str | os.PathLike,
    input_size: int,
    limits: UploadLimits = UploadLimits(),
    budget: DecodeBudget | None = None,
) -> Image.Image:
    """Decode a query into an upright RGB image no larger than needed, or raise `QueryInputError`.

    Everything is checked on the file and the image header before any pixel is decoded: its
    size in bytes, its pixel count and its aspect ratio. Grayscale, palette, RGBA and 16-bit
    images are converted; EXIF orientation is applied, as `Encoder.embed` does, so the server
    and the library embed a photo alike. `budget` bounds the pixels decoded at once across
    threads. Large images are shrunk while decoding (`sslzoo.preprocessing.decode`).
    """
    upload = Upload.of(upload)
    try:
        with _opened(upload, limits) as image:
            with budget.reserve(image.width * image.height) if budget else _nothing():
                return decode(image, size_hint=input_size)
    except QueryInputError:
        raise
    except Image.DecompressionBombError as error:
        raise QueryInputError(f"{upload.label} is too large to decode safely ({error}).") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise QueryInputError(unreadable(upload.label)) from error


@contextmanager
def _opened(upload: Upload, limits: UploadLimits) -> Iterator[Image.Image]:
    """The upload opened (header read, no pixels decoded) once its bytes, pixels and sides pass."""
    label = upload.label
    try:
        size = os.path.getsize(upload.path)
    except OSError as error:
        raise QueryInputError(f"{label} is not on the server (uploads expire); upload it again.") from error
    if size > limits.max_bytes:
        raise QueryInputError(too_large(label, limits.max_bytes, size))
    with Image.open(upload.path) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise QueryInputError(f"{label} has no pixels.")
        if width * height > limits.max_pixels:
            raise QueryInputError(
                f"{label} is {width}x{height} pixels, more than the {limits.max_pixels:,} "
                "this server decodes. Downscale it and try again."
            )
        if max(width, height) > limits.max_aspect_ratio * min(width, height):
            raise QueryInputError(
                f"{label} is {width}x{height} pixels: one side is more than "
                f"{limits.max_aspect_ratio:g} times the other. Crop it to the subject and try again."
            )
        yield image


def unreadable(label: str) -> str:
    return (
        f"{label} is not a readable image (it is corrupt, truncated or not a picture). "
        f"Upload a {SUPPORTED_FORMATS} file."
    )


def too_large(label: str, max_bytes: int, size: int | None = None) -> str:
    """The one wording of "too many bytes", whichever route noticed it."""
    limit, actual = megabytes(max_bytes), megabytes(size) if size is not None else None
    if actual == limit:  # just over: rounding would show the same number twice
        limit, actual = f"{limit} ({max_bytes:,} bytes)", f"{size:,} bytes"
    what = f"{label} is {actual}: larger" if actual is not None else f"{label} is larger"
    return f"{what} than the {limit} this server accepts for one image."


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


def save_data_url(
    url: str,
    folder: str | os.PathLike,
    limits: UploadLimits,
    name: str | None = None,
    admit: Callable[[int], bool] | None = None,
) -> Upload:
    """Write the image inside a `data:` URL to `folder/INLINE_FOLDER/<digest>/`, bytes checked first.

    The encoded length tells the decoded size, so an oversized payload is refused before it is
    decoded; what is written is the client's bytes, untouched, for `load_query_image` to check.
    `admit(size)` may refuse to write it (the server's upload space is full).
    """
    label = Upload("", name).label
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise QueryInputError(
            f"{label} is not a base64 data URL; send data:image/png;base64,... or upload the file."
        )
    payload = url[match.end() :]
    decoded_size = len(payload) * 3 // 4
    if decoded_size > limits.max_bytes + 2:
        raise QueryInputError(too_large(label, limits.max_bytes, decoded_size))
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise QueryInputError(f"{label} is not valid base64; send the file as an upload instead.") from error
    if len(data) > limits.max_bytes:
        raise QueryInputError(too_large(label, limits.max_bytes, len(data)))
    digest = hashlib.sha256(data).hexdigest()[:32]
    suffix = _EXTENSIONS.get((match.group("mime") or "").lower(), "")
    safe_name = re.sub(r"[^\w.-]", "_", Path(name).name)[:100] if name else f"inline{suffix}"
    target = Path(folder) / INLINE_FOLDER / digest / safe_name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file():
        if admit is not None and not admit(len(data)):
            raise QueryInputError("The server's upload space is full for now; try again in a few minutes.")
        staging = target.with_name(f".{target.name}.{threading.get_ident()}.partial")
        staging.write_bytes(data)
        os.replace(staging, target)
    return Upload(str(target), name)


class DecodeBudget:
    """Pixels being decoded at once across request threads, bounded by `max_pixels`.

    Each upload's pixel count is bounded by `UploadLimits.max_pixels`; with many requests
    decoding at once their sum is not. A decode waits here until its pixels fit (one that is
    alone always fits), so concurrent uploads never cost more than one maximal image.
    """

    def __init__(self, max_pixels: int = MAX_PIXELS):
        self.max_pixels = max_pixels
        self._in_use = 0
        self._condition = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.max_pixels)
        with self._condition:
            self._condition.wait_for(lambda: self._in_use + pixels <= self.max_pixels)
            self._in_use += pixels
        try:
            yield
        finally:
            with self._condition:
                self._in_use -= pixels
                self._condition.notify_all()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
