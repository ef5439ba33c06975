"""``aj mine`` and ``aj mine-merge``: label which draft/target mismatches change the task's answer."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autojudge.core.backends import BACKENDS
from autojudge.core.compare.pool import PoolBrokenError


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError as e:
        raise click.BadParameter(f"expected I/N (e.g. 0/4), got {value!r}") from e
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"need 0 <= I < N, got {value!r}")
    return i, n


def _kept(out: Path) -> str:
    """What a stopped mining run left in ``out``, and how to continue it."""
    from autojudge.core.mining.store import MinedStore

    store = MinedStore(out)
    try:  # mine_task writes it on the way out; absent when stopped before mining began
        s = json.loads(store.summary_path.read_text(encoding="utf-8"))
        done = f"{s['prompts']} prompts finished ({s['labels']} labels); "
    except (OSError, ValueError, KeyError):
        done = ""
    n = store.unfinished_counts()
    return (
        f"{done}{n['labels_unfinished']} labels of {n['prompts_unfinished']} unfinished prompts "
        f"kept in {store.partial}. Continue with the same command and --resume."
    )


@click.command()
@click.option("--task", "task_name", required=True, help="Task name (see `aj tasks`).")
@click.option(
    "--dataset",
    default=None,
    help="Dataset of a task that offers several (e.g. --task code --dataset mbpp). [task default]",
)
@click.option("--draft", default=None, help="Draft model (preset, HF dir, .gguf, hub id). [default pair]")
@click.option("--target", default=None, help="Target model. [default pair]")
@click.option("--split", default=None, help="Split to mine. [default: the task's mining split]")
@click.option("--limit", type=int, default=None, help="Mine only the first N prompts of the split.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output directory. [default: runs/mine-TASK]"
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same settings).")
@click.option(
    "--shard",
    default=None,
    help="I/N: mine only prompts with index = I mod N (parallel runs; merge with `aj mine-merge`).",
)
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--max-mismatches", type=int, default=None, help="Stop each prompt after this many labels.")
@click.option(
    "--naive",
    is_flag=True,
    help="Reference algorithm: regenerate every rollout from scratch (slow; for comparison).",
)
@click.option(
    "--inflight",
    type=click.IntRange(min=1),
    default=None,
    help="Prompts mined at once (1: one at a time). [batched: sized to the free memory, at most 48; pipelined: 4]",
)
@click.option(
    "--driver",
    type=click.Choice(["batched", "pipelined", "sequential"]),
    default="batched",
    show_default=True,
    help="transformers backend: batched runs the rollouts of all in-flight prompts in one batch per step; "
    "pipelined one rollout at a time while checks run; sequential one prompt at a time. Same labels.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="transformers",
    show_default=True,
    help="vllm: rollouts of all in-flight prompts as one batched, prefix-cached vLLM generate (needs the vllm extra; docs/vllm.md).",
)
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    help="auto: the dtype this CPU's linears run faster (measured once, cached; bfloat16 on CPUs with bf16 "
    "units, else float32). float32 gives labels identical to the sequential driver and plain greedy regeneration.",
)
@click.option(
    "--quant",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="int8: int8 weight-only linears in both models after loading (CPU: ~1.8x faster 1-token steps, slower multi-token verifies, "
    "labels of the quantized pair; recorded in meta.json, a --resume must use the same). transformers backend only.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory (else $AJ_DATA_DIR / upstream).",
)
@click.option("--no-progress", is_flag=True)
def mine(
    task_name,
    dataset,
    draft,
    target,
    split,
    limit,
    out,
    resume,
    shard,
    max_new_tokens,
    max_mismatches,
    naive,
    inflight,
    driver,
    backend,
    dtype,
    quant,
    device,
    data_dir,
    no_progress,
):
    """Mine important mismatches (the paper's Algorithm 1) into a resumable directory."""
    from autojudge.core import presets
    from autojudge.core.mining.run import mine_task
    from autojudge.core.mining.steps import MiningConfig
    from autojudge.core.models import load_pair
    from autojudge.plugins.manager import UnknownDatasetError, UnknownTaskError, get_task

    try:
        task = get_task(task_name, dataset=dataset)
    except (UnknownTaskError, UnknownDatasetError) as e:
        raise click.BadParameter(str(e), param_hint="--task/--dataset") from None
    out = out or Path("runs") / f"mine-{task.name}"
    if backend == "vllm" and naive:
        raise click.UsageError("--naive regenerates rollouts token by token: use --backend transformers")
    if backend == "vllm" and quant != "none":
        raise click.UsageError("--quant int8 quantizes the transformers models: use --backend transformers")
    # what needs no model is checked before the models load
    from autojudge.cli.checks import check_split_data

    shard_range = _parse_shard(shard)
    check_split_data(task, split or task.mining_split, data_dir)
    if (out / "meta.json").exists() and not resume:
        raise click.ClickException(
            f"{out} already holds mined data; pass --resume to continue it or choose another --out"
        )
    pair = load_pair(
        draft or presets.DEFAULT_DRAFT,
        target or presets.DEFAULT_TARGET,
        dtype=dtype,
        device=device,
        quant=quant,
    )
    if inflight is None:
        if driver == "batched" and backend == "transformers":
            from autojudge.core.mining.batched import default_inflight

            inflight = default_inflight(pair.target.model, pair.draft.model, max_new_tokens)
            click.echo(
                f"mining {inflight} prompts at once (sized to the free memory; --inflight to change)",
                err=True,
            )
        else:
            inflight = 1 if driver == "sequential" else 4
    config = MiningConfig(
        max_new_tokens=max_new_tokens, max_mismatches=max_mismatches, naive=naive, inflight=inflight
    )
    import signal

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: progress kept, summary written

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        summary = mine_task(
            task, pair, out, split=split, limit=limit, data_dir=data_dir, config=config,
            resume=resume, shard=shard_range, progress=not no_progress, backend=backend, driver=driver,
        )  # fmt: skip
    except ImportError as e:  # VLLMUnavailableError: vLLM missing or another version
        if backend != "vllm":
            raise
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        click.echo(f"stopped: {_kept(out)}", err=True)
        raise SystemExit(130) from None
    except PoolBrokenError as e:  # the answer checks cannot run (e.g. workers that never start)
        raise click.ClickException(f"{e}. Mining stopped: {_kept(out)}") from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"mined data in {out}", err=True)


@click.command("mine-merge")
@click.argument(
    "sources", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="New directory for the merged data."
)
def mine_merge(sources, out):
    """Merge mined shard directories (from `aj mine --shard I/N`) after checking they belong to one run."""
    from autojudge.core.mining.store import merge_stores

    store = merge_stores(sources, out)
    click.echo(json.dumps(store.summary(), indent=2))


@click.command("mine-pack")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def mine_pack(directory):
    """Store a mined directory's hidden-state features as float16 (half the size; for data kept in a repository)."""
    from autojudge.core.mining.store import MinedDataError, MinedStore

    try:
        res = MinedStore(directory).pack()
    except MinedDataError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"packed {res['shards']} shard(s): {res['bytes_before'] / 1e6:.1f} MB -> {res['bytes_after'] / 1e6:.1f} MB"
    )
