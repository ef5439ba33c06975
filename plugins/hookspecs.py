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


@hookspec
def register_judges(register: Callable[[Any], None]) -> None:
    """Register token judge kinds: call ``register(judge_class)`` once per :class:`autojudge.core.judge.Judge` subclass.

    The class's ``kind`` names it in judge descriptions (``{"kind": ..., ...}``) and, when
    ``spec_form`` is set (``"mykind"`` or ``"mykind:ARG"``), on the command line
    (``--judge mykind:ARG`` calls ``judge_class.from_spec("ARG")``).
    """


@hookspec
def register_drafters(register: Callable[[Any], None]) -> None:
    """Register drafters: call ``register(drafter_class)`` once per :class:`autojudge.core.drafters.Drafter` subclass.

    The class's ``name`` is the registry name; ``get_drafter(name, *args, **kwargs)`` calls the class.
    """


@hookspec
def register_comparers(register: Callable[[Any], None]) -> None:
    """Register answer-comparison backends: call ``register(comparer)`` once per comparer.

    ``comparer`` is any object (a class, an instance, a factory) with a string attribute
    ``name``, its registry name; ``get_comparer(name)`` returns it as registered.
    """
