"""Built-in token judge kinds, registered through the public ``register_judges`` hook.

``never``, ``always``, ``topk:K`` and ``prob:P`` are what ``--judge`` accepts besides a
judge artifact; ``linear`` is the kind of a trained artifact's judge (built from its
description, e.g. in a vLLM worker, never from a ``--judge`` string).
"""

from __future__ import annotations

from typing import Any

from autojudge.core.judge import AlwaysAccept, LinearJudge, NeverAccept, ProbThresholdJudge, TopKJudge
from autojudge.plugins.hookspecs import hookimpl


@hookimpl
def register_judges(register: Any) -> None:
    for cls in (NeverAccept, AlwaysAccept, TopKJudge, ProbThresholdJudge, LinearJudge):
        register(cls)
