"""The speculative decoding engine: one greedy loop for target-only, lossless and judged decoding.

Read :meth:`SpeculativeEngine.generate` top to bottom; a cycle is:

1. the drafter proposes ``m <= k`` tokens ``d`` after the sequence;
2. the target verifies ``[pending, d_1..d_m]`` in one forward pass (the
   pending token is the last emitted one, not yet in the target's KV cache)
   and takes its greedy choices ``g_0..g_m``;
3. draft tokens are accepted while ``d_i == g_{i-1}``. At the first mismatch a
   judge (judged mode) may call it unimportant: the draft token is accepted and
   checking goes on with the following draft tokens, whose target choices were
   computed with the accepted draft tokens in context. At the first mismatch
   the judge calls important, the target's token is emitted instead; when the
   whole window is accepted, the target's bonus token ``g_m`` is appended.
   The judge scores the window's remaining positions in one call, except a
   last position whose ``dd`` features need one more draft step: that one is
   asked about only when the decisions before it were all "accept";
4. both KV caches are cropped to the accepted prefix (no recomputation).

Modes: ``ar`` (target only: a drafter that proposes nothing), ``sd`` (lossless:
no judge) and ``judge``. With the :class:`~autojudge.core.judge.AlwaysAccept`
judge the output is the draft's proposals plus one target token per cycle.

Invariants (tested): ``sd`` and ``judge`` with a judge that never accepts give
exactly the ``ar`` tokens (in float32), whatever ``k``; outputs stop at the
first EOS token or stop sequence, or after ``max_new_tokens``.

Limits: greedy decoding only; batch size 1; see :mod:`autojudge.core.runner`
for the supported model families.

:class:`Engine` is what evaluation and ``aj decode`` need from any backend (this
engine, or vLLM's behind :func:`autojudge.core.backends.open_engine`); both return
a :class:`GenerationResult` with :class:`~autojudge.core.metrics.GenerationMetrics`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from autojudge.core.drafters import Drafter, DraftModelDrafter, NullDrafter
from autojudge.core.judge import Judge, MismatchFeatures
from autojudge.core.metrics import GenerationMetrics
from autojudge.core.runner import ModelRunner

Mode = Literal["ar", "sd", "judge"]
MODES: tuple[str, ...] = ("ar", "sd", "judge")


@dataclass
class GenerationResult:
    """One prompt's output, from either backend (vLLM: ``metrics`` is shared by the results of one batch)."""

    tokens: list[int]
    text: str
    finish_reason: str  # "eos", "stop" or "length"
    metrics: GenerationMetrics
    prompt_tokens: list[int] = field(default_factory=list)
    #: the target's final hidden state at the last prompt token (mining's ``dt`` feature after a swap)
    prefill_hidden: torch.Tensor | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
            "metrics": self.metrics.as_dict(),
        }


@runtime_checkable
class Engine(Protocol):
    """A decoding backend, one prompt at a time: what evaluation and ``aj decode`` use.

    :class:`SpeculativeEngine` (transformers) and the vLLM backend's one-prompt engine
    (:class:`~autojudge.core.backends.vllm.engine.PerPromptEngine`) implement it; build
    either with :func:`autojudge.core.backends.open_engine`. ``judge`` (mode ``judge``
    only) is a :class:`~autojudge.core.judge.Judge`; ``reuse_cache=False`` asks for a
    full prefill (vLLM's prefix cache ignores it).
    """

    @property
    def tokenizer(self) -> Any: ...

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        mode: Mode = "sd",
        judge: Judge | None = None,
        k: int = 5,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
        reuse_cache: bool = True,
    ) -> GenerationResult: ...


def encode(tokenizer: Any | None, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of ``prompt``; text is tokenized without adding special tokens (chat templates carry them)."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer")
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return [int(t) for t in prompt]


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")


def _judged_run(
    judge: Judge,
    drafter: Drafter,
    d: torch.Tensor,
    g: torch.Tensor,
    logits: torch.Tensor,
    h: torch.Tensor,
    match: torch.Tensor,
    first: int,
    m: int,
) -> int:
    """How many window positions from ``first`` (the first mismatch) on are accepted, matches or judged.

    The judge scores each position on its own, so it is asked about the window in
    two parts when the drafter's hidden state at the last position costs an extra
    draft forward (``dd`` features, :meth:`Drafter.hidden_needs_forward`): the
    positions before it first, and the last one only when every earlier one was
    accepted and it does not match anyway. The decisions are those of one call
    over the whole window; the draft step is paid only in the cycles that need it.
    """
    lazy = judge.needs_draft_hidden and drafter.hidden_needs_forward(m - 1)
    hi = m - 1 if lazy else m

    def decide(lo: int, hi: int) -> torch.Tensor:
        idx = torch.arange(lo, hi, device=d.device)
        feats = MismatchFeatures(
            draft_tokens=d[idx],
            target_tokens=g[idx],
            target_logits=logits[idx],
            target_hidden=h[idx + 1],  # the position holding the draft token
            draft_hidden=drafter.hidden_states(idx) if judge.needs_draft_hidden else None,
        )
        return match[idx] | judge.accept(feats)

    run = int(decide(first, hi).int().cumprod(0).sum()) if hi > first else 0
    if hi == m or run < hi - first:
        return run
    return run + (1 if bool(match[m - 1]) else int(decide(m - 1, m)[0]))


class StopChecker:
    """Finds where a growing output must end: EOS token, stop sequence or token budget."""

    def __init__(
        self,
        tokenizer: Any | None,
        stop_sequences: Sequence[str],
        eos_token_ids: Iterable[int],
        max_new_tokens: int,
    ):
        if stop_sequences and tokenizer is None:
            raise ValueError("stop sequences need a tokenizer")
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stop_sequences if s)
        self.eos = frozenset(int(t) for t in eos_token_ids)
        self.max_new_tokens = max_new_tokens

    def decode(self, tokens: Sequence[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    def _find_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def check(self, out: list[int], start: int) -> tuple[int, str] | None:
        """``(cut, reason)`` when ``out`` must end after ``cut`` tokens; ``start`` = tokens checked before."""
        cut, reason = None, None
        for i in range(start, len(out)):
            if out[i] in self.eos:
                cut, reason = i + 1, "eos"
                break
        if self.stops:
            upto = cut if cut is not None else len(out)
            if self._find_stop(self.decode(out[:upto])) is not None:
                # the shortest prefix whose text holds a stop sequence
                for t in range(max(start, 1), upto + 1):
                    if self._find_stop(self.decode(out[:t])) is not None:
                        cut, reason = t, "stop"
                        break
        if cut is None and len(out) >= self.max_new_tokens:
            cut, reason = self.max_new_tokens, "length"
        return (cut, reason) if cut is not None else None

    def final_text(self, out: list[int], reason: str) -> str:
        text = self.decode(out)
        if reason == "stop":
            i = self._find_stop(text)
            if i is not None:
                text = text[:i]
        return text


def default_eos_ids(model: torch.nn.Module, tokenizer: Any | None) -> set[int]:
    """EOS ids from the tokenizer and the model's generation config (Qwen lists two)."""
    ids: set[int] = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


class SpeculativeEngine:
    """Greedy speculative decoding of a target model with a drafter and an optional judge.

    ``target`` and ``draft`` are transformers causal LMs on the same device and
    sharing a vocabulary (:func:`autojudge.core.models.load_pair` checks this).
    """

    def __init__(
        self, target: torch.nn.Module, draft: torch.nn.Module | None = None, tokenizer: Any | None = None
    ):
        self.target_model = target
        self.target = ModelRunner(target)
        self.draft_model = draft
        self.tokenizer = tokenizer
        self.device = self.target.device
        self._draft_drafter = DraftModelDrafter(draft, device=self.device) if draft is not None else None
        self._eos_default = default_eos_ids(target, tokenizer)
        self._cuda = self.device.type == "cuda"

    # -- helpers ---------------------------------------------------------------------
    def _clock(self) -> float:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of ``prompt`` (:func:`encode`)."""
        return encode(self.tokenizer, prompt)

    def _resolve(
        self, mode: str, judge: Judge | None, drafter: Drafter | None
    ) -> tuple[Drafter, Judge | None]:
        check_mode(mode)
        if mode == "ar":
            return NullDrafter(self.device), None
        if drafter is None:
            if self._draft_drafter is None:
                raise ValueError(f"mode {mode!r} needs a draft model or a drafter")
            drafter = self._draft_drafter
        if mode == "sd":
            return drafter, None
        if judge is None:
            raise ValueError("mode 'judge' needs a judge")
        if judge.needs_draft_hidden and not drafter.provides_hidden:
            raise ValueError(
                f"judge {judge.name!r} needs draft hidden states; drafter {drafter.name!r} has none"
            )
        return drafter, judge

    # -- the loop ----------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        mode: Mode = "sd",
        judge: Judge | None = None,
        drafter: Drafter | None = None,
        k: int = 5,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
        reuse_cache: bool = True,
    ) -> GenerationResult:
        """Generate greedily from ``prompt``; see the module docstring for the cycle.

        ``reuse_cache`` keeps the KV cache of the longest prefix shared with the
        previous call (exact: the cached keys/values are those of the same tokens).
        """
        if k < 1 and mode != "ar":
            raise ValueError("draft length k must be >= 1")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        drafter, judge = self._resolve(mode, judge, drafter)
        prompt_ids = self.encode(prompt)
        if not prompt_ids:
            raise ValueError("empty prompt")
        eos = self._eos_default if eos_token_ids is None else set(eos_token_ids)
        stopper = StopChecker(self.tokenizer, stop_sequences, eos, max_new_tokens)
        met = GenerationMetrics(num_prompt_tokens=len(prompt_ids))
        target = self.target
        t_start = self._clock()

        # prefill: the target reads the prompt (reusing the cached common prefix) and chooses the first token
        drafter.reset()
        cached = target.reuse(prompt_ids) if reuse_cache else (target.reset() or 0)
        h = target.extend(torch.tensor(prompt_ids[cached:], dtype=torch.long, device=self.device))
        prefill_hidden = h[-1].clone()
        out = [int(target.logits(h[-1:]).argmax(-1))]
        met.num_target_forwards, met.num_target_tokens = 1, len(prompt_ids) - cached
        met.prefill_time = self._clock() - t_start
        done = stopper.check(out, 0)

        while done is None:
            seq = prompt_ids + out  # its last token is pending: not yet in the target's cache
            m = min(k, max_new_tokens - len(out) - 1) if mode != "ar" else 0

            # 1. propose
            t0 = self._clock()
            d = (
                drafter.propose(seq, m).tokens
                if m > 0
                else torch.empty(0, dtype=torch.long, device=self.device)
            )
            m = d.numel()
            t1 = self._clock()

            # 2. verify: one target pass over the pending token and the proposals
            verify_in = torch.cat([torch.tensor(out[-1:], dtype=torch.long, device=self.device), d])
            h = target.extend(verify_in)
            logits = target.logits(h)
            g = logits.argmax(-1)
            match = d == g[:m]
            n_acc = int(match.int().cumprod(0).sum()) if m else 0
            t2 = self._clock()

            # 3. judge the mismatches that decide the rest of the window
            n_judged = 0
            if judge is not None and n_acc < m:
                extra = _judged_run(judge, drafter, d, g, logits, h, match, n_acc, m)
                n_judged = extra - int(match[n_acc : n_acc + extra].sum())
                n_acc += extra
                met.num_judge_calls += 1
            t3 = self._clock()

            # 4. emit accepted drafts + the target's token, roll caches back to the accepted prefix
            new = torch.cat([d[:n_acc], g[n_acc : n_acc + 1]]).tolist()
            target.crop(len(seq) + n_acc)
            drafter.accepted(len(seq) + n_acc)
            start = len(out)
            out.extend(new)
            done = stopper.check(out, start)

            met.num_drafts += 1
            met.num_target_forwards += 1
            met.num_target_tokens += m + 1
            met.num_draft_tokens += m
            met.num_accepted_tokens += n_acc
            met.num_judge_accepted += n_judged
            met.proposed_per_cycle.append(m)
            met.accepted_per_cycle.append(n_acc)
            met.emitted_per_cycle.append(len(new))
            met.draft_time += t1 - t0
            met.target_time += t2 - t1
            met.judge_time += t3 - t2

        cut, reason = done
        if len(out) > cut and met.emitted_per_cycle:  # tokens past the stop point were never emitted
            met.emitted_per_cycle[-1] -= len(out) - cut
        out = out[:cut]
        met.num_output_tokens = len(out)
        met.wall_time = self._clock() - t_start
        return GenerationResult(
            tokens=out,
            text=stopper.final_text(out, reason),
            finish_reason=reason,
            metrics=met,
            prompt_tokens=prompt_ids,
            prefill_hidden=prefill_hidden,
        )
