"""The house keeps its floors: import-linter's layers contract in pyproject.toml holds (docs/architecture.md).

A lower floor never imports a higher one, not even inside a function (import-linter reads every
import statement, and follows chains through other modules). The contract names the ground floor
module by module, so a new top-level module of ``core/`` must be placed on a floor explicitly:
``test_every_core_module_is_on_a_floor`` fails until it is.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contract() -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return contract


def _floor_modules(layer: str) -> set[str]:
    return {m.strip().strip("()") for m in layer.replace("|", ":").split(":")}


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_floors_contract_holds():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_every_core_module_and_subpackage_is_on_a_floor():
    listed = set().union(*(_floor_modules(layer) for layer in _contract()["layers"]))
    core = REPO / "core"
    modules = {f"autojudge.core.{p.stem}" for p in core.glob("*.py") if p.name != "__init__.py"}
    packages = {f"autojudge.core.{p.parent.name}" for p in core.glob("*/__init__.py")}
    assert modules | packages <= listed, sorted((modules | packages) - listed)
    top = {f"autojudge.{p.parent.name}" for p in REPO.glob("*/__init__.py") if p.parent.name != "core"}
    assert top <= listed, sorted(top - listed)


def test_the_contract_catches_an_upward_import_inside_a_function(tmp_path):
    """The same contract on a copy of a small tree with one function-level upward import is broken."""
    pkg = tmp_path / "src" / "house"
    for name, body in {
        "__init__.py": "",
        "ground.py": "def f():\n    from house.top import g  # upward, hidden in a function\n    return g\n",
        "top.py": "from house.ground import f\n\ndef g():\n    return f\n",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    (tmp_path / ".importlinter").write_text(
        textwrap.dedent(
            """
            [importlinter]
            root_package = house

            [importlinter:contract:floors]
            name = floors
            type = layers
            layers =
                house.top
                house.ground
            """
        )
    )
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0, proc.stdout
    assert "house.ground is not allowed to import house.top" in proc.stdout
