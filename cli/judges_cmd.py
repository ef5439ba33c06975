"""``aj judges``: the judges shipped in the package (use one with ``--judge NAME``)."""

from __future__ import annotations

import json

import click


@click.group()
def judges() -> None:
    """Judges shipped with autojudge for the default pair (``--judge NAME`` in decode and serve)."""


@judges.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per judge.")
def list_judges(as_json: bool) -> None:
    """List the shipped judges: task, feature set, validation AUC, threshold, labels and model pair."""
    from autojudge.judges.artifact import JudgeArtifactError
    from autojudge.judges.shipped import shipped_dir, shipped_judges

    try:
        found = shipped_judges()
    except JudgeArtifactError as e:
        raise click.ClickException(f"a shipped judge is unreadable: {e}") from e
    if as_json:
        for j in found:
            click.echo(json.dumps(j.row()))
        return
    if not found:
        click.echo(f"no shipped judges in {shipped_dir()}")
        return
    click.echo(
        f"{'name':<12} {'task':<10} {'features':<10} {'val AUC':>7} {'thresh':>7} {'labels':>7}  pair (draft -> target)"
    )
    for j in found:
        auc = f"{j.auc:.3f}" if j.auc is not None else "-"
        click.echo(
            f"{j.name:<12} {j.task or '-':<10} {j.feature_set:<10} {auc:>7} {j.threshold:>7.3f} "
            f"{j.labels if j.labels is not None else '-':>7}  {j.draft} -> {j.target}"
        )
