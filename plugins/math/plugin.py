"""Built-in plugin ``builtin:math``: registers ``gsm8k``, ``gsm8k-8shot`` and ``math500``.

It uses only the public hook, exactly like a third-party ``ajspec-<task>``
package would. Construction is cheap: no data is read until ``load``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autojudge.plugins.hookspecs import hookimpl
from autojudge.plugins.math.gsm8k import GSM8K8ShotTask, GSM8KTask
from autojudge.plugins.math.math500 import Math500Task


@hookimpl
def register_tasks(register: Callable[[Any], None]) -> None:
    register(GSM8KTask())
    register(GSM8K8ShotTask())
    register(Math500Task())
