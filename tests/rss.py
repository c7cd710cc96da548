"""Peak resident memory of a process, read from Linux's /proc: what a memory test asserts on.

`peak_growth_mb(pid)` is measured from the last `reset_peak(pid)`: Linux resets a process's
high-water mark (VmHWM) to its current resident size when "5" is written to its clear_refs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _status(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peak(pid: int | str = "self") -> float:
    """Reset the high-water mark to the current resident size; returns that size in MiB."""
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")
    return _status(pid, "VmRSS")


def peak_mb(pid: int | str = "self") -> float:
    return _status(pid, "VmHWM")


@dataclass
class Growth:
    mb: float = 0.0


@contextmanager
def peak_growth(pid: int | str = "self") -> Iterator[Growth]:
    """`with peak_growth() as growth: ...` then `growth.mb`: how far the peak rose above the start."""
    growth = Growth()
    start = reset_peak(pid)
    yield growth
    growth.mb = peak_mb(pid) - start


def supported() -> bool:
    return os.path.exists("/proc/self/clear_refs")
