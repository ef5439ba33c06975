"""The plugin manager: loads built-in and entry-point plugins and collects what they register.

Loading rules:

* Built-in plugins (:data:`BUILTIN_PLUGINS`) always load, through the same hooks
  as third-party ones.
* Third-party plugins are the entry points of group ``autojudge``. The
  environment variable ``AJ_LOAD_PLUGINS`` restricts them: a comma-separated
  list of entry-point or distribution names; set but empty loads none.
* A plugin that fails to import, raises inside a hook, or registers something
  malformed yields a :class:`PluginWarning` naming it; the others still load.
  The problems are kept in :attr:`PluginRegistry.problems` for ``aj plugins``.
* Two tasks with one name: the first registered wins (built-ins come first) and
  the second yields a warning.

Named datasets (``--dataset``): a registered task may offer several data sets by
setting ``datasets`` (a tuple of names), optionally ``default_dataset``, and a
method ``for_dataset(name) -> Task`` returning the task for that data set (its
own name and ``info()``, so mined data and runs record the resolved task).
:func:`get_task` resolves ``dataset`` through it; a task without ``datasets``
accepts no ``dataset``. :class:`UnknownDatasetError` lists the valid values.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from autojudge.core.task import Task, TaskValidationError, validate_task
from autojudge.plugins import hookspecs

LOAD_PLUGINS_ENV = "AJ_LOAD_PLUGINS"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

#: module paths of the plugins that ship with autojudge
BUILTIN_PLUGINS: tuple[str, ...] = (
    "autojudge.plugins.toy",
    "autojudge.plugins.math.plugin",
    "autojudge.plugins.qa.plugin",
    "autojudge.plugins.code.plugin",
)


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered something malformed."""


class UnknownTaskError(KeyError):
    """No registered task has the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass
class PluginInfo:
    name: str
    source: str  # "builtin" or the distribution name
    version: str | None
    hooks: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "hooks": self.hooks,
            "tasks": self.tasks,
            "commands": self.commands,
        }


@dataclass
class PluginRegistry:
    """Everything the loaded plugins registered."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    task_owner: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message in self.problems:  # e.g. a hook that fails each time `aj plugins` runs it
            return
        self.problems.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)


def _normalize(name: str) -> str:
    """PEP 503 form of a distribution or entry-point name: ``Autojudge_Example`` == ``ajspec-example``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _allowed_external() -> set[str] | None:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {_normalize(s.strip()) for s in raw.split(",") if s.strip()}


def _load_builtins(reg: PluginRegistry) -> None:
    for modname in BUILTIN_PLUGINS:
        short = "builtin:" + modname.rsplit(".", 2)[-2 if modname.endswith(".plugin") else -1]
        try:
            module = importlib.import_module(modname)
        except Exception as e:  # a broken built-in must not take down the rest
            reg.warn(f"built-in plugin {short} ({modname}) failed to import: {type(e).__name__}: {e}")
            continue
        reg.pm.register(module, name=short)
        reg.plugins[short] = PluginInfo(name=short, source="builtin", version=None)


def _load_entry_points(reg: PluginRegistry) -> None:
    allowed = _allowed_external()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if (
            allowed is not None
            and _normalize(ep.name) not in allowed
            and (dist is None or _normalize(dist) not in allowed)
        ):
            continue
        if reg.pm.has_plugin(ep.name) or ep.name in reg.plugins:
            reg.warn(f"plugin {ep.name!r} from {dist} skipped: a plugin with that name is already loaded")
            continue
        try:
            obj = ep.load()
        except (Exception, SystemExit) as e:  # a plugin calling sys.exit() on import must not end `aj`
            reg.warn(
                f"plugin {ep.name!r} (distribution {dist}, entry point {ep.value!r}) failed to import: "
                f"{type(e).__name__}: {e}. Other plugins are unaffected; "
                f"exclude it with {LOAD_PLUGINS_ENV}=<names to load> or uninstall {dist}."
            )
            continue
        try:
            reg.pm.register(obj, name=ep.name)
        except Exception as e:  # pluggy validates hook names/signatures here
            reg.warn(f"plugin {ep.name!r} (distribution {dist}) is malformed: {type(e).__name__}: {e}")
            continue
        _check_hooks(reg, ep.name, obj, dist)
        version = ep.dist.version if ep.dist is not None else None
        reg.plugins[ep.name] = PluginInfo(name=ep.name, source=dist or "unknown", version=version)


def _check_hooks(reg: PluginRegistry, name: str, plugin: object, dist: str | None) -> None:
    """Warn about a plugin that implements no hook or misspells one (pluggy ignores both silently)."""
    callers = reg.pm.get_hookcallers(plugin) or []
    unknown = sorted(hc.name for hc in callers if hc.spec is None)
    known = sorted(n for n, hc in vars(reg.pm.hook).items() if isinstance(hc, pluggy.HookCaller) and hc.spec)
    if unknown:
        reg.warn(
            f"plugin {name!r} (distribution {dist}) implements unknown hook(s) {', '.join(unknown)}; "
            f"autojudge hooks are: {', '.join(known)}"
        )
    elif not callers:
        reg.warn(
            f"plugin {name!r} (distribution {dist}) implements no autojudge hook: decorate its functions "
            f"with autojudge.plugins.hookimpl (hooks: {', '.join(known)})"
        )


def _collect_tasks(reg: PluginRegistry) -> None:
    for impl in reg.pm.hook.register_tasks.get_hookimpls():  # registration order: built-ins first
        plugin = impl.plugin_name

        def register(task: Any, _plugin: str = plugin) -> None:
            try:
                task = validate_task(task)
            except TaskValidationError as e:
                reg.warn(f"plugin {_plugin!r} registered a malformed task: {e}")
                return
            if task.name in reg.tasks:
                reg.warn(
                    f"plugin {_plugin!r} registered task {task.name!r}, already registered by "
                    f"{reg.task_owner[task.name]!r}; keeping the first"
                )
                return
            reg.tasks[task.name] = task
            reg.task_owner[task.name] = _plugin
            reg.plugins[_plugin].tasks.append(task.name)

        try:
            impl.function(register=register)
        except Exception as e:
            reg.warn(f"plugin {plugin!r} failed in register_tasks: {type(e).__name__}: {e}")


def _record_hooks(reg: PluginRegistry) -> None:
    for name, info in reg.plugins.items():
        plugin = reg.pm.get_plugin(name)
        if plugin is None:
            continue
        info.hooks = sorted(h.name for h in reg.pm.get_hookcallers(plugin) or [])


_lock = threading.Lock()
_registry: PluginRegistry | None = None


def load_plugins(*, reload: bool = False) -> PluginRegistry:
    """Load every plugin once per process (``reload=True`` starts over, e.g. after changing the env)."""
    global _registry
    with _lock:
        if _registry is not None and not reload:
            return _registry
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        reg = PluginRegistry(pm=pm)
        _load_builtins(reg)
        _load_entry_points(reg)
        _record_hooks(reg)
        _collect_tasks(reg)
        _registry = reg
        return reg


class UnknownDatasetError(ValueError):
    """The task does not offer the requested dataset (or offers none); the message lists the valid ones."""


def task_datasets(task: Task) -> tuple[str, ...]:
    """The dataset names ``task`` offers for ``--dataset`` (empty for most tasks)."""
    names = getattr(task, "datasets", ())
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
        return ()
    return tuple(names)


def get_tasks() -> dict[str, Task]:
    """All registered tasks by name."""
    return dict(load_plugins().tasks)


def get_task(name: str, dataset: str | None = None) -> Task:
    """The task called ``name``, resolved to ``dataset`` when the task offers datasets.

    :class:`UnknownTaskError` lists the known tasks when ``name`` is not one. A task with
    ``datasets`` resolves to ``task.for_dataset(dataset or task.default_dataset)``; a
    dataset it does not offer, or any ``dataset`` for a task without datasets, raises
    :class:`UnknownDatasetError` naming the valid values.
    """
    tasks = load_plugins().tasks
    if name not in tasks:
        known = ", ".join(sorted(tasks)) or "(none)"
        raise UnknownTaskError(
            f"unknown task {name!r}. Registered tasks: {known}. "
            f"`aj tasks` lists them; `aj plugins` shows plugins that failed to load."
        )
    task = tasks[name]
    choices = task_datasets(task)
    if not choices:
        if dataset is not None:
            offering = sorted(n for n, t in tasks.items() if task_datasets(t))
            raise UnknownDatasetError(
                f"task {name!r} has no datasets to choose from, so --dataset {dataset!r} does not apply; "
                f"tasks with datasets: {', '.join(offering) or '(none)'}"
            )
        return task
    chosen = dataset if dataset is not None else (getattr(task, "default_dataset", None) or choices[0])
    if chosen not in choices:
        raise UnknownDatasetError(
            f"task {name!r} has no dataset {chosen!r}; valid datasets: {', '.join(choices)}"
        )
    return validate_task(task.for_dataset(chosen))


def register_commands(cli: Any) -> None:
    """Let every plugin add commands to ``cli``; a failing plugin yields a warning only."""
    reg = load_plugins()
    for impl in reg.pm.hook.register_commands.get_hookimpls():  # registration order: built-ins first
        before = dict(getattr(cli, "commands", {}))
        try:
            impl.function(cli=cli)
        except Exception as e:
            reg.warn(f"plugin {impl.plugin_name!r} failed in register_commands: {type(e).__name__}: {e}")
            continue
        info = reg.plugins.get(impl.plugin_name)
        own = info.commands if info is not None else []
        after = getattr(cli, "commands", {})
        for name, command in before.items():  # like tasks: the first registration of a name wins
            if after.get(name) is not command and name not in own:
                reg.warn(f"plugin {impl.plugin_name!r} replaced the command {name!r}; keeping the original")
                after[name] = command
        # `aj plugins` and repeated `main()` calls run the hook again: record each command once
        own.extend(c for c in sorted(set(after) - set(before)) if c not in own)


def plugins_info() -> list[dict[str, Any]]:
    """JSON-ready description of each loaded plugin and what it registered."""
    return [info.as_dict() for info in load_plugins().plugins.values()]
