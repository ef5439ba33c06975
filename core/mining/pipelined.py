"""Mining with several prompts in flight: checks overlap model work; rollouts may be batched.

:class:`PipelinedMiner` runs :meth:`Miner.steps <autojudge.core.mining.steps.Miner.steps>`
(Algorithm 1 as a step machine) for up to ``inflight`` prompts at once:

* every in-flight prompt has its own :class:`~autojudge.core.mining.steps.Miner` (its
  own KV caches, the models' weights shared), so a prompt's rollouts reuse its
  own prefix cache exactly as when it is mined alone;
* check requests (correctness, equivalence) go to one background thread, which
  answers everything queued in one :func:`~autojudge.core.mining.run_checks`
  call (the task's ``equivalent_outcomes`` batch: the math tasks' process pool,
  the code tasks' sandboxes, one LLM comparer batch). Only that thread calls the
  task's checks, one batch at a time, as the sequential miner does;
* meanwhile the models advance the other prompts: rollouts run in the main
  thread, lowest prompt index first, by a *rollout backend*: one at a time with
  each prompt's own transformers engine (:class:`EngineRollouts`), or all ready
  rollouts as one batch (the vLLM backend,
  :class:`autojudge.core.mining.vllm.VLLMRollouts`).

Each prompt's records are those :meth:`Miner.mine` gives (the step machine and
its model work are the same; in float32 only the speed counters of the first
response may differ, by the prefix it shares with the prompt the miner held
before). Results come out in completion order, which may differ from index
order; :class:`~autojudge.core.mining.store.MinedStore` files them by index.

An *incremental* backend (:class:`IncrementalRolloutBackend`: the batched engine,
:class:`autojudge.core.mining.batched.BatchedRollouts`) instead admits each request
when its prompt makes it and advances all admitted rollouts one batched pass per
loop turn, handing finished ones back between passes.

Limits: one process; with :class:`EngineRollouts` the transformers models run one
request at a time (the gain is the checks' time, hidden behind model work, not
batching); memory grows with ``inflight`` (one set of KV caches per prompt in flight).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autojudge.core.mining.steps import (
    CheckRequest,
    CheckResult,
    Journal,
    Miner,
    MiningConfig,
    MiningSteps,
    PromptResult,
    Rollout,
    RolloutRequest,
    run_checks,
)
from autojudge.core.task import Example, Task

#: ``on_event(kind, index)``: "start", "rollout_start", "rollout_end", "check_submit", "check_done", "finish"
EventHook = Callable[[str, int], None]


@dataclass
class Slot:
    """One in-flight prompt: its miner (caches), step machine and index in the split."""

    miner: Miner
    index: int = -1
    steps: MiningSteps | None = None


class RolloutBackend(Protocol):
    """Runs rollout requests of in-flight prompts; ``max_batch`` requests per :meth:`run` call."""

    max_batch: int

    def run(self, jobs: list[tuple[Slot, RolloutRequest]]) -> list[Rollout]: ...


class IncrementalRolloutBackend(Protocol):
    """Admits rollout requests one by one and advances all of them a step at a time
    (:class:`autojudge.core.mining.batched.BatchedRollouts`); marked by ``incremental = True``."""

    incremental: bool

    @property
    def busy(self) -> bool: ...

    def submit(self, slot: Slot, req: RolloutRequest) -> None: ...

    def step(self) -> list[tuple[Slot, Rollout]]: ...


class EngineRollouts:
    """Each rollout on its own prompt's transformers engine, one at a time."""

    max_batch = 1

    def run(self, jobs: list[tuple[Slot, RolloutRequest]]) -> list[Rollout]:
        return [slot.miner.rollout(req) for slot, req in jobs]


class _CheckThread:
    """One daemon thread answering queued check requests in batches (:func:`run_checks`)."""

    def __init__(self, task: Task):
        self.task = task
        self.todo: queue.Queue[tuple[Slot, CheckRequest] | None] = queue.Queue()
        self.done: queue.Queue[tuple[Slot, CheckResult | BaseException]] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="autojudge-mining-checks", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            first = self.todo.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while True:
                try:
                    item = self.todo.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                results: list[Any] = run_checks(self.task, [req for _, req in batch])
            except BaseException as e:  # handed to the main thread, which raises it
                results = [e] * len(batch)
            for (slot, _), res in zip(batch, results, strict=True):
                self.done.put((slot, res))
            if stop:
                return

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join(timeout=60)


class PipelinedMiner:
    """Algorithm 1 for many prompts, ``config.inflight`` at a time (see the module docstring)."""

    def __init__(
        self,
        task: Task,
        target: torch.nn.Module,
        draft: torch.nn.Module,
        tokenizer: Any,
        config: MiningConfig,
        *,
        rollouts: RolloutBackend | IncrementalRolloutBackend | None = None,
        on_event: EventHook | None = None,
        miner_factory: Callable[[], Miner] | None = None,
        journal: Journal | None = None,
    ):
        if config.inflight < 1:
            raise ValueError(f"inflight must be >= 1, got {config.inflight}")
        self.task, self.config = task, config
        self.rollouts = rollouts or EngineRollouts()
        self.on_event = on_event
        make = miner_factory or (lambda: Miner(task, target, draft, tokenizer, config))
        self.slots = [Slot(make()) for _ in range(config.inflight)]
        for slot in self.slots:  # every in-flight prompt saves its progress after each label
            slot.miner.journal = journal

    def _event(self, kind: str, index: int) -> None:
        if self.on_event is not None:
            self.on_event(kind, index)

    def mine_many(self, items: Iterable[tuple[int, Example]]) -> Iterator[PromptResult]:
        """Mine ``(index, example)`` pairs; yields each prompt's result when it is complete."""
        todo = iter(items)
        free = list(reversed(self.slots))
        ready: list[tuple[Slot, RolloutRequest]] = []
        finished: list[PromptResult] = []
        checks = _CheckThread(self.task)
        outstanding = 0

        def advance(slot: Slot, value: Any) -> None:
            nonlocal outstanding
            assert slot.steps is not None
            try:
                req = next(slot.steps) if value is None else slot.steps.send(value)
            except StopIteration as stop:
                self._event("finish", slot.index)
                finished.append(stop.value)
                slot.steps = None
                free.append(slot)
                return
            if isinstance(req, RolloutRequest):
                ready.append((slot, req))
            else:
                self._event("check_submit", slot.index)
                outstanding += 1
                checks.todo.put((slot, req))

        def take_check(block: bool) -> bool:
            nonlocal outstanding
            try:
                slot, res = checks.done.get(block=block)
            except queue.Empty:
                return False
            outstanding -= 1
            if isinstance(res, BaseException):
                raise res
            self._event("check_done", slot.index)
            advance(slot, res)
            return True

        try:
            exhausted = False
            while True:
                while free and not exhausted:  # fill free slots with new prompts
                    nxt = next(todo, None)
                    if nxt is None:
                        exhausted = True
                        break
                    slot = free.pop()
                    slot.index, slot.steps = nxt[0], slot.miner.steps(nxt[1], nxt[0])
                    self._event("start", slot.index)
                    advance(slot, None)
                while take_check(block=False):
                    pass
                yield from finished
                finished.clear()
                incremental = getattr(self.rollouts, "incremental", False)
                if incremental and (ready or self.rollouts.busy):  # type: ignore[union-attr]
                    ready.sort(key=lambda job: job[0].index)
                    for slot, req in ready:
                        self._event("rollout_start", slot.index)
                        self.rollouts.submit(slot, req)  # type: ignore[union-attr]
                    ready.clear()
                    for slot, res in self.rollouts.step():  # type: ignore[union-attr]
                        self._event("rollout_end", slot.index)
                        advance(slot, res)
                    self._event("step", -1)  # one batched pass done (a heartbeat for progress lines)
                elif ready:
                    ready.sort(key=lambda job: job[0].index)
                    jobs, ready[:] = ready[: self.rollouts.max_batch], ready[self.rollouts.max_batch :]
                    for slot, _ in jobs:
                        self._event("rollout_start", slot.index)
                    results = self.rollouts.run(jobs)  # type: ignore[union-attr]
                    for (slot, _), res in zip(jobs, results, strict=True):
                        self._event("rollout_end", slot.index)
                        advance(slot, res)
                elif outstanding:
                    take_check(block=True)
                elif exhausted and len(free) == len(self.slots):
                    break
                yield from finished
                finished.clear()
        finally:
            checks.close()
            for slot in self.slots:
                if slot.steps is not None:
                    slot.steps.close()
                    slot.steps = None
