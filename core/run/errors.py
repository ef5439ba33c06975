"""The one error of ``aj run`` (:mod:`autojudge.core.run.pipeline` re-exports it).

A module of its own so that both the stages (:mod:`autojudge.core.run.stages`) and the loop
that runs them (:mod:`autojudge.core.run.pipeline`) raise it without importing each other.
"""

from __future__ import annotations


class PipelineError(RuntimeError):
    """The run cannot go on; the message says what to change."""
