"""Packaging: `pip install .` and `pip install -e .` both work, ship every file, and install nothing generic.

The slow tests build fresh virtual environments in a temporary folder. To need no download,
each fresh environment sees this environment's site-packages through a ``.pth`` file
(dependencies and build tools come from there) and installs only autojudge (and the example
plugin) with ``--no-deps --no-build-isolation``. The repository is copied first, so builds
never write into the working tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
EXAMPLE_PLUGIN = REPO / "tests" / "plugins" / "ajspec-example"
README = REPO / "README.md"
#: names that must never be importable as top-level packages after installing autojudge
GENERIC = ("core", "cli", "judges", "plugins", "sandbox", "tests", "bench", "docs")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")


def source_packages() -> dict[str, Path]:
    """Every package in the source tree (a folder with an ``__init__.py``) by its installed dotted name."""
    found: dict[str, Path] = {}
    for top, folder in PACKAGE_DIR.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(root)
            found[".".join([top, *rel.parts])] = init.parent
    return found


def source_files() -> set[str]:
    """Paths (relative to site-packages) that an installed copy must contain: every non-cache file."""
    files: set[str] = set()
    for top, folder in PACKAGE_DIR.items():
        root = REPO / folder
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add("/".join([*top.split("."), *path.relative_to(root).parts]))
    return files


# -- fast checks of the configuration ------------------------------------------------------------


def test_every_package_is_listed_in_pyproject() -> None:
    """A folder with an __init__.py that is missing from `packages` would silently vanish from wheels."""
    listed = set(SETUPTOOLS["packages"])
    found = set(source_packages())
    assert found - listed == set(), f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    assert listed - found == set(), f"listed in pyproject.toml but no such package folder: {sorted(listed - found)}"


def test_package_dir_maps_only_autojudge_subpackages() -> None:
    for name, folder in PACKAGE_DIR.items():
        assert name.startswith("autojudge.") and name.count(".") == 1, name
        assert (REPO / folder / "__init__.py").is_file(), folder
    assert all(p.startswith("autojudge.") for p in SETUPTOOLS["packages"])
    assert "autojudge" not in SETUPTOOLS["packages"]  # a namespace package: no autojudge/__init__.py


def test_non_python_files_are_package_data() -> None:
    """Data files inside packages must match a package-data pattern, or wheels drop them."""
    patterns: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    missing = []
    for package, folder in source_packages().items():
        for path in folder.iterdir():
            if not path.is_file() or path.suffix in (".py", ".pyc"):
                continue
            globs = patterns.get(package, []) + patterns.get("*", [])
            if not any(path.match(g) for g in globs):
                missing.append(f"{package}: {path.name}")
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"


def test_console_script_and_entry_point_group() -> None:
    assert PYPROJECT["project"]["scripts"] == {"aj": "autojudge.cli.main:main"}
    example = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text(encoding="utf-8"))
    assert example["project"]["entry-points"]["autojudge"] == {"example": "ajspec_example"}


# -- fresh virtual environments --------------------------------------------------------------------


def copy_repo(dest: Path) -> Path:
    """The files a build needs, copied so builds leave the working tree alone."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for folder in PACKAGE_DIR.values():
        shutil.copytree(REPO / folder, dest / folder, ignore=IGNORED)
    return dest


def make_venv(path: Path) -> Path:
    """A venv without pip whose Python also sees this environment's site-packages (after its own)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(own) / "_autojudge_test_parent.pth").write_text("\n".join(sorted(parent)) + "\n", encoding="utf-8")
    return python


def pip_install(python: Path, *args: str) -> None:
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
         "--no-index", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def run_in(venv_python: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command from ``cwd`` (outside the repository) with a clean plugin environment."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AJ_LOAD_PLUGINS")}
    full_env.update(env)
    bindir = venv_python.parent
    cmd = [str(bindir / args[0]), *args[1:]] if (bindir / args[0]).exists() else list(args)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=full_env, check=False)


PROBE = r"""
import importlib, importlib.util, json, sys, sysconfig
names = json.loads(sys.argv[1])
files = {n: importlib.import_module(n).__file__ for n in names}
generic = [n for n in json.loads(sys.argv[2]) if importlib.util.find_spec(n) is not None]
print(json.dumps({"files": files, "generic": generic, "purelib": sysconfig.get_paths()["purelib"]}))
"""


def probe(python: Path, cwd: Path) -> dict:
    proc = run_in(python, cwd, str(python), "-c", PROBE, json.dumps(sorted(source_packages())), json.dumps(GENERIC))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_aj(python: Path, cwd: Path) -> None:
    helped = run_in(python, cwd, "aj", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "plugins" in helped.stdout and "tasks" in helped.stdout
    versioned = run_in(python, cwd, "aj", "--version")
    assert versioned.returncode == 0, versioned.stderr
    assert versioned.stdout.strip() == f"aj, version {PYPROJECT['project']['version']}"
    tasks = run_in(python, cwd, "aj", "tasks")
    assert tasks.returncode == 0 and "toy-arith" in tasks.stdout, tasks.stderr


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh venv with `pip install <copy of the repo>` and the example plugin: (python, empty cwd)."""
    root = tmp_path_factory.mktemp("wheel-venv")
    src = copy_repo(root / "src")
    example = root / "example"
    shutil.copytree(EXAMPLE_PLUGIN, example, ignore=IGNORED)
    python = make_venv(root / "venv")
    pip_install(python, str(src))
    pip_install(python, str(example))
    cwd = root / "elsewhere"
    cwd.mkdir()
    return python, cwd


@pytest.mark.slow
def test_pip_install_dot(wheel_venv: tuple[Path, Path]) -> None:
    python, cwd = wheel_venv
    info = probe(python, cwd)
    purelib = Path(info["purelib"])
    for name, file in info["files"].items():
        assert Path(file).is_relative_to(purelib / "autojudge"), (name, file)
    assert info["generic"] == [], f"generic top-level packages are importable: {info['generic']}"

    # nothing but autojudge/, its dist-info and the `aj` script was installed
    record = next(purelib.glob("autojudge-*.dist-info")) / "RECORD"
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text(encoding="utf-8").splitlines() if line}
    assert tops - {".."} == {"autojudge", record.parent.name}, tops
    assert not (purelib / "autojudge" / "__init__.py").exists()  # namespace package
    for name in GENERIC:
        assert not (purelib / name).exists() and not (purelib / f"{name}.py").exists(), name

    # every source file (modules and package data) made it into the installed copy
    installed = {p.relative_to(purelib).as_posix() for p in (purelib / "autojudge").rglob("*") if p.is_file()}
    installed = {p for p in installed if "__pycache__" not in p}
    assert source_files() - installed == set(), "files missing from the installed package"
    check_aj(python, cwd)


@pytest.mark.slow
def test_pip_install_editable(tmp_path: Path) -> None:
    src = copy_repo(tmp_path / "src")
    python = make_venv(tmp_path / "venv")
    pip_install(python, "-e", str(src))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    info = probe(python, cwd)
    for name, file in info["files"].items():
        assert Path(file).is_relative_to(src), f"{name} imported from {file}, not from the editable source {src}"
    assert info["generic"] == [], f"generic top-level packages are importable: {info['generic']}"
    purelib = Path(info["purelib"])
    for name in GENERIC:
        assert not (purelib / name).exists(), name
    check_aj(python, cwd)

    # an edit in the source tree is live without reinstalling
    (src / "plugins" / "toy.py").write_text(
        (src / "plugins" / "toy.py").read_text(encoding="utf-8").replace("Toy integer arithmetic", "Edited toy"),
        encoding="utf-8",
    )
    tasks = run_in(python, cwd, "aj", "tasks")
    assert "Edited toy" in tasks.stdout, tasks.stdout + tasks.stderr


@pytest.mark.slow
def test_example_plugin_discovered_in_a_fresh_venv(wheel_venv: tuple[Path, Path]) -> None:
    python, cwd = wheel_venv
    tasks = run_in(python, cwd, "aj", "tasks")
    assert tasks.returncode == 0, tasks.stderr
    line = next((ln for ln in tasks.stdout.splitlines() if ln.startswith("example-wordcount ")), None)
    assert line is not None and line.endswith("[example]"), tasks.stdout

    plugins = json.loads(run_in(python, cwd, "aj", "plugins").stdout)
    example = next(p for p in plugins["plugins"] if p["name"] == "example")
    assert example["source"] == "ajspec-example" and example["tasks"] == ["example-wordcount"]

    script = (
        "import json, ajspec_example\n"
        "from autojudge.plugins.manager import get_task\n"
        "t = get_task('example-wordcount')\n"
        "rows = t.load(t.eval_split)\n"
        "a = t.extract_answer('It has 2 words.')\n"
        "print(json.dumps({'file': ajspec_example.__file__, 'n': len(rows), 'q': rows[0].question,\n"
        "  'a': a, 'ok': t.is_correct(a, rows[0]), 'eq': t.equivalent(a, 2, rows[0]),\n"
        "  'bad': t.is_correct(t.extract_answer('3'), rows[0])}))\n"
    )
    proc = run_in(python, cwd, str(python), "-c", script)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    purelib = Path(probe(python, cwd)["purelib"])
    assert Path(out["file"]).is_relative_to(purelib), out  # the copy installed here, with its data
    assert out == {**out, "n": 4, "q": "Hello world.", "a": 2, "ok": True, "eq": True, "bad": False}

    hidden = run_in(python, cwd, "aj", "tasks", AJ_LOAD_PLUGINS="")
    assert hidden.returncode == 0 and "example-wordcount" not in hidden.stdout
    chosen = run_in(python, cwd, "aj", "tasks", AJ_LOAD_PLUGINS="ajspec-example")
    assert "example-wordcount" in chosen.stdout


# -- README promises ---------------------------------------------------------------------------


def readme_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no code block after <!-- {marker} -->"
    return match.group(1)


def test_readme_plugin_example_is_the_tested_example_plugin() -> None:
    snippet = readme_block("example-plugin-module")
    module = (EXAMPLE_PLUGIN / "ajspec_example" / "__init__.py").read_text(encoding="utf-8")
    assert snippet == module, "README's plugin example and tests/plugins/ajspec-example differ"
    assert len(snippet.splitlines()) < 30
    entry = readme_block("example-plugin-pyproject")
    pyproject = (EXAMPLE_PLUGIN / "pyproject.toml").read_text(encoding="utf-8")
    for line in entry.strip().splitlines():
        assert line in pyproject.splitlines(), line


def test_readme_test_command_is_what_ci_runs() -> None:
    setup = readme_block("setup-commands").strip().splitlines()
    commands = [line for line in setup if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, f"the README must give exactly two set-up commands, got {commands}"
    test_command = commands[1]
    assert "bash .ci/install" in test_command and "pytest -n auto" in test_command
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci, ".ci/run must run the README's test command verbatim"
    assert "bash .ci/install" in commands[0]


def test_readme_lists_exactly_the_real_commands() -> None:
    from autojudge.cli import main as aj_main
    from autojudge.plugins import manager

    real = set(aj_main.build_cli().commands)
    third_party = {c for info in manager.plugins_info() if info["source"] != "builtin" for c in info["commands"]}
    listed = set(re.findall(r"^\| `aj ([a-z][a-z0-9-]*)", README.read_text(encoding="utf-8"), re.MULTILINE))
    assert listed <= real, f"README lists commands that `aj` does not have: {sorted(listed - real)}"
    assert real - third_party <= listed, f"README's command table misses: {sorted(real - third_party - listed)}"
