"""The `aj` command's foundation: help, version, `aj tasks`, `aj plugins`, and the README's promises.

Written to keep passing as tasks and commands are added: it checks what must always hold
(the toy task, the built-in commands, well-formed output), never the complete lists.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from autojudge.cli import main as aj_main
from autojudge.plugins import manager

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def aj(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `aj` console script (the one next to this Python)."""
    script = Path(sys.executable).with_name("aj")
    assert script.is_file(), f"no `aj` console script next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k != manager.LOAD_PLUGINS_ENV}
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.fixture(scope="module")
def runner_cli():
    """The fully built `aj` group (built-in and plugin commands), for in-process calls."""
    return aj_main.build_cli()


def help_commands(help_text: str) -> list[str]:
    """Command names from the `Commands:` section of click's help text."""
    section = help_text.split("Commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)]


def test_help_lists_the_foundation_commands() -> None:
    proc = aj("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: aj ")
    commands = help_commands(proc.stdout)
    assert {"plugins", "tasks"} <= set(commands)
    assert len(commands) == len(set(commands))
    assert "Traceback" not in proc.stderr
    short = aj("-h")
    assert short.returncode == 0 and short.stdout == proc.stdout


def test_version_matches_the_installed_distribution() -> None:
    proc = aj("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"aj, version {version('ajspec')}"
    assert version("ajspec") != "0.0.0+unknown"


def test_unknown_command_fails() -> None:
    proc = aj("no-such-command")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


def test_main_module_runs_like_the_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autojudge.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"aj, version {version('ajspec')}"


def test_tasks_table_has_one_line_per_task() -> None:
    proc = aj("tasks")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    tasks = manager.get_tasks()
    assert len(lines) == len(tasks)  # no header, no wrapping: one line per task
    toy = [line for line in lines if line.split()[0] == "toy-arith"]
    assert len(toy) == 1 and tasks["toy-arith"].description in toy[0] and toy[0].endswith("[builtin:toy]")
    assert [line.split()[0] for line in lines] == sorted(tasks)


def test_tasks_json(runner_cli) -> None:
    result = CliRunner().invoke(runner_cli, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    names = [r["name"] for r in rows]
    assert "toy-arith" in names and names == sorted(names)
    for row in rows:
        assert {"name", "description", "plugin", "mining_split", "eval_split", "stop_sequences"} <= set(row)
        assert row["description"].strip() and "\n" not in row["description"], row
        assert row["plugin"] in manager.load_plugins().plugins


def test_every_task_description_is_one_line() -> None:
    for name, task in manager.get_tasks().items():
        assert isinstance(task.description, str) and task.description.strip(), name
        assert "\n" not in task.description, name


def test_plugins_json(runner_cli) -> None:
    result = CliRunner().invoke(runner_cli, ["plugins"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"plugins", "problems"}
    by_name = {p["name"]: p for p in out["plugins"]}
    toy = by_name["builtin:toy"]
    assert toy["source"] == "builtin" and toy["tasks"] == ["toy-arith"] and "register_tasks" in toy["hooks"]
    for plugin in out["plugins"]:
        assert set(plugin) == {
            "name",
            "source",
            "version",
            "hooks",
            "tasks",
            "commands",
            "judges",
            "drafters",
            "comparers",
        }
        assert len(plugin["commands"]) == len(set(plugin["commands"]))
    registered = {t for p in out["plugins"] for t in p["tasks"]}
    assert registered == set(manager.get_tasks())
    assert all(isinstance(p, str) for p in out["problems"])


def test_plugins_stdout_is_json_even_with_warnings() -> None:
    proc = aj("plugins")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr
    # warnings are printed as `aj: warning: ...`, not in Python's raw `file:line: Category: message` form
    assert not re.search(r"\.py:\d+: \w*Warning: ", proc.stderr), proc.stderr


def test_plugin_commands_appear_in_help() -> None:
    """`aj plugins` reports for each plugin the commands that `aj --help` shows."""
    out = json.loads(aj("plugins").stdout)
    commands = set(help_commands(aj("--help").stdout))
    for plugin in out["plugins"]:
        assert set(plugin["commands"]) <= commands, plugin
