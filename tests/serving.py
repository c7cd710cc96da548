"""Helpers for tests that talk to a demo server over plain HTTP, as any client may."""

from __future__ import annotations

import base64
import io
import json
import socket

import httpx
from PIL import Image

FILE = {"_type": "gradio.FileData"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def png_bytes(image: Image.Image, compress_level: int = 9) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def data_url(content: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(content).decode()


def upload(http: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return http.post("gradio_api/upload", files=[("files", (name, content, "application/octet-stream"))])


def uploaded(http: httpx.Client, name: str, content: bytes) -> dict:
    """Upload `content` as file `name`; the FileData a call refers to it by."""
    response = upload(http, name, content)
    response.raise_for_status()
    (path,) = response.json()
    return {"path": path, "orig_name": name, "meta": FILE}


def inline(content: bytes, mime: str = "image/png") -> dict:
    """An image sent inside the call itself, as a data URL."""
    return {"url": data_url(content, mime), "path": None, "meta": FILE}


def call(http: httpx.Client, api: str, data: list) -> tuple[int, str, object]:
    """POST a named endpoint's inputs and read its event stream: (HTTP status of the POST, event, data).

    A refusal at the door answers the POST itself (event "refused", data: the response's detail).
    """
    started = http.post(f"gradio_api/call/{api}", json={"data": data})
    if started.status_code != 200:
        return started.status_code, "refused", started.json().get("detail")
    stream = http.get(f"gradio_api/call/{api}/{started.json()['event_id']}").text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return 200, events[-1], json.loads(payloads[-1]) if payloads[-1] != "null" else None


def error_of(result: tuple[int, str, object]) -> str:
    """The message of a refused call, whether it was refused at the door or by the event."""
    _, event, data = result
    assert event in ("error", "refused"), result
    return data["error"] if isinstance(data, dict) else str(data)
