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


@judges.command("study")
@click.argument("mined", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--feature-sets", default="dt,dt+x,dd+dt,dd+dt+x", show_default=True,
    help="Comma-separated feature sets to compare.",
)  # fmt: skip
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds, grouped by prompt.")
@click.option(
    "--bootstrap", default=1000, show_default=True, help="Bootstrap resamples of prompts (0: none)."
)
@click.option(
    "--fractions", default="0.1,0.25,0.5,1", show_default=True,
    help="Learning curve: fractions of each training fold's prompts.",
)  # fmt: skip
@click.option(
    "--recall", default=0.9, show_default=True, help="Recall of important mismatches for the accept rate."
)
@click.option(
    "--prompt-budget", default=0.02, show_default=True,
    help="Answer level: the accept rate at the largest threshold that lets an important mismatch "
    "through in at most this share of the prompts.",
)  # fmt: skip
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--skip-incomplete", is_flag=True, help="Ignore shards of unfinished prompts (a running `aj mine`)."
)
@click.option("--keep-truncated", is_flag=True, help="Keep labels whose rollout hit its token budget.")
@click.option(
    "--include-unfinished",
    is_flag=True,
    help="Also use the final labels of prompts still being mined (partial/).",
)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), default=None, help="Write the study as JSON here."
)
def study(
    mined: str, feature_sets: str, folds: int, bootstrap: int, fractions: str, recall: float,
    prompt_budget: float, seed: int,
    skip_incomplete: bool, keep_truncated: bool, include_unfinished: bool, out: str | None,
) -> None:  # fmt: skip
    """How good a judge MINED buys: AUC per feature set (95% CI), accept rates per mismatch and per answer, learning curve.

    Cross-validation grouped by prompt, each fold trained like `aj train`; prints a Markdown table.
    """
    from autojudge.core.files import atomic_write_json
    from autojudge.core.mining.store import MinedDataError
    from autojudge.judges.dataset import expand_feature_sets, load_mined, parse_feature_set
    from autojudge.judges.study import StudyConfig, study_judges, study_markdown

    try:
        sets = tuple(expand_feature_sets(feature_sets))
        blocks = sorted({b for s in sets for b in parse_feature_set(s)})
        config = StudyConfig(
            feature_sets=sets, folds=folds, bootstrap=bootstrap,
            fractions=tuple(float(f) for f in fractions.split(",") if f.strip()), recall=recall,
            prompt_budget=prompt_budget, seed=seed,
        )  # fmt: skip
        data = load_mined(mined, blocks, skip_incomplete=skip_incomplete, keep_truncated=keep_truncated,
                          include_unfinished=include_unfinished)  # fmt: skip
        result = study_judges(data, config)
    except (MinedDataError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    result["mined"] = mined
    if out:
        from pathlib import Path

        atomic_write_json(Path(out), result)
    click.echo(study_markdown(result))
