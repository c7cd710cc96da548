"""Scratch folders that name the process that made them, so a later run removes what a killed one left.

A process stopped by SIGKILL (or a power cut) runs no cleanup. Its scratch folders are named
`<prefix><pid>-<random>`; `remove_abandoned` deletes those whose process is gone, and leaves
those of live processes alone (two servers, or two exports, can run side by side).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

#: Folders in the old form, without a pid, are removed once they are this old.
UNOWNED_MAX_AGE_S = 24 * 3600


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_name(prefix: str) -> str:
    """A fresh scratch name for this process: `<prefix><pid>-<random>`."""
    return f"{prefix}{os.getpid()}-{os.urandom(4).hex()}"


def scratch_folder(prefix: str, parent: str | os.PathLike | None = None, remove_at_exit: bool = True) -> Path:
    """Create `parent/<prefix><pid>-<random>/` (default parent: the system temp dir).

    With `remove_at_exit` it goes when the interpreter exits normally; `remove_abandoned`
    catches it after a kill.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    remove_abandoned(parent, prefix)
    folder = parent / owned_name(prefix)
    folder.mkdir(parents=True)
    if remove_at_exit:
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def owner_of(name: str, prefix: str) -> int | None:
    """The pid in a scratch name made by `owned_name(prefix)`, or None for other names."""
    match = re.fullmatch(re.escape(prefix) + r"(\d+)-[0-9a-f]+", name)
    return int(match.group(1)) if match else None


def remove_abandoned(
    parent: str | os.PathLike,
    prefix: str,
    unowned_max_age_s: float = UNOWNED_MAX_AGE_S,
    on_removed: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Delete `parent/<prefix>*` folders whose owning process is gone; returns what was removed.

    A name without a pid (written before names carried one) counts as abandoned once it is
    `unowned_max_age_s` old. `on_removed(path)` is told about each removal instead of deleting
    when given (callers that must restore rather than delete, like a half-replaced export).
    """
    parent = Path(parent)
    removed = []
    try:
        candidates = [path for path in parent.iterdir() if path.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        pid = owner_of(path.name, prefix)
        if pid is not None:
            if pid == os.getpid() or pid_alive(pid):
                continue
        else:
            try:
                if now - path.lstat().st_mtime < unowned_max_age_s:
                    continue
            except OSError:
                continue
        if on_removed is not None:
            on_removed(path)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def exit_on_sigterm(status: int = 143) -> Iterator[None]:
    """While inside, SIGTERM raises `SystemExit(status)` in the main thread, so `finally` blocks and
    atexit handlers run; the previous handler comes back on the way out.

    By default SIGTERM ends a Python process on the spot, leaving its scratch folders behind.
    143 (128 + 15) is what a shell reports for a process ended by SIGTERM. Outside the main
    thread (where signals cannot be handled) this does nothing.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(status)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
