"""Hook specifications: the whole public plugin API of autojudge.

A plugin is a module (or object) with functions decorated by
``autojudge.plugins.hookimpl`` whose names match the hooks below. Third-party
packages expose it through an entry point in the ``autojudge`` group::

    [project.entry-points.autojudge]
    mytask = "autojudge_mytask"

Built-in plugins are registered through exactly these hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "autojudge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_tasks(register: Callable[[Any], None]) -> None:
    """Register tasks: call ``register(task)`` once per :class:`autojudge.core.task.Task` instance."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``aj`` click group ``cli`` (``@cli.command()`` or ``cli.add_command``)."""
