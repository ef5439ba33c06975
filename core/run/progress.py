"""What ``aj run`` shows while it works: one console line per stage event, a progress bar per decoding stage.

:func:`stage_message` words the ``start``/``skip``/``done`` events of
:meth:`autojudge.core.run.pipeline.Pipeline.run` (rich markup, printed on the console the
pipeline was given); :class:`DecodeProgress` is the progress of the ``select`` and
``evaluate`` stages (problem rows done, current mode, elapsed time, ETA) on stderr: a rich bar
on a terminal, plain periodic lines otherwise (:mod:`autojudge.core.progress`).
Limits: one bar at a time; rows found on disk are shown as done but kept out of the ETA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autojudge.core.progress import ProgressLine


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
    """Progress of one decoding stage, per problem (rich bar on a TTY, else plain periodic lines).

    ``with DecodeProgress(enabled, name, total) as update:`` gives the ``progress(done, total, mode)``
    callback of :func:`autojudge.core.run.evaluate.evaluate_modes` (``total`` counts problem x mode
    rows); the display is :class:`autojudge.core.progress.ProgressLine`.
    """

    def __init__(self, enabled: bool, name: str, total: int, *, batch: int = 1):
        # ``batch`` rows decode at once: no ETA until that many finished (the first finish early)
        self.line = ProgressLine(name, total, unit="problem-mode rows", enabled=enabled, eta_after=batch)

    def __enter__(self) -> Callable[[int, int, str], None]:
        self.line.__enter__()

        def update(done: int, total: int, mode: str) -> None:
            if not mode:  # rows found on disk: not progress made now, keep them out of the ETA
                self.line.reset(done, total)
            else:
                self.line.update(done, total, note=mode)

        return update

    def __exit__(self, *exc: Any) -> bool:
        return self.line.__exit__(*exc)
