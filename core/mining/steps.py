"""Mining important mismatches: the semi-greedy search of the AutoJudge paper (Algorithm 1).

For one prompt ``x``:

1. ``y`` = the target's greedy response; ``a`` = its answer (``task.extract_answer``).
2. Teacher-force the draft over ``x + y``; mismatches are response positions
   where the draft's argmax differs from ``y``.
3. Take the first mismatch ``t`` not yet visited; build ``y[:t] + draft_token``
   and let the target continue greedily (the *rollout*); ``b`` = its answer.
4. ``task.equivalent(a, b)``: equivalent -> label *unimportant*, adopt the
   rollout as ``y`` and recompute the draft's argmax after ``t``; otherwise
   label *important* and keep ``y``. Continue with mismatches after ``t``.

Labels compare with the target's **own** answer ``a``; whether ``a`` and ``b``
are correct against the reference is recorded too. Prompts whose original
response has no answer are skipped (every swap would look "important").

What makes it cheap without changing a label (all exact in float32):

* the target and draft KV caches keep the longest common prefix between calls
  (:meth:`ModelRunner.reuse`), so a rollout only feeds the swapped token;
* rollouts stop at the task's stop sequences and EOS;
* rollouts run *lossless* speculative decoding whose drafter proposes the
  current response's own continuation (:class:`LookupDrafter`, re-aligned by
  n-gram or position after the swap) while the rollout follows it, and the
  draft model after a lookup proposal is rejected, until the rollout re-joins
  the response (:class:`RejoinDrafter`): being lossless, the output is exactly
  the plain greedy rollout, at a fraction of the sequential target passes;
* equivalence checks go through ``task.equivalent_outcomes`` (the math tasks run
  them in a process pool with per-check timeouts); with several prompts in
  flight they run in a background thread while the models advance other prompts;
* on vLLM, the rollouts of all in-flight prompts run as one batched,
  prefix-cached ``generate`` per round.

``naive=True`` runs the same algorithm the reference way (each rollout
regenerated token by token from scratch, no cache reuse, draft argmax
recomputed from scratch); the benchmark compares the two and checks the labels
are identical.

Features per labelled mismatch (float32, see ``docs/formats.md``): ``dt`` and
``tt`` (target hidden state at the position holding the draft / the target
token), ``dd`` (draft hidden state at the position holding the draft token),
``x`` (p_draft, entropy, margin from the target's logits there), ``draft_rank``.

The algorithm is written once, as a per-prompt *step machine*
(:meth:`Miner.steps`, a generator): it yields :class:`RolloutRequest` ("the
target's greedy continuation of these tokens") and :class:`CheckRequest` ("is
this answer correct / equivalent to that one") and receives a :class:`Rollout`
or :class:`CheckResult` back; the draft argmax and the features it computes
itself with the transformers models (single cheap prefills). Drivers run it:

* :meth:`Miner.mine`: one prompt, everything in turn (the reference driver);
* :class:`autojudge.core.mining.pipelined.PipelinedMiner`: several prompts in
  flight; checks run in a background thread (through the task's own pool)
  while the models advance another prompt;
* :class:`autojudge.core.mining.vllm.VLLMMiner`: the rollouts of all
  in-flight prompts as one batched vLLM ``generate`` with prefix caching.

Every driver gives the same records as :meth:`Miner.mine` (float32; speed
counters aside).

Limits: greedy only; the search is sequential within a prompt because each
decision changes the response the next one starts from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import torch

from autojudge.core.compare.pool import CheckOutcome
from autojudge.core.drafters import DraftModelDrafter, LookupDrafter, RejoinDrafter
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.judge import compute_extras
from autojudge.core.runner import ModelRunner
from autojudge.core.task import Example, Task


@dataclass
class MiningConfig:
    """Settings that change labels or features are recorded in the mined ``meta.json``."""

    max_new_tokens: int = 512
    draft_k: int = 5  # draft length for the initial response and draft-model fallback in rollouts
    rollout_k: int = 32  # longest lookup proposal in rollouts (lookup proposals start at 8 tokens)
    lookup_max_ngram: int = 3
    max_mismatches: int | None = None  # stop a prompt after this many labels (None: all)
    #: extra tokens a rollout may generate beyond ``max_new_tokens`` in total (a swap may lengthen the
    #: response; a rollout cut by the budget is not evidence that the swap matters); ``None``: ``max_new_tokens // 2``
    rollout_headroom: int | None = None
    naive: bool = False  # the reference algorithm: rollouts regenerated from scratch
    inflight: int = 4  # prompts in flight (PipelinedMiner / VLLMMiner); 1 = one prompt at a time

    @property
    def headroom(self) -> int:
        """Tokens a rollout may run past ``max_new_tokens`` (see ``rollout_headroom``)."""
        return self.max_new_tokens // 2 if self.rollout_headroom is None else self.rollout_headroom

    def rollout_budget(self, position: int) -> int:
        """New tokens a rollout swapped in at response ``position`` may generate."""
        return max(self.max_new_tokens + self.headroom - (position + 1), 1)

    def label_settings(self) -> dict[str, Any]:
        """The settings that determine labels (speed-only settings excluded)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "max_mismatches": self.max_mismatches,
            "rollout_headroom": self.headroom,
        }


@dataclass
class MismatchRecord:
    prompt_id: str
    position: int  # index in the response (0 = first generated token)
    draft_token: int
    target_token: int
    label: int  # 1 = important
    answer_original: Any
    answer_alternative: Any
    correct_original: bool
    correct_alternative: bool
    timed_out: bool
    rollout_target_forwards: int
    rollout_target_tokens: int
    #: why the equivalence check failed (sandbox, judge endpoint, crash), else None; the label is then 1
    check_error: str | None = None
    #: how the rollout ended: "eos", "stop" or "length" (``length``: cut by the token budget, see ``truncated``)
    finish_alternative: str = ""
    #: the alternative response from the swapped token on (audit text; middle elided past AUDIT_CHARS)
    alternative_text: str = ""
    features: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    @property
    def truncated(self) -> bool:
        """The rollout hit its token budget: its answer (or lack of one) says little about the swap."""
        return self.finish_alternative == "length"

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("features")
        d["truncated"] = self.truncated
        return d


@dataclass
class PromptResult:
    prompt_id: str
    index: int
    response: str
    answer: Any
    correct: bool | None
    records: list[MismatchRecord]
    final_response: str
    skipped: str | None = None  # reason, when the prompt yields no labels by design
    target_forwards: int = 0  # sequential target passes, all stages
    target_tokens: int = 0  # tokens fed to the target, all stages
    rollouts: int = 0
    seconds: float = 0.0  # start to finish (with several prompts in flight, includes waiting for the others)
    # what ran the rollouts ("transformers", "batched" or "vllm"); labels do not depend on it
    backend: str = "transformers"
    finish_reason: str = ""  # how the original response ended ("eos", "stop", "length")

    def summary_row(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "records"}
        d["num_labels"] = len(self.records)
        d["num_important"] = sum(r.label for r in self.records)
        return d


@dataclass
class PromptProgress:
    """Where one prompt's search stands after its latest label: enough to continue it exactly.

    A :class:`Journal` saves it after every label and hands it back when the prompt is mined
    again (``aj mine --resume``), so a run stopped mid-prompt loses at most the label being
    decided. The original answer is not stored: it is re-extracted from ``response`` (answers
    need not survive a JSON round trip).
    """

    index: int
    prompt_id: str
    response: str  # the original response's text
    correct: bool | None  # the original answer against the reference
    finish_reason: str  # how the original response ended
    tokens: list[int]  # the current response ``y``: the original, or the latest adopted rollout
    text: str  # its text
    next_pos: int  # first response position not yet visited
    records: list[MismatchRecord]
    rollouts: int
    target_forwards: int
    target_tokens: int
    seconds: float  # time spent on the prompt so far (all sessions)


class Journal(Protocol):
    """Keeps :class:`PromptProgress` of unfinished prompts (``MinedStore.journal`` is the one on disk)."""

    def load(self, index: int, prompt_id: str) -> PromptProgress | None:
        """The saved progress of prompt ``index`` (``None``: start it from the beginning)."""
        ...

    def save(self, progress: PromptProgress) -> None:
        """Save ``progress`` (called after every label of an unfinished prompt)."""
        ...


def record_from_row(row: dict[str, Any], features: dict[str, torch.Tensor]) -> MismatchRecord:
    """The inverse of :meth:`MismatchRecord.row` (``features`` given separately)."""
    names = {f.name for f in fields(MismatchRecord)} - {"features"}
    return MismatchRecord(**{k: v for k, v in row.items() if k in names}, features=features)


@dataclass
class RolloutRequest:
    """Step-machine request: the target's greedy continuation of ``prompt_ids``.

    At most ``max_new_tokens`` tokens; stops at EOS and the task's stop sequences
    (the engine's :class:`~autojudge.core.engine.StopChecker` rules). ``reference``
    (with ``start``) is the response the rollout is expected to re-join, for the
    lookup drafter; ``None`` for the initial response.
    """

    prompt_ids: list[int]
    max_new_tokens: int
    reference: list[int] | None = None
    start: int = 0


@dataclass
class Rollout:
    """Result of a :class:`RolloutRequest` (``text``: the tokens decoded, cut at the stop sequence)."""

    tokens: list[int]
    finish_reason: str  # "eos", "stop" or "length"
    text: str
    target_forwards: int = 0  # sequential target passes it took (backend-specific speed counter)
    target_tokens: int = 0  # tokens the target computed (backend-specific speed counter)
    #: target hidden state at the last prompt token (``dt``); ``None``: the miner computes it
    prefill_hidden: torch.Tensor | None = None


@dataclass
class CheckRequest:
    """Step-machine request: is ``answer`` correct, and (``original`` given) equivalent to ``original``?"""

    example: Example
    answer: Any
    original: Any = None
    equivalence: bool = False


@dataclass
class CheckResult:
    correct: bool
    outcome: CheckOutcome | None = None  # the equivalence check's outcome (``equivalence`` requests)


#: characters of an alternative response kept for audit (head and tail; the middle is elided)
AUDIT_CHARS = 1200


def audit_text(text: str, limit: int = AUDIT_CHARS) -> str:
    """``text`` when short, else its first and last ``limit // 2`` characters around an elision mark."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} chars ...] {text[-half:]}"


MiningSteps = Generator[RolloutRequest | CheckRequest, Rollout | CheckResult, PromptResult]


def run_checks(task: Task, requests: Sequence[CheckRequest]) -> list[CheckResult]:
    """Answer check requests in order; the equivalence checks go to the task in one batch.

    One ``task.equivalent_outcomes`` call for the whole batch (tasks run it in
    their own pool), then ``task.is_correct`` per answer: the calls
    :meth:`Miner.mine` has always made, only batched.
    """
    eq = [r for r in requests if r.equivalence]
    outcomes = iter(task.equivalent_outcomes([(r.original, r.answer, r.example) for r in eq]) if eq else [])
    out = []
    for r in requests:
        outcome = next(outcomes) if r.equivalence else None
        out.append(CheckResult(correct=bool(task.is_correct(r.answer, r.example)), outcome=outcome))
    return out


def drive(
    steps: MiningSteps,
    rollout: Callable[[RolloutRequest], Rollout],
    check: Callable[[CheckRequest], CheckResult],
) -> PromptResult:
    """Run one prompt's step machine to the end, answering each request as it comes."""
    try:
        req = next(steps)
        while True:
            req = steps.send(rollout(req) if isinstance(req, RolloutRequest) else check(req))
    except StopIteration as stop:
        return stop.value


class Miner:
    """Runs Algorithm 1 for one task and model pair; :meth:`mine` handles one example.

    A miner also holds the KV caches of one prompt at a time: drivers that keep
    several prompts in flight use one miner per in-flight prompt (they share
    the models' weights). ``generates=False`` (vLLM driver) means the target
    runner is used for features only, so it keeps its own cache instead of forking.
    """

    backend = "transformers"

    def __init__(
        self,
        task: Task,
        target: torch.nn.Module,
        draft: torch.nn.Module,
        tokenizer: Any,
        config: MiningConfig,
        *,
        journal: Journal | None = None,
    ):
        self.task, self.tokenizer, self.config = task, tokenizer, config
        #: saves each unfinished prompt's progress after every label, and resumes from it (None: no journal)
        self.journal = journal
        self.engine = SpeculativeEngine(target, draft, tokenizer)
        self.draft_tf = ModelRunner(draft)  # teacher-forced draft passes
        self.fallback = DraftModelDrafter(draft, device=self.engine.device)
        self.lookup = LookupDrafter(
            max_ngram=config.lookup_max_ngram, min_ngram=1, positional=True, device=self.engine.device
        )
        self.rollout_drafter = RejoinDrafter(
            self.lookup,
            self.fallback,
            fallback_k=config.draft_k,
            min_k=min(8, config.rollout_k),
            max_k=config.rollout_k,
        )
        self.generates = True

    # -- model helpers ----------------------------------------------------------------------
    def rollout(self, req: RolloutRequest) -> Rollout:
        """Answer a :class:`RolloutRequest` with this miner's engine (see the module docstring)."""
        cfg = self.config
        common = dict(max_new_tokens=req.max_new_tokens, stop_sequences=self.task.stop_sequences)
        if cfg.naive:
            res = self.engine.generate(req.prompt_ids, mode="ar", reuse_cache=False, **common)
        elif req.reference is None:
            res = self.engine.generate(req.prompt_ids, mode="sd", k=cfg.draft_k, **common)
        else:
            self.lookup.set_reference(req.reference, start=req.start, seq_len=len(req.prompt_ids))
            res = self.engine.generate(
                req.prompt_ids, mode="sd", drafter=self.rollout_drafter, k=cfg.rollout_k, **common
            )
        return Rollout(
            tokens=list(res.tokens),
            finish_reason=res.finish_reason,
            text=res.text,
            target_forwards=res.metrics.num_target_forwards,
            target_tokens=res.metrics.num_target_tokens,
            prefill_hidden=res.prefill_hidden,
        )

    def check(self, req: CheckRequest) -> CheckResult:
        """Answer a :class:`CheckRequest` in this thread."""
        return run_checks(self.task, [req])[0]

    @torch.inference_mode()
    def _draft_argmax(self, seq: list[int], first: int) -> list[int]:
        """Draft argmax predicting ``seq[p]`` for every ``p >= first``."""
        r = self.draft_tf
        if self.config.naive:
            r.reset()
        n = min(r.reuse(seq), first - 1)
        r.crop(n)
        h = r.extend(torch.tensor(seq[n:], dtype=torch.long, device=r.device))
        rows = h[first - 1 - n : len(seq) - 1 - n]
        return r.logits(rows).argmax(-1).tolist()

    @torch.inference_mode()
    def _features(
        self, seq: list[int], pos: int, draft_tok: int, dt: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Features of swapping ``draft_tok`` in at absolute position ``pos`` of ``seq``.

        ``dt`` (target hidden state at the position holding the draft token) comes from
        the rollout's prefill when the engine ran it; otherwise it is computed here.
        """
        tgt = self.engine.target if not self.generates else self.engine.target.fork()
        n = min(tgt.reuse(seq[: pos + 1]), pos - 1)
        tgt.crop(n)
        h = tgt.extend(torch.tensor(seq[n : pos + 1], dtype=torch.long, device=tgt.device))
        logits = tgt.logits(h[-2:-1])  # predicting position pos
        dtok = torch.tensor([draft_tok], device=logits.device)
        if dt is None:
            dt = tgt.fork(pos).extend(dtok)[-1]
        dft = self.draft_tf.fork(pos)
        dd = dft.extend(dtok)[-1]
        rank = (logits[0].float() > logits[0, draft_tok].float()).sum().to(torch.int32)
        return {
            "dt": dt.float().cpu(),
            "tt": h[-1].float().cpu(),
            "dd": dd.float().cpu(),
            "x": compute_extras(logits, dtok)[0].cpu(),
            "draft_rank": rank.cpu(),
        }

    def _text(self, tokens: list[int], *, stopped: bool) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if stopped:
            hits = [i for i in (text.find(s) for s in self.task.stop_sequences) if i >= 0]
            if hits:
                text = text[: min(hits)]
        return text

    # -- the algorithm ----------------------------------------------------------------------
    def mine(self, example: Example, index: int = 0) -> PromptResult:
        """Mine one prompt, answering the step machine's requests in turn (the reference driver)."""
        return drive(self.steps(example, index), self.rollout, self.check)

    def steps(self, example: Example, index: int = 0) -> MiningSteps:
        """Algorithm 1 for one prompt as a step machine: yields requests, receives their results.

        Rollouts and checks are the driver's; the draft argmax and the features are
        computed here, with this miner's models and caches.
        """
        t_start = time.perf_counter()
        task, cfg = self.task, self.config
        x = self.engine.encode(task.render_prompt(example, self.tokenizer))
        saved = self.journal.load(index, example.id) if self.journal is not None else None
        if saved is not None:  # continue where an earlier run stopped (labels decided so far kept)
            y, y_text = list(saved.tokens), saved.text
            a = task.extract_answer(saved.response)
            result = PromptResult(
                prompt_id=example.id, index=index, response=saved.response, answer=a, correct=saved.correct,
                records=list(saved.records), final_response=y_text, backend=self.backend,
                finish_reason=saved.finish_reason, rollouts=saved.rollouts,
            )  # fmt: skip
            forwards, tokens, next_pos = saved.target_forwards, saved.target_tokens, saved.next_pos
            t_start -= saved.seconds
        else:
            first: Rollout = yield RolloutRequest(x, max(cfg.max_new_tokens, 1))
            forwards, tokens = first.target_forwards, first.target_tokens
            y, y_text = list(first.tokens), first.text
            a = task.extract_answer(y_text)
            result = PromptResult(
                prompt_id=example.id, index=index, response=y_text, answer=a, correct=None, records=[],
                final_response=y_text, backend=self.backend, finish_reason=first.finish_reason,
            )  # fmt: skip
            if a is None:
                result.skipped = "original response has no answer"
                result.target_forwards, result.target_tokens = forwards, tokens
                result.seconds = time.perf_counter() - t_start
                return result
            original: CheckResult = yield CheckRequest(example, a)
            result.correct = original.correct
            next_pos = 0  # first response position not yet visited

        argmax: list[int] = []
        argmax_from = None  # response position argmax[0] refers to
        while cfg.max_mismatches is None or len(result.records) < cfg.max_mismatches:
            seq = x + y
            if argmax_from is None:
                argmax = self._draft_argmax(seq, len(x) + next_pos)
                argmax_from = next_pos
            t = next(
                (p for p in range(next_pos, len(y)) if argmax[p - argmax_from] != y[p]),
                None,
            )
            if t is None:
                break
            d_tok, t_tok = argmax[t - argmax_from], y[t]
            alt_prompt = x + y[:t] + [d_tok]
            budget = cfg.rollout_budget(t)
            roll: Rollout = yield RolloutRequest(alt_prompt, budget, reference=y, start=t + 1)
            forwards += roll.target_forwards
            tokens += roll.target_tokens
            feats = self._features(seq, len(x) + t, d_tok, roll.prefill_hidden)
            alt_tokens = y[:t] + [d_tok] + roll.tokens
            alt_text = self._text(alt_tokens, stopped=roll.finish_reason == "stop")
            b = task.extract_answer(alt_text)
            if b is not None:
                checked: CheckResult = yield CheckRequest(example, b, original=a, equivalence=True)
                outcome, correct_b = checked.outcome, checked.correct
            else:
                outcome, correct_b = None, False
            equivalent = outcome is not None and outcome.ok and bool(outcome.value)
            result.records.append(
                MismatchRecord(
                    prompt_id=example.id,
                    position=t,
                    draft_token=d_tok,
                    target_token=t_tok,
                    label=0 if equivalent else 1,
                    answer_original=a,
                    answer_alternative=b,
                    correct_original=result.correct,
                    correct_alternative=correct_b,
                    timed_out=bool(outcome is not None and outcome.timed_out),
                    rollout_target_forwards=roll.target_forwards,
                    rollout_target_tokens=roll.target_tokens,
                    check_error=outcome.error if outcome is not None else None,
                    finish_alternative=roll.finish_reason,
                    alternative_text=audit_text(
                        self._text([d_tok, *roll.tokens], stopped=roll.finish_reason == "stop")
                    ),
                    features=feats,
                )
            )
            result.rollouts += 1
            if equivalent:  # adopt the alternative response; the draft argmax after t must be recomputed
                y, y_text = alt_tokens, alt_text
                argmax_from = None
            next_pos = t + 1
            if self.journal is not None:
                self.journal.save(
                    PromptProgress(
                        index=index, prompt_id=example.id, response=result.response, correct=result.correct,
                        finish_reason=result.finish_reason, tokens=list(y), text=y_text, next_pos=next_pos,
                        records=list(result.records), rollouts=result.rollouts, target_forwards=forwards,
                        target_tokens=tokens, seconds=time.perf_counter() - t_start,
                    )
                )  # fmt: skip
        result.final_response = y_text
        result.target_forwards, result.target_tokens = forwards, tokens
        result.seconds = time.perf_counter() - t_start
        return result


class FeatureMiner(Miner):
    """A miner whose rollouts run elsewhere (a batched or vLLM rollout backend): its target runner
    computes features (and prefills for that backend) only, so it keeps its own cache instead of forking."""

    def __init__(self, *args: Any, backend: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.generates = False

    def rollout(self, req: RolloutRequest) -> Rollout:
        raise RuntimeError(
            f"rollouts of a {self.backend} miner run in its rollout backend, not on this miner"
        )


def stack_features(records: Sequence[MismatchRecord]) -> dict[str, torch.Tensor]:
    """Tensors of a shard: one row per record, in order (see ``docs/formats.md``)."""
    if not records:
        return {}
    out = {
        name: torch.stack([r.features[name] for r in records]).contiguous()
        for name in ("dt", "tt", "dd", "x")
    }
    out["draft_rank"] = torch.stack([r.features["draft_rank"] for r in records]).to(torch.int32).contiguous()
    out["label"] = torch.tensor([r.label for r in records], dtype=torch.int8)
    return out
