"""The ``aj`` command: a thin layer over the library.

Each sub-command lives in its own module under ``autojudge.cli`` and is added
to :data:`cli` here; plugins add theirs through the ``register_commands`` hook.
"""

from __future__ import annotations

import json
import sys
import warnings

import click

from autojudge.core import __version__
from autojudge.plugins import manager


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
    label = "plugin warning" if issubclass(category, manager.PluginWarning) else "warning"
    print(f"aj: {label}: {message}", file=sys.stderr)


#: the project's own errors that are the user's to fix: `aj` prints their message, no traceback
#: (module, class name); imported only when a command raised something
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("autojudge.core.run.errors", "PipelineError"),
    ("autojudge.core.compare.pool", "PoolBrokenError"),
    ("autojudge.core.data", "DatasetNotFoundError"),
    ("autojudge.core.mining.store", "MinedDataError"),
    ("autojudge.core.models", "ModelNotFoundError"),
    ("autojudge.core.models", "IncompatibleModelsError"),
    ("autojudge.core.presets", "PresetError"),
    ("autojudge.core.runner", "UnsupportedModelError"),
    ("autojudge.judges.artifact", "JudgeArtifactError"),
    ("autojudge.judges.spec", "JudgeSpecError"),
    ("autojudge.plugins.manager", "UnknownTaskError"),
    ("autojudge.plugins.manager", "UnknownDatasetError"),
    ("autojudge.plugins.manager", "UnknownNameError"),
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The classes of :data:`USER_ERRORS` (those whose module imports here)."""
    import importlib

    found = []
    for module, name in USER_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # pragma: no cover - a broken install shows its traceback
            continue
    return tuple(found)


def user_error_message(e: BaseException) -> str:
    """The message of a user error (a KeyError subclass's ``str`` would quote it)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


class AjGroup(click.Group):
    """Lists commands in the order they were added, so `aj --help` reads like the pipeline.

    Every command runs through :meth:`invoke`, which turns the project's own user errors
    (:data:`USER_ERRORS`) into one ``Error: ...`` line and exit status 1, without a traceback.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as e:
            if isinstance(e, user_error_types()):
                raise click.ClickException(user_error_message(e)) from e
            raise


@click.group(cls=AjGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="aj")
def cli() -> None:
    """autojudge: task-specific lossy speculative decoding.

    Mine which draft/target mismatches change a task's answer, train a tiny
    judge on the models' hidden states, and decode faster by accepting the
    mismatches it calls unimportant.
    """


@cli.command()
def plugins() -> None:
    """Print installed plugins and what each registers, as JSON."""
    reg = manager.load_plugins()
    manager.register_commands(click.Group())  # count each plugin's commands without touching `aj`
    out = {"plugins": manager.plugins_info(), "problems": reg.problems}
    click.echo(json.dumps(out, indent=2))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def tasks(as_json: bool) -> None:
    """List registered tasks with a one-line description."""
    reg = manager.load_plugins()
    rows = [{**t.info(), "plugin": reg.task_owner[name]} for name, t in sorted(reg.tasks.items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['description']}  [{r['plugin']}]")


def _add_builtin_commands() -> None:
    """Sub-commands shipped with autojudge, imported lazily so `aj --help` stays fast."""
    from autojudge.cli import commands

    for command in commands.all_commands():
        cli.add_command(command)


def build_cli() -> click.Group:
    _add_builtin_commands()
    manager.register_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning
    build_cli()
    cli.main(args=argv, prog_name="aj")


if __name__ == "__main__":  # pragma: no cover
    main()
