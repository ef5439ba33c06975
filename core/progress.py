"""The one progress display of long jobs (``aj run``'s decoding stages, mining): a rich bar on a
terminal, plain periodic lines otherwise.

``with ProgressLine("evaluate", total, unit="problems") as bar: bar.update(done, note="sd")``.
On a TTY (stderr) it shows a rich bar (done/total, note, elapsed, ETA). When stderr is not a
terminal (output sent to a file, a CI log) it prints at most one line every ``every`` seconds
(default 30, env ``AJ_PROGRESS_EVERY``) and one at the end, to stderr::

    [aj] evaluate: 12/100 problems (sd), 3.1 min elapsed, ETA 22 min

The ETA counts only work done since the display started (or since :meth:`ProgressLine.reset`):
items found done on disk (resumed rows, mined prompts) are shown as done but do not speed it up.
Limits: one display at a time; a plain line is printed only when :meth:`update` is called (no
timer thread), so a single item slower than ``every`` seconds shows no line until it finishes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

DEFAULT_EVERY = 30.0


def progress_every() -> float:
    """Seconds between plain progress lines: ``$AJ_PROGRESS_EVERY`` (default 30)."""
    try:
        return max(0.0, float(os.environ.get("AJ_PROGRESS_EVERY", DEFAULT_EVERY)))
    except ValueError:
        return DEFAULT_EVERY


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


class ProgressLine:
    """Progress of ``total`` items of ``unit`` called ``name``; a no-op when ``enabled`` is False.

    ``tty`` (default: ``stream.isatty()``) picks the rich bar; ``clock`` and ``stream`` are
    for tests. Use as a context manager; :meth:`update` sets the absolute count (and a ``note``,
    e.g. the current mode or a labels counter), :meth:`reset` sets a count that is not progress
    made now (kept out of the ETA).
    """

    def __init__(
        self,
        name: str,
        total: int,
        *,
        unit: str = "items",
        enabled: bool = True,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        eta_after: int = 1,
    ):
        self.name, self.total, self.unit, self.enabled = name, total, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = progress_every() if every is None else every
        self.clock = clock
        # items to finish before an ETA is shown: items done concurrently (a batch of rows) finish
        # at different times, so the first few say little about the rest
        self.eta_after = max(1, eta_after)
        self.done, self.note = 0, ""
        self._bar: Any = None
        self._job: Any = None
        self._start = self._base_time = 0.0
        self._base_done = 0
        self._last_line: float | None = None
        self._printed: int | None = None  # the count of the last plain line

    # -- context -------------------------------------------------------------------------------
    def __enter__(self) -> ProgressLine:
        self._start = self._base_time = self.clock()
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )  # fmt: skip

            self._bar = Progress(
                TextColumn(f"[bold]{self.name}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{self.unit} {{task.fields[note]}}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=Console(file=self.stream, stderr=self.stream is sys.stderr),
            )  # fmt: skip
            self._bar.__enter__()
            self._job = self._bar.add_task(self.name, total=self.total, note="")
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif (
            self.enabled
            and self._printed != self.done
            and (self._printed is not None or self.done > self._base_done)
        ):
            self._line()  # the final state, unless already printed (or nothing was done)
        return False

    # -- updates -------------------------------------------------------------------------------
    def reset(self, done: int, total: int | None = None, note: str = "") -> None:
        """Set ``done`` without counting it as progress made now (work found on disk)."""
        self.done, self.note = done, note
        self.total = self.total if total is None else total
        self._base_done, self._base_time = done, self.clock()
        if self._bar is not None:
            self._bar.reset(self._job, completed=done, total=self.total, note=note)

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """``done`` items finished so far (absolute); ``note`` is shown after the unit."""
        self.done, self.note = done, note
        self.total = self.total if total is None else total
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._job, completed=done, total=self.total, note=note)
            return
        now = self.clock()
        if now - (self._start if self._last_line is None else self._last_line) >= self.every:
            self._line(now)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate since the start (or the last :meth:`reset`); None before ``eta_after``
        items were made."""
        now = self.clock() if now is None else now
        made = self.done - self._base_done
        if made < self.eta_after or now <= self._base_time:
            return None
        return (now - self._base_time) / made * max(0, self.total - self.done)

    def line(self, now: float | None = None) -> str:
        """The plain progress line of the current state."""
        now = self.clock() if now is None else now
        eta = self.eta(now)
        note = f" ({self.note})" if self.note else ""
        return (
            f"[aj] {self.name}: {self.done}/{self.total} {self.unit}{note}, "
            f"{_minutes(now - self._start)} elapsed, ETA {'?' if eta is None else _minutes(eta)}"
        )

    def _line(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._last_line, self._printed = now, self.done
        print(self.line(now), file=self.stream, flush=True)
