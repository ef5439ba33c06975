"""Run mining over a task split: the library API behind ``aj mine``.

:func:`mine_task` loads the split, skips prompts already done (``resume``),
keeps only this process's share (``shard=(i, n)`` takes indices ``i mod n``),
runs :class:`~autojudge.core.mining.steps.Miner` on the remaining prompts (several in
flight, ``MiningConfig.inflight``; rollouts on vLLM with ``backend="vllm"``),
writes each result atomically as soon as it is finished, shows progress
(prompts, labels, important rate, ETA) and writes ``summary.json`` at the end.
Prompts may finish out of index order; the store files each by its index, so
``resume`` still loses and repeats nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from autojudge.core import __version__
from autojudge.core.backends import check_backend
from autojudge.core.mining.pipelined import PipelinedMiner
from autojudge.core.mining.steps import Miner, MiningConfig
from autojudge.core.mining.store import MinedStore
from autojudge.core.task import Task


def mining_meta(
    task: Task, split: str, pair: Any, config: MiningConfig, shard: tuple[int, int] | None
) -> dict[str, Any]:
    # a task that reads one of several data sets (``--dataset``, LiveCodeBench releases) says which in info()
    dataset = task.info().get("dataset")
    return {
        "task": task.name,
        **({"dataset": dataset} if dataset is not None else {}),
        "split": split,
        "draft": pair.draft.fingerprint(),
        "target": pair.target.fingerprint(),
        "settings": {**config.label_settings(), "dtype": str(pair.target.dtype).replace("torch.", "")},
        "shard": list(shard) if shard else None,
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def mine_task(
    task: Task,
    pair: Any,
    out: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    config: MiningConfig | None = None,
    resume: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    backend: str = "transformers",
    vllm_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mine ``task``'s split with ``pair`` (a ``ModelPair``) into ``out``; returns the summary.

    ``config.inflight`` prompts are mined at once (:class:`~autojudge.core.mining.pipelined.PipelinedMiner`;
    1: one after the other with :meth:`Miner.mine`). ``backend="vllm"`` runs the rollouts on vLLM
    (:class:`~autojudge.core.mining.vllm.VLLMMiner`, ``vllm_options`` passed to it; its vLLM engine
    comes from :func:`autojudge.core.backends.open_vllm` unless ``vllm_options["engine"]``); the labels
    and ``meta.json`` are the same as with ``"transformers"``, each prompt records its backend.
    """
    config = config or MiningConfig()
    split = split or task.mining_split
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"bad shard {shard}: need 0 <= i < n")
    store = MinedStore(out)
    store.open(mining_meta(task, split, pair, config, shard), resume=resume)
    examples = task.load(split, data_dir=data_dir, limit=limit)
    done = store.done_indices()
    todo = [
        (i, ex)
        for i, ex in enumerate(examples)
        if i not in done and (shard is None or i % shard[1] == shard[0])
    ]
    check_backend(backend)
    args = (task, pair.target.model, pair.draft.model, pair.tokenizer, config)
    closer = None
    if backend == "vllm":
        from autojudge.core.mining.vllm import VLLMMiner

        opts = {"target_path": pair.target.path or pair.target.id, **(vllm_options or {})}
        opts.setdefault("dtype", str(pair.target.dtype).replace("torch.", ""))
        vminer = VLLMMiner(*args, **opts)
        results, closer = vminer.mine_many(todo), vminer.close
    elif config.inflight > 1:
        results = PipelinedMiner(*args).mine_many(todo)
    else:
        miner = Miner(*args)
        results = (miner.mine(ex, index=i) for i, ex in todo)
    labels = important = 0
    try:
        with torch.inference_mode(), _progress(progress) as bar:
            job = bar.add_task("mining", total=len(todo), labels=0, imp="-") if bar else None
            for res in results:  # in completion order; the store files each prompt by index
                store.write_prompt(res)
                labels += len(res.records)
                important += sum(r.label for r in res.records)
                if bar:
                    rate = f"{important / labels:.0%}" if labels else "-"
                    bar.update(job, advance=1, labels=labels, imp=rate)
    finally:
        if hasattr(results, "close"):
            results.close()  # stops the in-flight prompts and the check thread
        if closer is not None:
            closer()
    return store.write_summary()


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("prompts | labels {task.fields[labels]} | important {task.fields[imp]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays machine-readable
    )
