"""Limits applied to every HTTP request before Gradio reads it: body size and upload space.

Gradio caps the size of each file in a multipart upload, but not the JSON body of an API call
(where an inline image travels), nor how much the uploads of all clients add up to on disk.
`RequestLimits` is an ASGI middleware that refuses, with a one-line reason, any request body
larger than one image can make it (413: the file plus its multipart headers for an upload, the
image in base64 plus its JSON for an API call), and new uploads while the files written in the last
`UploadSpace.window_s` seconds would exceed the space budget (503). Expired uploads are
deleted by Gradio's `delete_cache` sweep; the window is the age at which that sweep removes
them, so the budget bounds what is on disk.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("sslzoo.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Room for the JSON around an inline image.
ENVELOPE_BYTES = 64 * 1024
#: Room for the multipart headers around an uploaded file.
MULTIPART_BYTES = 8 * 1024


class UploadSpace:
    """Bytes written by uploads over the last `window_s` seconds, bounded by `budget_bytes`."""

    def __init__(self, budget_bytes: int, window_s: float):
        self.budget_bytes = int(budget_bytes)
        self.window_s = float(window_s)
        self._admitted: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0
        self._lock = threading.Lock()

    def admit(self, size: int) -> bool:
        """Count `size` bytes against the budget, or return False (and count nothing) if they do not fit."""
        now = time.monotonic()
        with self._lock:
            while self._admitted and now - self._admitted[0][0] > self.window_s:
                self._total -= self._admitted.popleft()[1]
            if self._total + size > self.budget_bytes:
                return False
            self._admitted.append((now, size))
            self._total += size
            return True

    @property
    def used_bytes(self) -> int:
        return self._total


class _BodyTooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware: refuse oversized request bodies and uploads beyond the space budget."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_message: str,
        space: UploadSpace | None = None,
        upload_paths: tuple[str, ...] = ("/gradio_api/upload",),
    ):
        self.app = app
        self.max_upload_bytes = int(max_bytes) + MULTIPART_BYTES  # one file and its multipart headers
        self.max_body_bytes = int(max_bytes) * 4 // 3 + ENVELOPE_BYTES  # one image in base64, in JSON
        self.body_message = body_message
        self.space = space
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        is_upload = path.rstrip("/").endswith(self.upload_paths)
        limit = self.max_upload_bytes if is_upload else self.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(send, 413, self.body_message, path)
            return
        if self.space is not None and is_upload:
            if not self.space.admit(length if length is not None else limit):
                await _refuse(
                    send,
                    503,
                    "The server's upload space is full for now; try again in a few minutes.",
                    path,
                )
                return
        received = 0
        started = False
        replacing = False  # Gradio's own 413 for a file over the cap: answered with our message instead

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started, replacing
            if message["type"] == "http.response.start":
                if message.get("status") == 413 and is_upload:
                    replacing = True
                    return
                started = True
            elif replacing:
                if not message.get("more_body"):
                    replacing, started = False, True
                    await _refuse(send, 413, self.body_message, path)
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if started:
                raise
            await _refuse(send, 413, self.body_message, path)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, status: int, message: str, path: str) -> None:
    log.warning("refused %s: %s", path, message)
    body = json.dumps({"detail": message, "error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
