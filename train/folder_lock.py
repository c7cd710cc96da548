"""An exclusive lock on a folder, held by the one process that writes there (a training run, a build).

    with FolderLock(out):          # FolderInUseError if another process holds it
        ...                        # write into `out`

The lock is a kernel lock (`flock`) on `FOLDER/.lock`, a file that also names its holder (pid,
host, start time, what it is doing) so a refused process can say who holds it. The kernel drops
the lock when its process ends, however it ends (SIGKILL and out-of-memory included), so a lock
file left behind by a dead process never blocks anyone: only a live holder does. Each folder has
its own lock, so a zoo build can lock `RUNS/` while each of its runs locks `RUNS/<name>/`.

Where `fcntl` does not exist (Windows) the lock is not enforced. On network file systems it
holds as far as the file system passes `flock` on (NFS does, as a POSIX lock).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sslzoo.errors import ConfigError, SslzooError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class FolderInUseError(SslzooError):
    """Another process holds the folder's lock; `holder` is what it wrote there (pid, host...)."""

    def __init__(self, folder: Path, holder: dict[str, Any]):
        self.folder = folder
        self.holder = holder
        pid, host = holder.get("pid"), holder.get("host")
        who = f"process {pid}" if pid else "another process"
        if host and host != socket.gethostname():
            who += f" on {host}"
        elif pid == os.getpid():
            who = f"this process ({pid})"
        doing = f" has been {holder['purpose']} there" if holder.get("purpose") else " holds it"
        since = f" since {holder['since']}" if holder.get("since") else ""
        stop = f"stop it (`kill {pid}` ends a training run cleanly, with a checkpoint)" if pid else "stop it"
        super().__init__(
            f"{folder} is in use: {who}{doing}{since}. Only one process may write into a folder: wait "
            f"for that one to end, or {stop}, then try again."
        )


class FolderLock:
    """The exclusive lock of `folder` (created if missing); `purpose` says what the holder is doing."""

    def __init__(self, folder: str | os.PathLike, purpose: str = "training"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `FolderInUseError` at once (never waits)."""
        if fcntl is None or self._fd is not None:
            return
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise ConfigError(
                    f"{self.folder}: cannot write there ({error.strerror or error})."
                ) from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderInUseError(self.folder, holder) from None
            if _still_named(fd, self.path):
                break
            os.close(fd)  # its holder released (and removed) it while we opened it: take the new one
        self._fd = fd
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "purpose": self.purpose,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held, so no one locks a file about to vanish
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    """What the live holder wrote; it writes right after locking, so wait a moment for an empty file."""
    for _ in range(20):
        data = os.pread(fd, 4096, 0)
        if data.strip():
            try:
                holder = json.loads(data)
            except ValueError:
                return {}
            return holder if isinstance(holder, dict) else {}
        time.sleep(0.01)
    return {}


def _still_named(fd: int, path: Path) -> bool:
    try:
        named, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
