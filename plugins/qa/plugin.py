"""Built-in plugin ``builtin:qa``: registers the ``qa`` task through the public hook.

Construction is cheap: no data is read and no comparing model is loaded until used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autojudge.plugins.hookspecs import hookimpl
from autojudge.plugins.qa.task import QATask


@hookimpl
def register_tasks(register: Callable[[Any], None]) -> None:
    register(QATask())
