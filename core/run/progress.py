"""What ``aj run`` shows while it works: one console line per stage event, a progress bar per decoding stage.

:func:`stage_message` words the ``start``/``skip``/``done`` events of
:meth:`autojudge.core.run.pipeline.Pipeline.run` (rich markup, printed on the console the
pipeline was given); :class:`DecodeProgress` is the bar of the ``select`` and
``evaluate`` stages (samples done, current mode, elapsed time, ETA) on stderr.
Limits: one bar at a time; rows found on disk are shown as done but kept out of the ETA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def stage_message(kind: str, stage: str, number: int, total: int, info: dict[str, Any]) -> str | None:
    """The console line of one stage event (``number`` counts from 1); None for an unknown ``kind``."""
    if kind == "skip":
        return f"[dim]stage {number}/{total} {stage}: cached (inputs unchanged), skipped[/]"
    if kind == "start":
        return f"[bold]stage {number}/{total} {stage}[/]"
    if kind == "done":
        return f"stage {number}/{total} {stage}: done in {info['seconds']:.1f}s"
    return None


class DecodeProgress:
    """A rich progress bar (items, elapsed, ETA) for one decoding stage; a no-op when disabled.

    ``with DecodeProgress(enabled, name, total) as update:`` gives the ``progress(done, total, mode)``
    callback of :func:`autojudge.core.run.evaluate.evaluate_modes`.
    """

    def __init__(self, enabled: bool, name: str, total: int):
        self.enabled, self.name, self.total = enabled, name, total
        self.bar = None

    def __enter__(self) -> Callable[[int, int, str], None]:
        if not self.enabled:
            return lambda done, total, mode: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )  # fmt: skip

        self.bar = Progress(
            TextColumn(f"[bold]{self.name}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples | {task.fields[mode]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
        )  # fmt: skip
        self.bar.__enter__()
        job = self.bar.add_task(self.name, total=self.total, mode="")

        def update(done: int, total: int, mode: str) -> None:
            if not mode:  # rows found on disk: not progress made now, keep them out of the ETA
                self.bar.reset(job, completed=done, total=total, mode="")
            else:
                self.bar.update(job, completed=done, total=total, mode=mode)

        return update

    def __exit__(self, *exc: Any) -> bool:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
