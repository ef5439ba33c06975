"""Run mining over a task split: the library API behind ``aj mine``.

:func:`mine_task` loads the split, skips prompts already done (``resume``),
keeps only this process's share (``shard=(i, n)`` takes indices ``i mod n``),
runs :class:`~autojudge.core.mining.steps.Miner` on the remaining prompts (several in
flight, ``MiningConfig.inflight``; rollouts on vLLM with ``backend="vllm"``),
writes each result atomically as soon as it is finished (and each unfinished prompt's labels as
they come, ``partial/``), shows progress (prompts, labels, important rate, ETA) and writes
``summary.json`` at the end, also when stopped by ``KeyboardInterrupt`` or an error (re-raised after).
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
from autojudge.core.mining.steps import Journal, Miner, MiningConfig, PromptProgress
from autojudge.core.mining.store import MinedStore
from autojudge.core.progress import ProgressLine
from autojudge.core.task import Task

#: how the transformers backend schedules prompts (see :func:`mine_task`); labels do not depend on it
DRIVERS = ("batched", "pipelined", "sequential")


def mining_meta(
    task: Task, split: str, pair: Any, config: MiningConfig, shard: tuple[int, int] | None
) -> dict[str, Any]:
    # a task that reads one of several data sets (``--dataset``, LiveCodeBench releases) says which in info()
    dataset = task.info().get("dataset")
    quant = getattr(pair.target, "quant", "none")
    return {
        "task": task.name,
        **({"dataset": dataset} if dataset is not None else {}),
        "split": split,
        "draft": pair.draft.fingerprint(),
        "target": pair.target.fingerprint(),
        "settings": {**config.label_settings(), "dtype": str(pair.target.dtype).replace("torch.", "")},
        # additive: only int8 runs carry it, so older directories resume unchanged; a resume with
        # another --quant differs here and is refused like a dtype change
        **({"quant": quant} if quant != "none" else {}),
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
    driver: str = "batched",
) -> dict[str, Any]:
    """Mine ``task``'s split with ``pair`` (a ``ModelPair``) into ``out``; returns the summary.

    ``driver`` (transformers backend): ``"batched"`` (default) keeps ``config.inflight`` prompts in
    flight and runs all their rollouts in one batch (:class:`~autojudge.core.mining.batched.BatchedMiner`);
    ``"pipelined"`` keeps them in flight with one rollout at a time
    (:class:`~autojudge.core.mining.pipelined.PipelinedMiner`); ``"sequential"`` mines one prompt
    after the other with :meth:`Miner.mine` (also what ``inflight=1`` or ``config.naive`` give). ``backend="vllm"`` runs the rollouts on vLLM
    (:class:`~autojudge.core.mining.vllm.VLLMMiner`, ``vllm_options`` passed to it; its vLLM engine
    comes from :func:`autojudge.core.backends.open_vllm` unless ``vllm_options["engine"]``); the labels
    and ``meta.json`` are the same as with ``"transformers"``, each prompt records its backend.
    """
    config = config or MiningConfig()
    split = split or task.mining_split
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"bad shard {shard}: need 0 <= i < n")
    t_start = time.perf_counter()  # summary.json's `seconds`: wall time, not the prompts' overlapping times
    examples = task.load(
        split, data_dir=data_dir, limit=limit
    )  # a missing data set fails before OUT is written
    store = MinedStore(out)
    store.open(mining_meta(task, split, pair, config, shard), resume=resume)
    done = store.done_indices()
    todo = [
        (i, ex)
        for i, ex in enumerate(examples)
        if i not in done and (shard is None or i % shard[1] == shard[0])
    ]
    check_backend(backend)
    if driver not in DRIVERS:
        raise ValueError(f"unknown mining driver {driver!r}; use one of {', '.join(DRIVERS)}")
    if config.naive or config.inflight == 1:
        driver = "sequential"
    waiting = store.unfinished_counts()
    finished_rows = store.label_rows()
    counter = _LabelCounter(
        labels_before=len(finished_rows) + waiting["labels_unfinished"],
        important_before=sum(int(r["label"]) for r in finished_rows) + waiting["important_unfinished"],
    )
    # unfinished prompts save their labels as they come (resume continues them); the counter sees each one
    journal = _CountingJournal(store.journal(), counter)
    args = (task, pair.target.model, pair.draft.model, pair.tokenizer, config)
    closer = None
    if backend == "vllm":
        from autojudge.core.mining.vllm import VLLMMiner

        opts = {"target_path": pair.target.path or pair.target.id, **(vllm_options or {})}
        opts.setdefault("dtype", str(pair.target.dtype).replace("torch.", ""))
        vminer = VLLMMiner(*args, journal=journal, **opts)
        results, closer = vminer.mine_many(todo), vminer.close
    elif driver == "batched":
        from autojudge.core.mining.batched import BatchedMiner

        results = BatchedMiner(*args, on_event=counter.event, journal=journal).mine_many(todo)
    elif driver == "pipelined":
        results = PipelinedMiner(*args, on_event=counter.event, journal=journal).mine_many(todo)
    else:
        miner = Miner(*args, journal=journal)
        results = (miner.mine(ex, index=i) for i, ex in todo)
    stopped: BaseException | None = None
    try:
        with (
            torch.inference_mode(),
            ProgressLine("mining", len(todo), unit="prompts", enabled=progress) as bar,
        ):
            counter.bar = bar
            for res in results:  # in completion order; the store files each prompt by index
                store.write_prompt(res)
                counter.prompt_done(res)
    except (KeyboardInterrupt, Exception) as e:  # Ctrl-C / SIGTERM (aj mine), or a failure such as
        stopped = e  # a broken check pool: the summary still records what this session finished
    finally:
        if hasattr(results, "close"):
            results.close()  # stops the in-flight prompts and the check thread
        if closer is not None:
            closer()
    try:
        summary = store.write_summary(session_seconds=time.perf_counter() - t_start, prompts_before=len(done))
    except Exception as e:
        if stopped is None:
            raise
        # the session's own failure (a full disk, say) is the error to report; the next run
        # rewrites the summary from the prompts on disk (its wall time then marked partial)
        stopped.add_note(f"summary.json was not written either: {e}")
    if stopped is not None:
        raise stopped
    return summary


class _LabelCounter:
    """Mining progress: prompts done (the bar's count and ETA) and labels in the directory (its note).

    A label counts when it is decided: the journal saves every label of an unfinished prompt
    (:class:`_CountingJournal` reports it here). Labels a resumed prompt carried over from an earlier
    run are already in ``labels_before`` (what the directory held at the start) and are not counted
    again, so ``labels`` is the directory's total and ``+N`` what this run added.
    """

    def __init__(self, labels_before: int = 0, important_before: int = 0) -> None:
        self.bar: ProgressLine | None = None
        self.prompts = 0
        self.labels_before, self.important_before = labels_before, important_before
        self.labels = self.important = 0  # decided in this run
        self.seen: dict[int, int] = {}  # records of each in-flight prompt counted so far (restored ones too)
        self.rollouts = 0  # rollouts running now

    def note(self) -> str:
        total, important = self.labels_before + self.labels, self.important_before + self.important
        rate = f"{important / total:.0%}" if total else "-"
        new = f" (+{self.labels} in this run)" if self.labels_before else ""
        return f"labels {total}{new} | important {rate} | {self.rollouts} rollouts running"

    def restored(self, index: int, records: int) -> None:
        """Prompt ``index`` resumes with ``records`` labels of an earlier run (counted in ``labels_before``)."""
        self.seen[index] = records

    def records(self, index: int, records: list[Any]) -> None:
        """Prompt ``index`` now holds ``records``: count the ones not seen before."""
        new = records[self.seen.get(index, 0) :]
        self.labels += len(new)
        self.important += sum(int(r.label) for r in new)
        self.seen[index] = len(records)
        self._refresh()

    def event(self, kind: str, index: int) -> None:
        """Every driver event refreshes the line (plain lines are throttled, ``AJ_PROGRESS_EVERY``),
        so a long first response or rollout still shows the run is alive."""
        if kind == "rollout_start":
            self.rollouts += 1
        elif kind == "rollout_end":
            self.rollouts = max(0, self.rollouts - 1)
        self._refresh()

    def prompt_done(self, res: Any) -> None:
        self.records(res.index, res.records)  # a label the journal did not see (none, normally)
        self.seen.pop(res.index, None)
        self.prompts += 1
        self._refresh()

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.update(self.prompts, note=self.note())


class _CountingJournal:
    """The store's journal, telling ``counter`` of each prompt's restored and newly saved labels."""

    def __init__(self, inner: Journal, counter: _LabelCounter) -> None:
        self.inner, self.counter = inner, counter

    def load(self, index: int, prompt_id: str) -> PromptProgress | None:
        saved = self.inner.load(index, prompt_id)
        self.counter.restored(index, len(saved.records) if saved is not None else 0)
        return saved

    def save(self, progress: PromptProgress) -> None:
        self.inner.save(progress)
        self.counter.records(progress.index, progress.records)
