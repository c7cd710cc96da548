"""Progress for long work, readable wherever stderr goes.

On a terminal (or in a notebook) `progress_bar` is an ordinary tqdm bar. When stderr is a pipe
or a log file, a bar redrawn with carriage returns turns into one unreadable line that appears
only at the end, so it logs whole lines instead: one when the work starts, one every
`LOG_SECONDS` seconds or every `LOG_PERCENT` percent (whichever comes first) and one when it ends,
each with the count, rate and time left as tqdm formats them. Both are tqdm objects (same
`update`, `set_postfix`, `close`, iteration), so callers do not care which they got.

`SSLZOO_PROGRESS_SECONDS` changes the log interval; `TQDM_DISABLE=1` turns every bar off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

#: Seconds between two log lines when stderr is not a terminal (overridden by SSLZOO_PROGRESS_SECONDS).
LOG_SECONDS = 30.0
#: A log line is also written each time the work passes another multiple of this percentage.
LOG_PERCENT = 10
#: tqdm.auto draws a widget in a notebook (whose stderr is no terminal, yet shows one).
_NOTEBOOK = any(cls.__module__ == "tqdm.notebook" for cls in auto_tqdm.__mro__)
_LINE_FORMAT = (
    "{label}{n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) "
    "[{elapsed} elapsed, {remaining} left, {rate_fmt}]{postfix}"
)
_OPEN_LINE_FORMAT = "{label}{n_fmt} {unit} [{elapsed} elapsed, {rate_fmt}]{postfix}"  # total unknown


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str | None = None,
    total: float | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on a terminal, periodic log lines elsewhere (see the module docstring).

    `file` defaults to `sys.stderr` as it is at the call (so redirected streams are honoured).
    Other keywords go to tqdm; on the logging variant, display-only ones (ncols...) are ignored.
    """
    disable = disable or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    stream = file if file is not None else sys.stderr
    options = dict(desc=desc, total=total, unit=unit, disable=disable, leave=leave, **kwargs)
    if disable or _interactive(stream):
        bar_class = auto_tqdm if file is None and _NOTEBOOK else tqdm
        return bar_class(iterable, file=stream, **options)
    for display_only in ("dynamic_ncols", "ncols", "ascii", "colour", "position", "nrows"):
        options.pop(display_only, None)
    return LogProgress(iterable, out=stream, interval=log_seconds(), **options)


def log_seconds() -> float:
    """The interval between log lines: `SSLZOO_PROGRESS_SECONDS` if set to a positive number."""
    try:
        value = float(os.environ.get("SSLZOO_PROGRESS_SECONDS", LOG_SECONDS))
    except ValueError:
        return LOG_SECONDS
    return value if value > 0 else LOG_SECONDS


def _interactive(stream: IO[str]) -> bool:
    if _NOTEBOOK and stream is sys.stderr:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Discard:
    """Where tqdm's own carriage-return drawing goes on the logging variant."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class LogProgress(tqdm):
    """tqdm that writes complete lines to `out`: at the start, every `interval` seconds or
    `LOG_PERCENT` percent, and at the end (even with `leave=False`: a log keeps its last word)."""

    monitor_interval = 0  # no tqdm monitor thread: lines are written from the caller's thread

    def __init__(
        self, iterable: Iterable[Any] | None = None, *, out: IO[str], interval: float, **kwargs: Any
    ):
        self._out = out
        self._interval = float(interval)
        self._last_line: float | None = None
        self._last_step = -1
        self._last_shown: tuple[float, str] | None = None
        kwargs.update(file=_Discard(), mininterval=0, miniters=1, leave=True)
        super().__init__(iterable, **kwargs)

    def __iter__(self):  # tqdm's own loop skips update(); ours keeps the line schedule exact
        if self.disable:
            yield from self.iterable
            return
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def line(self) -> str:
        """The bar's state as one log line."""
        values = self.format_dict
        desc = values.get("prefix") or ""
        values["label"] = desc if not desc or desc.endswith(": ") else desc + ": "
        values["bar_format"] = _LINE_FORMAT if self.total else _OPEN_LINE_FORMAT
        return self.format_meter(**values).rstrip()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:  # tqdm clearing its line: a log has nothing to clear
            return True
        now = time.monotonic()
        step = self._step()
        closing = self.disable  # close() marks the bar disabled before its final display
        shown = (self.n, str(self.postfix or ""))
        if closing:
            due = shown != self._last_shown  # the end line, unless the last line said the same
        else:
            due = (
                self._last_line is None
                or now - self._last_line >= self._interval
                or (step is not None and step > self._last_step)
            )
        if not due:
            return True
        self._out.write(self.line() + "\n")
        self._out.flush()
        self._last_line, self._last_shown = now, shown
        if step is not None:
            self._last_step = step
        return True

    def _step(self) -> int | None:
        """Which `LOG_PERCENT` step the work is in; None without a total, and at the end (close says it)."""
        if not self.total or self.n >= self.total:
            return None
        return int(100 * self.n / self.total // LOG_PERCENT)
