"""Gradio wired so that every route into the server meets the same limits, and a bad request costs a
log line, not a traceback.

`secure(demo, limits)` is applied by `launch` to whatever page it is given:

- At the door (the queue's `push`, which every API call and page event goes through), an image
  sent inline as a data URL is written to a file under the upload limits (`save_data_url`), so
  the queue holds a path, not megabytes of base64; a link (`http://...`) is refused rather than
  fetched, since a download has no size cap.
- Every `gr.Image` input checks its upload (bytes, pixels, aspect ratio) from the file header
  before anything decodes it, and hands the event function an `Upload`: the path plus the name
  the client gave, so messages name the upload. Gradio's own decoder, which EXIF-rotates and
  re-encodes first, never sees a query.
- Every other input turns a value it cannot use into a message naming its label.
- Refusals reach the client as the message alone and the log as one line (`sslzoo.serve`).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
from gradio.exceptions import ComponentProcessingError, InvalidPathError
from gradio.utils import get_upload_folder
from pydantic import ValidationError

from .http_limits import UploadSpace
from .uploads import QueryInputError, Upload, UploadLimits, check_upload, save_data_url

log = logging.getLogger("sslzoo.serve")

LINKS_REFUSED = "This server does not fetch links: download the image and upload the file."
NOT_UPLOADED = "That file was not uploaded to this server (uploads expire after a while); upload it again."


def refusal(endpoint: str | None, message: str) -> gr.Error:
    """The error a client sees for a request the server will not answer, logged as one line."""
    log.warning("refused %s: %s", endpoint or "event", message)
    return gr.Error(message, print_exception=False)


def secure(demo: gr.Blocks, limits: UploadLimits, space: UploadSpace | None = None) -> None:
    """Apply the upload limits and one-line refusals to every input and event of `demo` (idempotent)."""
    if getattr(demo, "_sslzoo_secured", False):
        return
    demo._sslzoo_secured = True  # type: ignore[attr-defined]
    for block in demo.blocks.values():
        if isinstance(block, gr.Image):
            _guard_image(block, limits)
        elif isinstance(block, gr.components.Component):
            _guard_input(block)
    _guard_events(demo)
    _guard_admission(demo, limits, space)


# ------------------------------------------------------------------------------------------ inputs
def _guard_image(component: gr.Image, limits: UploadLimits) -> None:
    """Check uploads before decoding; `type="filepath"` inputs receive an `Upload` (a path string)."""
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is None:
            return None
        url = getattr(payload, "url", None) or ""
        name = getattr(payload, "orig_name", None)
        try:
            if url.startswith("data:"):  # a route that skipped the door: same treatment here
                upload = save_data_url(url, get_upload_folder(), limits, name=name)
            elif getattr(payload, "path", None):  # the name the client gave, else the file's (or inline)
                upload = Upload(payload.path, name) if name else Upload.of(payload.path)
            else:
                raise QueryInputError("Upload an image file (the request names no file).")
            check_upload(upload, limits)
        except QueryInputError as error:
            raise gr.Error(str(error), print_exception=False) from error
        if component.type == "filepath":
            return upload
        return original(type(payload)(path=upload.path, orig_name=upload.name))

    component.preprocess = preprocess  # type: ignore[method-assign]


def _guard_input(component: gr.components.Component) -> None:
    """A value the component cannot convert becomes a message naming the input, not a traceback."""
    original = component.preprocess
    label = str(getattr(component, "label", None) or type(component).__name__)

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except gr.Error as error:
            raise gr.Error(f"{label}: {error.message}", print_exception=False) from error
        except Exception as error:
            raise gr.Error(_cannot_use(component, label, payload), print_exception=False) from error

    component.preprocess = preprocess  # type: ignore[method-assign]


def _cannot_use(component: gr.components.Component, label: str, payload: Any) -> str:
    shown = repr(payload)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
    if isinstance(component, (gr.Slider, gr.Number)) and low is not None and high is not None:
        return f"{label} must be a number from {low:g} to {high:g} (got {shown})."
    return f"{label} cannot use the value {shown}."


# ------------------------------------------------------------------------------------------ events
def _guard_events(demo: gr.Blocks) -> None:
    """Refusals raised while processing an event are logged once and sent as their message alone."""
    process_api = demo.process_api

    async def guarded(block_fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        fn = demo.fns[block_fn] if isinstance(block_fn, int) else block_fn
        endpoint = f"/{fn.api_name}" if getattr(fn, "api_name", None) else getattr(fn, "name", None)
        try:
            return await process_api(block_fn, *args, **kwargs)
        except gr.Error as error:
            raise refusal(endpoint, error.message) from error
        except InvalidPathError as error:
            raise refusal(endpoint, NOT_UPLOADED) from error
        except (ComponentProcessingError, ValidationError) as error:
            raise refusal(
                endpoint, f"The request's inputs do not fit {endpoint} (see the page's API link)."
            ) from error

    demo.process_api = guarded  # type: ignore[method-assign]


def _guard_admission(demo: gr.Blocks, limits: UploadLimits, space: UploadSpace | None) -> None:
    """Write inline images to files and refuse links as requests join the queue."""
    queue = demo._queue
    push = queue.push

    async def guarded_push(body: Any, request: Any, username: Any) -> tuple[bool, Any, str]:
        try:
            body.data = [_admit(value, limits, space, demo) for value in body.data]
        except QueryInputError as error:
            fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
            endpoint = f"/{fn.api_name}" if fn is not None and fn.api_name else "event"
            log.warning("refused %s: %s", endpoint, error)
            return False, str(error), "error"
        return await push(body, request, username)

    queue.push = guarded_push  # type: ignore[method-assign]


def _admit(value: Any, limits: UploadLimits, space: UploadSpace | None, demo: gr.Blocks) -> Any:
    if not isinstance(value, dict):
        return value
    url, path = str(value.get("url") or ""), str(value.get("path") or "")
    if url.startswith("data:"):
        name = value.get("orig_name")
        upload = save_data_url(
            url,
            get_upload_folder(),
            limits,
            name=str(name) if name else None,
            admit=space.admit if space else None,
        )
        demo.upload_file_set.add(upload.path)  # expired by the delete_cache sweep like any upload
        return {"path": upload.path, "orig_name": upload.name, "meta": {"_type": "gradio.FileData"}}
    if path.startswith(("http://", "https://")) or (url.startswith(("http://", "https://")) and not path):
        raise QueryInputError(LINKS_REFUSED)
    return value
