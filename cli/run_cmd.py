"""``aj run``: mine -> train -> choose the threshold on validation -> evaluate -> report, cached per stage."""

from __future__ import annotations

from pathlib import Path

import click

from autojudge.core.backends import BACKENDS


def _floats(value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from e
    if any(not 0.0 <= t <= 1.0 for t in out):
        raise click.BadParameter("thresholds must be in [0, 1]")
    return out


def _ints(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from e
    if any(k < 1 for k in out):
        raise click.BadParameter("K values must be >= 1")
    return out


@click.command("run")
@click.option("--task", "task_name", required=True, help="Task name (see `aj tasks`).")
@click.option(
    "--dataset",
    default=None,
    help="Dataset of a task that offers several (e.g. --task code --dataset mbpp). [task default]",
)
@click.option("--draft", default=None, help="Draft model (preset, HF dir, .gguf, hub id). [default pair]")
@click.option("--target", default=None, help="Target model. [default pair]")
@click.option(
    "--mine-limit",
    type=click.IntRange(2),
    default=2,
    show_default=True,
    help="Prompts of the mining split to mine.",
)
@click.option(
    "--val-limit",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Held-out mining-split prompts (after the mined ones) used to choose the threshold (0: none, the judge's "
    "calibrated threshold is used unchecked).",
)
@click.option(
    "--eval-limit", type=click.IntRange(1), default=20, show_default=True, help="Prompts of the eval split."
)
@click.option(
    "--eval-split",
    default=None,
    help="Split to evaluate (e.g. --task humaneval --eval-split test: all 164 problems). [the task's eval split]",
)
@click.option(
    "--thresholds",
    default="",
    show_default=True,
    help="Judge thresholds evaluated (plus the calibrated and the recommended one).",
)
@click.option(
    "--val-thresholds",
    default="",
    show_default=True,
    help="Candidate thresholds tried on validation (plus the calibrated one).",
)
@click.option("--top-k", default="4", show_default=True, help="K values of the Top-K baseline ('' for none).")
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Accuracy budget in points vs target-only, for the recommended threshold.",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(1),
    default=512,
    show_default=True,
    help="Token budget of every decode (and of mining rollouts before their headroom).",
)
@click.option(
    "-k",
    "--draft-length",
    "k",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Draft tokens per cycle.",
)
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    help="auto: on a CPU the dtype its linears run faster (measured once, cached: bfloat16 where the CPU has "
    "bf16 units, else float32); bfloat16, float32, float16.",
)
@click.option(
    "--quant",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="int8: int8 weight-only linears in both models after loading (faster on CPU; part of the stages' "
    "cache keys; the judge artifact still fits the float models). transformers backend only.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="transformers",
    show_default=True,
    help="Decoding backend of validation and evaluation (vllm: needs the vllm extra and --features dt or dt+x).",
)
@click.option(
    "--features", default="dd+dt", show_default=True, help="Judge feature set(s), as for `aj train`."
)
@click.option(
    "--recall",
    "target_recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.9,
    show_default=True,
    help="Recall of important mismatches for the calibrated threshold.",
)
@click.option(
    "--max-mismatches",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Stop mining a prompt after this many labels (0: no limit).",
)
@click.option("--mined", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Use this `aj mine` / `aj mine-merge` directory (same task and models) instead of mining; "
                   "validation prompts start after the last prompt it mined.")  # fmt: skip
@click.option("--keep-truncated", is_flag=True,
              help="Train on labels whose rollout hit the token budget too (left out by default: a cut rollout "
                   "is no evidence that the swap mattered).")  # fmt: skip
@click.option("--judge", "judge_spec", default="auto", show_default=True,
              help="auto: the task's shipped judge (`aj judges list`) when it was trained for the loaded models, "
                   "else mine and train one; mine: always mine and train; or a trained judge instead of mining: a "
                   "shipped judge's name or an `aj train` artifact, checked against the models. Its threshold is "
                   "still chosen on validation prompts it was not trained on.")  # fmt: skip
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory (else $AJ_DATA_DIR / upstream).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory. [default: runs/run-TASK]",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--no-progress", is_flag=True)
@click.option(
    "--eval-batch",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Problems decoded at once per mode in validation and evaluation (transformers backend; "
    "1: one at a time). Rows are identical in float32 (bfloat16: up to near-ties); tokens/s becomes "
    "a throughput figure.",
)
def run(task_name, dataset, draft, target, mine_limit, val_limit, eval_limit, eval_split, thresholds, val_thresholds, top_k,
        max_accuracy_drop, max_new_tokens, k, dtype, quant, device, backend, features, target_recall, max_mismatches, mined, keep_truncated,
        judge_spec, data_dir, out, resume, no_progress, eval_batch):  # fmt: skip
    """Mine, train the judge, pick its threshold on validation, evaluate and report the trade-off.

    Each stage is cached in --out and skipped when its inputs are unchanged;
    results: OUT/summary.json, OUT/report.md, OUT/plots/*.png, OUT/eval/*.jsonl.
    """
    from rich.console import Console

    from autojudge.core.run.pipeline import PipelineError, RunConfig, run_pipeline
    from autojudge.core.run.report import markdown_table

    console = Console(stderr=True)
    try:
        config = RunConfig(
            task=task_name, dataset=dataset, out=out or Path("runs") / (f"run-{task_name}" + (f"-{dataset}" if dataset else "")),
            draft=draft, target=target,
            mine_limit=mine_limit, val_limit=val_limit, eval_limit=eval_limit, eval_split=eval_split, thresholds=_floats(thresholds),
            val_thresholds=_floats(val_thresholds), top_k=_ints(top_k), max_accuracy_drop=max_accuracy_drop,
            max_new_tokens=max_new_tokens, k=k, dtype=dtype, quant=quant, device=device, backend=backend, features=features,
            target_recall=target_recall, max_mismatches=max_mismatches or None, mined=mined, judge=judge_spec, keep_truncated=keep_truncated, data_dir=data_dir, resume=resume,
            progress=not no_progress, eval_batch=eval_batch,
        )  # fmt: skip
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    try:
        summary = run_pipeline(config, console=console)
    except PipelineError as e:
        raise click.ClickException(str(e)) from e
    click.echo(markdown_table(summary))
    click.echo(
        f"recommended threshold: {summary['recommended_threshold']:.4g} ({summary['recommended_mode']}); "
        f"report: {config.out / 'report.md'}"
    )
