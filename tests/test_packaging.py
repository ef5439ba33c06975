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
    assert found - listed == set(), (
        f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    )
    assert listed - found == set(), (
        f"listed in pyproject.toml but no such package folder: {sorted(listed - found)}"
    )


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
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(own) / "_autojudge_test_parent.pth").write_text("\n".join(sorted(parent)) + "\n", encoding="utf-8")
    return python


def pip_install(python: Path, *args: str) -> None:
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--no-index",
            "--disable-pip-version-check",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def run_in(venv_python: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command from ``cwd`` (outside the repository) with a clean plugin environment."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AJ_LOAD_PLUGINS")}
    full_env.update(env)
    bindir = venv_python.parent
    cmd = [str(bindir / args[0]), *args[1:]] if (bindir / args[0]).exists() else list(args)
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=full_env, check=False
    )


PROBE = r"""
import importlib, importlib.util, json, sys, sysconfig
names = json.loads(sys.argv[1])
files = {n: importlib.import_module(n).__file__ for n in names}
generic = [n for n in json.loads(sys.argv[2]) if importlib.util.find_spec(n) is not None]
print(json.dumps({"files": files, "generic": generic, "purelib": sysconfig.get_paths()["purelib"]}))
"""


def probe(python: Path, cwd: Path) -> dict:
    proc = run_in(
        python, cwd, str(python), "-c", PROBE, json.dumps(sorted(source_packages())), json.dumps(GENERIC)
    )
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
    record = next(purelib.glob("ajspec-*.dist-info")) / "RECORD"
    tops = {
        line.split(",")[0].split("/")[0] for line in record.read_text(encoding="utf-8").splitlines() if line
    }
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
        assert Path(file).is_relative_to(src), (
            f"{name} imported from {file}, not from the editable source {src}"
        )
    assert info["generic"] == [], f"generic top-level packages are importable: {info['generic']}"
    purelib = Path(info["purelib"])
    for name in GENERIC:
        assert not (purelib / name).exists(), name
    check_aj(python, cwd)

    # an edit in the source tree is live without reinstalling
    (src / "plugins" / "toy.py").write_text(
        (src / "plugins" / "toy.py")
        .read_text(encoding="utf-8")
        .replace("Toy integer arithmetic", "Edited toy"),
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
    assert len(snippet.splitlines()) <= 30
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
    third_party = {
        c for info in manager.plugins_info() if info["source"] != "builtin" for c in info["commands"]
    }
    listed = set(re.findall(r"^\| `aj ([a-z][a-z0-9-]*)", README.read_text(encoding="utf-8"), re.MULTILINE))
    assert listed <= real, f"README lists commands that `aj` does not have: {sorted(listed - real)}"
    assert real - third_party <= listed, (
        f"README's command table misses: {sorted(real - third_party - listed)}"
    )


# -- the release artifact: `python -m build`, `twine check`, the built wheel in a fresh venv ----------


PLUGIN_TEMPLATE_MODULE = """
from autojudge.core.task import Example, Task
from autojudge.plugins import hookimpl


class MyTask(Task):
    name = "mytask"
    description = "A plugin built from the docs/plugins.md template."

    def load(self, split, *, data_dir=None, limit=None):
        return [Example(f"{split}-0", "Say 7.", reference=7)][:limit]

    def build_messages(self, example):
        return [{"role": "user", "content": example.question}]

    def extract_answer(self, response):
        return next((int(w) for w in response.split() if w.isdigit()), None)

    def equivalent(self, answer_a, answer_b, example):
        return answer_a is not None and answer_a == answer_b

    def is_correct(self, answer, example):
        return self.equivalent(answer, example.reference, example)


@hookimpl
def register_tasks(register):
    register(MyTask())
"""


def build_dists(src: Path, out: Path) -> list[Path]:
    """``python -m build`` (sdist and wheel, no isolation: the build tools come from this environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(out.iterdir())


def docs_plugin_template() -> str:
    """The pyproject.toml template in docs/plugins.md (the first ```toml block)."""
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    match = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert match, "docs/plugins.md has no ```toml block"
    return match.group(1)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and wheel built from a copy of the repository, and a fresh venv with the wheel installed."""
    root = tmp_path_factory.mktemp("release")
    dists = build_dists(copy_repo(root / "src"), root / "dist")
    version = PYPROJECT["project"]["version"]
    names = {p.name for p in dists}
    assert names == {f"ajspec-{version}.tar.gz", f"ajspec-{version}-py3-none-any.whl"}, names
    python = make_venv(root / "venv")
    pip_install(python, str(root / "dist" / f"ajspec-{version}-py3-none-any.whl"))
    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"root": root, "dist": root / "dist", "python": python, "cwd": cwd}


@pytest.mark.slow
def test_built_dists_pass_twine_check_and_carry_the_sources(release: dict[str, Path]) -> None:
    dists = sorted(release["dist"].iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout
    import tarfile
    import zipfile

    sdist = next(p for p in dists if p.suffix == ".gz")
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "core/engine.py", "plugins/math/plugin.py"} <= members
    wheel = next(p for p in dists if p.suffix == ".whl")
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        metadata = zf.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
    assert "autojudge/core/engine.py" in files and "autojudge/__init__.py" not in files
    # the shipped judges travel in the wheel (package data), with their training reports
    assert {
        "autojudge/judges/shipped/gsm8k.safetensors",
        "autojudge/judges/shipped/gsm8k.report.json",
        "autojudge/judges/shipped/code.safetensors",
        "autojudge/judges/shipped/code.report.json",
    } <= files
    assert not [f for f in files if f.split("/")[0] in GENERIC], "generic top-level folders in the wheel"
    assert "Name: ajspec" in metadata and f"Version: {PYPROJECT['project']['version']}" in metadata


@pytest.mark.slow
def test_the_built_wheel_runs_aj_in_a_fresh_venv(release: dict[str, Path]) -> None:
    python, cwd = release["python"], release["cwd"]
    info = probe(python, cwd)
    for name, file in info["files"].items():  # imported from the installed wheel, not the checkout
        assert Path(file).is_relative_to(Path(info["purelib"]) / "autojudge"), (name, file)
    check_aj(python, cwd)
    sandbox = run_in(python, cwd, "aj", "sandbox", "check")
    assert sandbox.returncode == 0, sandbox.stdout + sandbox.stderr
    assert "docker" in sandbox.stdout.lower() or "bubblewrap" in sandbox.stdout.lower(), sandbox.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_the_built_wheel_decodes_with_the_smallest_model(release: dict[str, Path]) -> None:
    python, cwd = release["python"], release["cwd"]
    proc = run_in(
        python, cwd, "aj", "decode", "--target", "smollm2-135m-instruct", "--draft", "smollm2-135m-instruct",
        "--mode", "sd", "-k", "3", "--max-new-tokens", "8", "--dtype", "float32", "-p", "What is 2+3?", "--json",
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["text"].strip() and 1 <= out["metrics"]["num_output_tokens"] <= 8, out
    # the draft is the target itself, so lossless SD accepts every draft token
    assert out["metrics"]["draft_acceptance_rate"] == 1.0, out["metrics"]


@pytest.mark.slow
def test_the_docs_plugin_template_builds_and_registers(release: dict[str, Path], tmp_path: Path) -> None:
    template = docs_plugin_template()
    assert "[build-system]" in template and 'dependencies = ["ajspec"]' in template
    plugin = tmp_path / "ajspec-mytask"
    (plugin / "ajspec_mytask").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(template, encoding="utf-8")
    (plugin / "ajspec_mytask" / "__init__.py").write_text(PLUGIN_TEMPLATE_MODULE, encoding="utf-8")
    dists = build_dists(plugin, tmp_path / "dist")
    wheel = next(p for p in dists if p.suffix == ".whl")
    assert wheel.name.startswith("ajspec_mytask-"), wheel.name
    python, cwd = release["python"], release["cwd"]
    pip_install(python, str(wheel))
    tasks = run_in(python, cwd, "aj", "tasks")
    assert tasks.returncode == 0, tasks.stderr
    assert any(
        line.startswith("mytask ") and line.endswith("[mytask]") for line in tasks.stdout.splitlines()
    ), tasks.stdout
