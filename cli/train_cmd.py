"""``aj train``: fit the judge on a mined directory and write ``judge.safetensors`` + ``judge.report.json``."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_grid(value: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from e
    if not grid or any(c <= 0 for c in grid):
        raise click.BadParameter("C values must be positive")
    return grid


@click.command("train")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Mined directory (the output of `aj mine --out DIR`).",
)
@click.option(
    "--features",
    default="all",
    show_default=True,
    help="Feature set: dt, dt+x, dd+dt, dd+dt+x, a comma-separated list, or 'all' (compare every set).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Judge artifact to write (a .safetensors file); the report goes to <stem>.report.json.",
)
@click.option(
    "--recall",
    "target_recall",
    default=0.9,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Target recall of important mismatches on validation; sets the threshold.",
)
@click.option("--choose", default=None, help="Feature set to save (default: best validation ROC-AUC).")
@click.option(
    "--val-fraction",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Fraction of prompts held out for validation.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split by prompt.")
@click.option(
    "--class-weight",
    type=click.Choice(["none", "balanced"]),
    default="none",
    show_default=True,
    help="'balanced' weights the important class by its rarity.",
)
@click.option(
    "--c-grid", default="1e-3,1e-2,1e-1,1,10", show_default=True, help="Inverse L2 strengths to try."
)
@click.option(
    "--max-iter", default=300, show_default=True, type=click.IntRange(1), help="lbfgs iterations per fit."
)
@click.option(
    "--patience",
    default=2,
    show_default=True,
    type=click.IntRange(0),
    help="Stop the C grid after this many values without a better validation AUC (0: fit every C).",
)
@click.option(
    "--skip-incomplete", is_flag=True, help="Ignore shards of unfinished prompts (no completion marker yet)."
)
@click.option(
    "--keep-truncated",
    is_flag=True,
    help="Train on labels whose rollout hit the token budget too (left out by default).",
)
@click.option(
    "--include-unfinished",
    is_flag=True,
    help="Also train on the labels already decided in prompts still being mined (partial/; each label is final).",
)
def train(
    data_dir: Path,
    features: str,
    out: Path,
    target_recall: float,
    choose: str | None,
    val_fraction: float,
    seed: int,
    class_weight: str,
    c_grid: str,
    max_iter: int,
    patience: int,
    skip_incomplete: bool,
    keep_truncated: bool,
    include_unfinished: bool,
) -> None:
    """Train the AutoJudge classifier and calibrate its threshold.

    Logistic regression on standardised hidden states, C chosen by validation
    ROC-AUC on a split by prompt; the threshold keeps the target recall of
    important mismatches on validation. Prints AUC per feature set, the chosen
    threshold and baselines; writes the artifact and a JSON report beside it.
    """
    from rich.console import Console

    from autojudge.core.mining.store import MinedDataError
    from autojudge.judges.dataset import expand_feature_sets, load_mined, parse_feature_set
    from autojudge.judges.train import TrainConfig, train_judges

    try:
        sets = expand_feature_sets(features)
        config = TrainConfig(
            c_grid=_parse_grid(c_grid),
            val_fraction=val_fraction,
            seed=seed,
            class_weight=None if class_weight == "none" else class_weight,
            max_iter=max_iter,
            target_recall=target_recall,
            patience=patience or None,
        )
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    blocks = {b for s in sets for b in parse_feature_set(s)} | {"x"}
    console = Console()
    try:
        with console.status(f"reading {data_dir}"):
            data = load_mined(
                data_dir, sorted(blocks), skip_incomplete=skip_incomplete, keep_truncated=keep_truncated,
                include_unfinished=include_unfinished,
            )  # fmt: skip
        if data.excluded_truncated:
            console.print(
                f"left out {data.excluded_truncated} truncated label(s): their rollouts hit the token budget"
            )
        with console.status(f"training {len(sets)} feature set(s) on {data.n} mismatches"):
            result = train_judges(data, sets, config, choose=choose)
        artifact, report = result.save(out)
    except (MinedDataError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    print_report(console, result)
    console.print(f"wrote [bold]{artifact}[/] and {report}")


def print_report(console, result) -> None:  # noqa: ANN001 - rich Console, TrainResult
    """Rich tables: AUC per feature set, the chosen threshold, the baselines."""
    from rich.table import Table

    rep = result.report()
    s = rep["split"]
    console.print(
        f"split by prompt: {s['n_train']} train rows ({s['prompts_train']} prompts), "
        f"{s['n_val']} validation rows ({s['prompts_val']} prompts); "
        f"important rate {s['important_rate_train']:.3f} / {s['important_rate_val']:.3f}"
    )
    r_target = result.config.target_recall
    t = Table(title="feature sets (validation)")
    for col in (
        "set",
        "dims",
        "best C",
        "val AUC",
        "train AUC",
        f"accept @r{r_target:g}",
        "fit s",
        "",
    ):
        t.add_column(col, justify="left" if col in ("set", "") else "right")
    for name, row in rep["feature_sets"].items():
        at = row["at_target_recall"]
        t.add_row(
            name,
            str(row["dims"]),
            f"{row['best_c']:g}",
            f"{row['val_auc']:.4f}",
            f"{row['train_auc']:.4f}",
            "-" if at is None else f"{at['accept_rate']:.3f}",
            f"{row['fit_seconds']:.1f}",
            ("chosen" if name == result.chosen else "")
            + ("" if row["converged"] else " max_iter")
            + (" C@edge" if row["best_c_at_grid_edge"] else ""),
        )
    console.print(t)
    console.print(
        "[dim]C@edge: the best C is the grid's end, consider widening --c-grid; "
        "max_iter: lbfgs stopped at --max-iter[/]"
    )
    a = result.at_threshold
    console.print(
        f"chosen [bold]{result.chosen}[/]: threshold {result.threshold:.6g} -> recall {a['recall']:.3f}, "
        f"precision {a['precision']:.3f}, accept rate {a['accept_rate']:.3f} "
        f"({a['important_accepted']} important mismatches accepted of {a['n']})"
    )
    c = Table(title=f"calibration of {result.chosen} (validation)")
    for col in ("target recall", "threshold", "recall", "precision", "accept rate"):
        c.add_column(col, justify="right")
    for row in rep["recall_curve"]:
        c.add_row(
            f"{row['target_recall']:g}",
            f"{row['threshold']:.4g}",
            f"{row['recall']:.3f}",
            f"{row['precision']:.3f}",
            f"{row['accept_rate']:.3f}",
        )
    console.print(c)
    b = Table(title="baselines (same validation rows)")
    for col in ("judge", "setting", "recall", "precision", "accept rate"):
        b.add_column(col, justify="left" if col in ("judge", "setting") else "right")
    for row in rep["baselines"]["rows"]:
        setting = f"p >= {row['p_min']:g}" if "p_min" in row else (f"k = {row['k']}" if "k" in row else "")
        prec = row["precision"]
        b.add_row(
            row["judge"],
            setting,
            f"{row['recall']:.3f}",
            "-" if prec != prec else f"{prec:.3f}",
            f"{row['accept_rate']:.3f}",
        )
    console.print(b)
    at = rep["baselines"].get("prob_at_target_recall")
    if at:
        console.print(f"prob baseline at recall >= {r_target:g}: accept rate {at['accept_rate']:.3f}")
    for note in rep["baselines"]["notes"]:
        console.print(f"[dim]note: {note}[/]")
