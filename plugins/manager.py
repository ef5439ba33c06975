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
  the second yields a warning. The same holds for judge kinds, drafters and comparers.

Registries besides tasks (one hook each, the same care):

* judge kinds (``register_judges``): :class:`~autojudge.core.judge.Judge` subclasses
  by ``kind``. :func:`judge_from_spec` builds the judge a ``--judge`` string names
  (``never``, ``topk:3``, a plugin's ``mykind:ARG``); :func:`judge_from_description`
  rebuilds a judge from its :meth:`~autojudge.core.judge.Judge.describe` output (how
  the vLLM backend ships a judge to its workers). Artifact files are resolved one
  floor up, by ``autojudge.judges.spec.load_judge_spec``.
* drafters (``register_drafters``): :class:`~autojudge.core.drafters.Drafter`
  subclasses by ``name``; :func:`get_drafter` instantiates one.
* comparers (``register_comparers``): answer-comparison backends, any object with a
  ``name``; :func:`get_comparer` returns it as registered.

Named datasets (``--dataset``): a registered task may offer several data sets by
setting ``datasets`` (a tuple of names), optionally ``default_dataset``, and a
method ``for_dataset(name) -> Task`` returning the task for that data set (its
own name and ``info()``, so mined data and runs record the resolved task).
:func:`get_task` resolves ``dataset`` through it; a task without ``datasets``
accepts no ``dataset``. :class:`UnknownDatasetError` lists the valid values.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from autojudge.core.drafters import Drafter
from autojudge.core.judge import Judge
from autojudge.core.task import TASK_NAME_RE, Task, TaskValidationError, validate_task
from autojudge.plugins import hookspecs

LOAD_PLUGINS_ENV = "AJ_LOAD_PLUGINS"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

#: module paths of the plugins that ship with autojudge
BUILTIN_PLUGINS: tuple[str, ...] = (
    "autojudge.plugins.judges",
    "autojudge.plugins.drafters",
    "autojudge.plugins.comparers",
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


class UnknownNameError(KeyError):
    """No registered judge kind, drafter or comparer has the requested name (the message lists them)."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Malformed(ValueError):
    """A registration the manager refuses (the message says why)."""


@dataclass
class PluginInfo:
    name: str
    source: str  # "builtin" or the distribution name
    version: str | None
    hooks: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    drafters: list[str] = field(default_factory=list)
    comparers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "hooks": self.hooks,
            "tasks": self.tasks,
            "commands": self.commands,
            "judges": self.judges,
            "drafters": self.drafters,
            "comparers": self.comparers,
        }


@dataclass
class PluginRegistry:
    """Everything the loaded plugins registered."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    task_owner: dict[str, str] = field(default_factory=dict)
    judges: dict[str, type[Judge]] = field(default_factory=dict)  # by kind
    judge_owner: dict[str, str] = field(default_factory=dict)
    drafters: dict[str, type[Drafter]] = field(default_factory=dict)
    drafter_owner: dict[str, str] = field(default_factory=dict)
    comparers: dict[str, Any] = field(default_factory=dict)
    comparer_owner: dict[str, str] = field(default_factory=dict)
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


def _collect(
    reg: PluginRegistry,
    hook: str,
    what: str,
    validate: Callable[[Any], tuple[str, Any]],
    store: dict[str, Any],
    owner: dict[str, str],
    info_attr: str,
) -> None:
    """Call every plugin's ``hook(register)``; keep valid registrations, first name wins, warn otherwise."""
    for impl in getattr(reg.pm.hook, hook).get_hookimpls():  # registration order: built-ins first
        plugin = impl.plugin_name

        def register(obj: Any, _plugin: str = plugin) -> None:
            try:
                name, obj = validate(obj)
            except (_Malformed, TaskValidationError) as e:
                reg.warn(f"plugin {_plugin!r} registered a malformed {what}: {e}")
                return
            if name in store:
                reg.warn(
                    f"plugin {_plugin!r} registered {what} {name!r}, already registered by "
                    f"{owner[name]!r}; keeping the first"
                )
                return
            store[name] = obj
            owner[name] = _plugin
            info = reg.plugins.get(_plugin)
            if info is not None:
                getattr(info, info_attr).append(name)

        try:
            impl.function(register=register)
        except Exception as e:
            reg.warn(f"plugin {plugin!r} failed in {hook}: {type(e).__name__}: {e}")


def _valid_name(what: str, label: str, name: Any) -> str:
    if not isinstance(name, str) or not TASK_NAME_RE.match(name):
        raise _Malformed(
            f"{label} has an invalid {what} {name!r}: use lowercase letters, digits, '_', '-', '.' "
            f"(regex {TASK_NAME_RE.pattern})"
        )
    return name


def _registered_class(obj: Any, base: type, hook: str) -> type:
    if not isinstance(obj, type):
        got = f"an instance of {type(obj).__name__}" if isinstance(obj, base) else f"got {type(obj).__name__}"
        raise _Malformed(
            f"{hook} expects a subclass of {base.__module__}.{base.__name__} (the class itself), {got}"
        )
    if not issubclass(obj, base):
        raise _Malformed(f"{obj.__name__} is not a subclass of {base.__module__}.{base.__name__}")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise _Malformed(f"{obj.__name__} is abstract (implement {missing})")
    return obj


def _validate_task(obj: Any) -> tuple[str, Task]:
    task = validate_task(obj)
    return task.name, task


def _validate_judge(obj: Any) -> tuple[str, type[Judge]]:
    cls = _registered_class(obj, Judge, "register_judges")
    kind = _valid_name("kind", f"judge {cls.__name__}", getattr(cls, "kind", None))
    form = getattr(cls, "spec_form", None)
    if form is not None and (
        not isinstance(form, str)
        or not (form == kind or (form.startswith(kind + ":") and len(form) > len(kind) + 1))
    ):
        raise _Malformed(
            f"judge {cls.__name__} (kind {kind!r}) has spec_form {form!r}: use {kind!r}, {kind + ':ARG'!r} or None"
        )
    return kind, cls


def _validate_drafter(obj: Any) -> tuple[str, type[Drafter]]:
    cls = _registered_class(obj, Drafter, "register_drafters")
    return _valid_name("name", f"drafter {cls.__name__}", getattr(cls, "name", None)), cls


def _validate_comparer(obj: Any) -> tuple[str, Any]:
    if obj is None:
        raise _Malformed("register_comparers expects a comparer with a 'name', got None")
    label = f"comparer {getattr(obj, '__name__', type(obj).__name__)}"
    return _valid_name("name", label, getattr(obj, "name", None)), obj


def _collect_all(reg: PluginRegistry) -> None:
    _collect(reg, "register_tasks", "task", _validate_task, reg.tasks, reg.task_owner, "tasks")
    _collect(reg, "register_judges", "judge kind", _validate_judge, reg.judges, reg.judge_owner, "judges")
    _collect(
        reg, "register_drafters", "drafter", _validate_drafter, reg.drafters, reg.drafter_owner, "drafters"
    )
    _collect(
        reg,
        "register_comparers",
        "comparer",
        _validate_comparer,
        reg.comparers,
        reg.comparer_owner,
        "comparers",
    )


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
        _collect_all(reg)
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


# -- judge kinds, drafters, comparers ------------------------------------------------------------


def _lookup(store: Mapping[str, Any], name: str, what: str, hook: str) -> Any:
    if name not in store:
        known = ", ".join(sorted(store)) or "(none)"
        raise UnknownNameError(
            f"unknown {what} {name!r}. Registered: {known}. Plugins add more through {hook}; "
            f"`aj plugins` lists them and shows plugins that failed to load."
        )
    return store[name]


def get_judge_kinds() -> dict[str, type[Judge]]:
    """Every registered judge class by kind (``never``, ``always``, ``topk``, ``prob``, ``linear``, ...)."""
    return dict(load_plugins().judges)


def get_judge_kind(kind: str) -> type[Judge]:
    """The judge class registered as ``kind``; :class:`UnknownNameError` lists the known kinds."""
    return _lookup(load_plugins().judges, kind, "judge kind", "register_judges")


def judge_spec_forms() -> tuple[str, ...]:
    """How ``--judge`` strings name the registered kinds: ``("never", "always", "topk:K", "prob:P", ...)``."""
    return tuple(cls.spec_form for cls in load_plugins().judges.values() if cls.spec_form is not None)


def judge_from_spec(spec: str) -> Judge | None:
    """The judge a ``--judge`` string names through a registered kind, or None when it names none.

    ``KIND`` matches a kind whose ``spec_form`` has no argument, ``KIND:ARG`` one whose form
    has one (kinds compare case-insensitively); anything else (an artifact path) is None.
    A bad ``ARG`` raises ``ValueError("bad judge spec ...")``.
    """
    kind, sep, arg = spec.strip().partition(":")
    cls = load_plugins().judges.get(kind.strip().lower())
    if cls is None or cls.spec_form is None or bool(sep) != (":" in cls.spec_form):
        return None
    try:
        judge = cls.from_spec(arg.strip() if sep else None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad judge spec {spec!r}: {e}") from e
    if not isinstance(judge, Judge):
        raise TypeError(f"{cls.__name__}.from_spec returned {type(judge).__name__}, not a Judge")
    return judge


def judge_from_description(description: Mapping[str, Any], *, device: Any = None) -> Judge:
    """Rebuild a judge from :meth:`Judge.describe`'s output through the registry (on ``device`` when given).

    The one way any backend turns a description back into a judge. An unknown ``kind`` (for
    a plugin's kind: the plugin is not installed here) or a malformed description raises
    ``ValueError``.
    """
    if not isinstance(description, Mapping):
        raise ValueError(
            f"a judge description is a JSON object with a 'kind', got {type(description).__name__}"
        )
    kind = description.get("kind")
    judges = load_plugins().judges
    if not isinstance(kind, str) or kind not in judges:
        known = ", ".join(sorted(judges)) or "(none)"
        raise ValueError(
            f"judge description of unknown kind {kind!r}; registered kinds: {known} "
            "(a plugin's kind needs the plugin installed where the judge is rebuilt)"
        )
    cls = judges[kind]
    try:
        judge = cls.from_description(description)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"bad {kind!r} judge description: {e}") from e
    if not isinstance(judge, Judge):
        raise TypeError(f"{cls.__name__}.from_description returned {type(judge).__name__}, not a Judge")
    if device is not None and callable(getattr(judge, "to", None)):
        moved = judge.to(device)
        judge = moved if isinstance(moved, Judge) else judge
    return judge


def get_drafters() -> dict[str, type[Drafter]]:
    """Every registered drafter class by name (``draft-model``, ``lookup``, ``none``, ...)."""
    return dict(load_plugins().drafters)


def get_drafter(name: str, *args: Any, **kwargs: Any) -> Drafter:
    """A new drafter of the class registered as ``name``, called with ``args``/``kwargs``."""
    return _lookup(load_plugins().drafters, name, "drafter", "register_drafters")(*args, **kwargs)


def get_comparers() -> dict[str, Any]:
    """Every registered answer-comparison backend by name."""
    return dict(load_plugins().comparers)


def get_comparer(name: str) -> Any:
    """The comparer registered as ``name`` (as registered); :class:`UnknownNameError` lists the known ones."""
    return _lookup(load_plugins().comparers, name, "comparer", "register_comparers")
