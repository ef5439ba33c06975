"""Mining on the batched engine: the rollouts of every in-flight prompt advance together.

:class:`BatchedMiner` is a :class:`~autojudge.core.mining.pipelined.PipelinedMiner`
whose rollout backend is :class:`BatchedRollouts`, an *incremental* backend:
a rollout request is admitted as soon as its prompt asks for it, each
:meth:`BatchedRollouts.step` runs ONE target forward over every live rollout,
and a finished rollout goes straight back to its prompt (whose next request may
be admitted before the next step). Rows leave and join between steps, so the
batch stays full while prompts wait for their answer checks.

Where the passes go:

* **admission** (:meth:`BatchedRollouts.submit`): the prompt's own
  :class:`~autojudge.core.runner.ModelRunner` (the one its features use)
  prefills the rollout prompt, reusing its longest common prefix with what it
  already holds (a swap shares all but a few tokens with the previous one); its
  KV cache is then handed to the batch (:meth:`BatchedRunner.merge
  <autojudge.core.batched.BatchedRunner.merge>`), and the prefill's last hidden
  state is the feature ``dt`` (no extra target pass);
* **steps**: one :class:`~autojudge.core.batched.BatchedRunner` forward over all
  live rows; a row feeds its pending token plus, while the rollout follows the
  response it swapped into, that response's continuation
  (:class:`~autojudge.core.drafters.RejoinDrafter` over a
  :class:`~autojudge.core.drafters.LookupDrafter`, no draft model). Rows are
  right-padded to one width, so the width is chosen per step to maximise
  expected tokens per computed token (:func:`choose_width`): with many rows in
  flight the passes are compute-bound and padding would waste what lookup saves;
* **per prompt, batch 1**: the draft's teacher-forced argmax and the features
  (prefills of hundreds of tokens: already GEMM-shaped).

Every rollout is the target's greedy continuation whatever the batch, the
width or the proposals (verification is exact), so the records equal
:meth:`Miner.mine <autojudge.core.mining.steps.Miner.mine>`'s in float32
(tested); in bfloat16 kernels of other shapes round differently and a near-tie
can flip (measured in ``docs/mining.md``). Each prompt records ``backend:
"batched"``; speed counters count the row's own real tokens (not padding).

Memory: one copy of the weights; per in-flight prompt, its feature runners'
KV caches plus its row of the batch cache (:func:`default_inflight` sizes the
number of prompts from the memory available).

Limits: greedy only; full-attention models only; one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autojudge.core.batched import PAD_ID, BatchedRunner
from autojudge.core.drafters import LookupDrafter, NullDrafter, RejoinDrafter
from autojudge.core.engine import StopChecker, default_eos_ids
from autojudge.core.mining.pipelined import EventHook, PipelinedMiner, Slot
from autojudge.core.mining.steps import FeatureMiner, Journal, MiningConfig, Rollout, RolloutRequest
from autojudge.core.runner import ModelRunner
from autojudge.core.task import Task

#: a pass's fixed cost (streaming the weights), in tokens' worth of compute, for :func:`choose_width`
PASS_OVERHEAD_TOKENS = 16.0


def choose_width(wants: Sequence[int], accept_rate: float, overhead: float = PASS_OVERHEAD_TOKENS) -> int:
    """The step's width ``T`` (pending token + up to ``T - 1`` proposed) for rows wanting ``wants`` proposals.

    Every row pays ``T`` tokens of compute (right padding); a row expects
    ``1 + accept_rate * min(want, T - 1)`` tokens. Returns the ``T`` with the
    most expected tokens per computed token (plus ``overhead`` per pass).
    """
    if not wants:
        return 1
    best_t, best = 1, -1.0
    for t in sorted({1, *(w + 1 for w in wants)}):
        useful = sum(1 + accept_rate * min(w, t - 1) for w in wants)
        rate = useful / (len(wants) * t + overhead)
        if rate > best + 1e-12:
            best_t, best = t, rate
    return best_t


@dataclass
class _Row:
    slot: Slot
    req: RolloutRequest
    stopper: StopChecker
    drafter: RejoinDrafter | None
    out: list[int]
    prefill_hidden: torch.Tensor
    forwards: int = 1  # the admission prefill
    tokens: int = 0

    @property
    def seq(self) -> list[int]:
        return self.req.prompt_ids + self.out


class BatchedRollouts:
    """Greedy rollouts of many prompts in one batch, rows admitted and retired between steps.

    Incremental rollout backend of :class:`~autojudge.core.mining.pipelined.PipelinedMiner`:
    :meth:`submit` admits a request (prefilled with the slot's own runner),
    :meth:`step` runs one batched target pass and returns the rollouts that finished.
    """

    incremental = True

    def __init__(
        self,
        target_model: torch.nn.Module,
        tokenizer: Any,
        stop_sequences: Sequence[str],
        eos_token_ids: set[int],
        *,
        min_k: int = 8,
        max_k: int = 32,
        lookup_max_ngram: int = 3,
        compact_slack: int = 32,
    ):
        self.target_model, self.tokenizer = target_model, tokenizer
        self.stops = tuple(s for s in stop_sequences if s)
        self.eos = set(eos_token_ids)
        self.min_k, self.max_k, self.lookup_max_ngram = min_k, max_k, lookup_max_ngram
        self.runner = BatchedRunner(target_model, compact_slack=compact_slack)
        self.device = self.runner.device
        self.rows: list[_Row] = []
        self.finished: list[tuple[Slot, Rollout]] = []
        # speed counters: passes, row-tokens computed (padding included) and real tokens fed
        self.steps = self.computed_tokens = self.useful_tokens = 0
        self.lookup_proposed = self.lookup_accepted = 0

    @property
    def busy(self) -> bool:
        """Rows are decoding or finished rollouts wait to be collected."""
        return bool(self.rows or self.finished)

    @property
    def accept_rate(self) -> float:
        """Fraction of proposed lookup tokens the target accepted so far (0.8 before any)."""
        if self.lookup_proposed < 32:
            return 0.8
        return self.lookup_accepted / self.lookup_proposed

    # -- admission -----------------------------------------------------------------------------
    @torch.inference_mode()
    def submit(self, slot: Slot, req: RolloutRequest) -> None:
        """Prefill ``req`` with the slot's own target runner and add it to the batch."""
        runner: ModelRunner = slot.miner.engine.target
        prompt = list(req.prompt_ids)
        n = runner.reuse(prompt)
        h = runner.extend(torch.tensor(prompt[n:], dtype=torch.long, device=runner.device))
        last = h[-1]
        first = int(runner.logits(last[None]).argmax(-1))
        stopper = StopChecker(self.tokenizer, self.stops, self.eos, req.max_new_tokens)
        drafter = None
        if req.reference is not None:
            lookup = LookupDrafter(max_ngram=self.lookup_max_ngram, min_ngram=1, positional=True)
            lookup.set_reference(req.reference, start=req.start, seq_len=len(prompt))
            drafter = RejoinDrafter(lookup, NullDrafter(), fallback_k=1, min_k=min(self.min_k, self.max_k),
                                    max_k=self.max_k)  # fmt: skip
        row = _Row(slot, req, stopper, drafter, [first], last.clone(), tokens=len(prompt) - n)
        done = stopper.check(row.out, 0)
        if done is not None:
            self._finish(row, done)
            return
        single = BatchedRunner(self.target_model)
        fork = runner.fork()
        assert fork.cache is not None
        single.cache = fork.cache
        S = runner.length
        single.valid = torch.ones(1, S, dtype=torch.bool, device=self.device)
        single.pos = torch.arange(S, device=self.device)[None]
        single.length = torch.tensor([S], dtype=torch.long, device=self.device)
        self.runner.merge(single)
        self.rows.append(row)

    def _finish(self, row: _Row, done: tuple[int, str]) -> None:
        """Hand the row's rollout, cut where ``row.stopper`` said (``done``), to its prompt."""
        cut, reason = done
        tokens = row.out[:cut]
        self.finished.append(
            (
                row.slot,
                Rollout(
                    tokens=tokens,
                    finish_reason=reason,
                    text=row.stopper.final_text(tokens, reason),
                    target_forwards=row.forwards,
                    target_tokens=row.tokens,
                    prefill_hidden=row.prefill_hidden,
                ),
            )
        )

    # -- one step ------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[tuple[Slot, Rollout]]:
        """One target pass over every live row; returns (and forgets) the rollouts finished since the last call."""
        if self.rows:
            self._pass()
        out, self.finished = self.finished, []
        return out

    def _propose(self, row: _Row, k: int) -> list[int]:
        if row.drafter is None or k <= 0:
            return []
        return row.drafter.propose(row.seq, k).tokens.tolist()

    def _pass(self) -> None:
        rows, dev = self.rows, self.device
        B = len(rows)
        budgets = [min(self.max_k, r.req.max_new_tokens - len(r.out) - 1) for r in rows]
        props = [self._propose(r, k) for r, k in zip(rows, budgets, strict=True)]
        width = choose_width([len(p) for p in props], self.accept_rate)
        for b, r in enumerate(rows):  # the width cut these: ask again (a lookup proposal is deterministic)
            if len(props[b]) > width - 1:
                props[b] = self._propose(r, width - 1)
        m = [len(p) for p in props]
        T = max(m) + 1
        seq_len = [len(r.req.prompt_ids) + len(r.out) for r in rows]
        feed = torch.full((B, T), PAD_ID, dtype=torch.long)
        for b, r in enumerate(rows):
            feed[b, 0] = r.out[-1]
            if m[b]:
                feed[b, 1 : 1 + m[b]] = torch.tensor(props[b], dtype=torch.long)
        n = torch.tensor([x + 1 for x in m], dtype=torch.long, device=dev)
        h = self.runner.extend(feed.to(dev), n)
        # logits only where a row has a real token
        bi = torch.cat([torch.full((x + 1,), b, dtype=torch.long) for b, x in enumerate(m)]).to(dev)
        ii = torch.cat([torch.arange(x + 1) for x in m]).to(dev)
        g = self.runner.logits(h[bi, ii]).argmax(-1).tolist()
        self.steps += 1
        self.computed_tokens += B * T
        self.useful_tokens += sum(m) + B
        keep_len, keep, at = [], [], 0
        for b, r in enumerate(rows):
            gb, at = g[at : at + m[b] + 1], at + m[b] + 1
            a = 0
            while a < m[b] and props[b][a] == gb[a]:
                a += 1
            if r.drafter is not None and m[b]:
                r.drafter.accepted(seq_len[b] + a)
                self.lookup_proposed += m[b]
                self.lookup_accepted += a
            start = len(r.out)
            r.out.extend(props[b][:a] + [gb[a]])
            r.forwards += 1
            r.tokens += m[b] + 1
            keep_len.append(seq_len[b] + a)
            done = r.stopper.check(r.out, start)
            if done is not None:
                self._finish(r, done)
            else:
                keep.append(b)
        self.runner.crop(torch.tensor(keep_len, dtype=torch.long, device=dev))
        if len(keep) < B:
            self.runner.select(keep)
            self.rows = [rows[b] for b in keep]


def _kv_bytes_per_token(model: torch.nn.Module) -> int:
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    itemsize = next(model.parameters()).element_size() if next(model.parameters()).is_floating_point() else 2
    return 2 * cfg.num_hidden_layers * heads * head_dim * max(itemsize, 2)


def _model_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = id(t) if t.is_mkldnn else t.data_ptr()  # a packed weight (opaque layout) has no data pointer
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def available_memory_bytes() -> int:
    """Memory this process may still use: ``MemAvailable`` (Linux), capped by a cgroup limit if any."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            raw = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if raw != "max":
            avail = min(avail, int(raw) - used)
    except (OSError, ValueError):
        pass
    return int(avail)


#: peak resident memory the default ``inflight`` aims to stay under (issue 16: <= 10 GB on the Qwen pair)
DEFAULT_MEMORY_CAP = 10 * 10**9


def default_inflight(
    target: torch.nn.Module,
    draft: torch.nn.Module,
    max_new_tokens: int,
    *,
    prompt_tokens: int = 256,
    cap_bytes: int | None = DEFAULT_MEMORY_CAP,
    lo: int = 4,
    hi: int = 48,
) -> int:
    """Prompts in flight for :class:`BatchedMiner` sized to the memory left after the weights.

    Per prompt: the target KV four times (its feature runner, its batch row, the batch's
    holes and the per-pass copy) and the draft KV twice, over ``prompt_tokens + 2 *
    max_new_tokens`` tokens (a response adopted after a swap may outgrow ``max_new_tokens``).
    Measured: 32 in flight under the previous, smaller estimate peaked at 11.46 GB on the Qwen pair
    (bf16, GSM8K, every mismatch); 24 in flight at 8.65 GB (at most 3 labels per prompt). The budget is ``min(MemAvailable, cap_bytes) -
    weights - 1.5 GB`` (activations, logits, the process); clamped to ``[lo, hi]``.
    """
    weights = _model_bytes(target) + _model_bytes(draft)
    budget = available_memory_bytes() + _rss_bytes()
    if cap_bytes is not None:
        budget = min(budget, cap_bytes)
    budget -= weights + int(1.5 * 10**9)
    tokens = prompt_tokens + 2 * max_new_tokens
    per_prompt = tokens * (4 * _kv_bytes_per_token(target) + 2 * _kv_bytes_per_token(draft))
    return max(lo, min(hi, budget // max(per_prompt, 1)))


def _rss_bytes() -> int:
    """This process's resident memory (weights already loaded count against the budget, not twice)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class BatchedMiner(PipelinedMiner):
    """Algorithm 1 with the rollouts of ``config.inflight`` prompts batched (see the module docstring)."""

    def __init__(
        self,
        task: Task,
        target: torch.nn.Module,
        draft: torch.nn.Module,
        tokenizer: Any,
        config: MiningConfig,
        *,
        on_event: EventHook | None = None,
        journal: Journal | None = None,
    ):
        if config.naive:
            raise ValueError("naive mining regenerates rollouts token by token: use the sequential driver")
        rollouts = BatchedRollouts(
            target,
            tokenizer,
            task.stop_sequences,
            default_eos_ids(target, tokenizer),
            max_k=config.rollout_k,
            min_k=min(8, config.rollout_k),
            lookup_max_ngram=config.lookup_max_ngram,
        )
        super().__init__(
            task, target, draft, tokenizer, config, rollouts=rollouts, on_event=on_event, journal=journal,
            miner_factory=lambda: FeatureMiner(task, target, draft, tokenizer, config, backend="batched"),
        )  # fmt: skip
