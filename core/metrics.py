"""Speculative decoding metrics, per generation and aggregated.

Names follow vLLM's spec-decode metrics where they exist:

* ``num_drafts``: verification cycles (target forward passes after prefill).
* ``num_draft_tokens``: draft tokens proposed; ``num_accepted_tokens``: accepted.
* ``mean_acceptance_length``: tokens emitted per cycle, i.e. accepted draft
  tokens + the target's correction/bonus token (1.0 for target-only decoding).
* ``draft_acceptance_rate``: ``num_accepted_tokens / num_draft_tokens``.
* ``acceptance_per_position``: for draft position i, accepted / proposed.
* ``acceptance_histogram``: cycles by number of accepted draft tokens.

Plus autojudge's own: ``num_judge_accepted`` (mismatching draft tokens the judge
accepted), ``num_target_forwards`` and ``num_target_tokens`` (sequential target
passes and tokens fed to the target, prefill included), and timings. Times are
wall-clock seconds; on CUDA the engine synchronises before reading the clock.

Both backends fill the same class. The transformers engine records every cycle;
the vLLM backend counts on the device (per call, i.e. per batch) and adds
``num_mismatches_reached`` and ``accepted_per_position`` (cycles that accepted
draft position i), from which :meth:`GenerationMetrics.with_cycles` rebuilds the
per-cycle lists. Neither of these two enters :meth:`~GenerationMetrics.as_dict`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class GenerationMetrics:
    num_output_tokens: int = 0
    num_prompt_tokens: int = 0
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_judge_accepted: int = 0
    num_judge_calls: int = 0
    num_target_forwards: int = 0
    num_target_tokens: int = 0
    accepted_per_cycle: list[int] = field(default_factory=list)
    proposed_per_cycle: list[int] = field(default_factory=list)
    emitted_per_cycle: list[int] = field(default_factory=list)
    prefill_time: float = 0.0
    draft_time: float = 0.0
    target_time: float = 0.0
    judge_time: float = 0.0
    wall_time: float = 0.0
    num_generations: int = 1
    # vLLM's device counters (the transformers engine leaves them empty: it records every cycle)
    num_mismatches_reached: int = 0  # mismatches the judge was asked about (at or before the first rejection)
    accepted_per_position: list[int] = field(default_factory=list)  # cycles that accepted draft position i

    # -- derived -----------------------------------------------------------------
    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per verification cycle (accepted drafts + 1 target token).

        From the per-cycle lists; from the counts when none were recorded (vLLM's counters).
        """
        if not self.num_drafts:
            return 0.0
        if not self.emitted_per_cycle:
            return (self.num_accepted_tokens + self.num_drafts) / self.num_drafts
        return sum(self.emitted_per_cycle) / self.num_drafts

    @property
    def draft_acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.num_output_tokens / self.wall_time if self.wall_time > 0 else 0.0

    def acceptance_per_position(self) -> list[float]:
        """Fraction of cycles accepting draft position i among cycles that proposed it."""
        if not self.proposed_per_cycle and self.accepted_per_position:  # counts only: every cycle proposes k
            return [a / self.num_drafts if self.num_drafts else 0.0 for a in self.accepted_per_position]
        k = max(self.proposed_per_cycle, default=0)
        rates = []
        for i in range(k):
            proposed = sum(1 for p in self.proposed_per_cycle if p > i)
            accepted = sum(1 for a in self.accepted_per_cycle if a > i)
            rates.append(accepted / proposed if proposed else 0.0)
        return rates

    def acceptance_histogram(self) -> list[int]:
        """``hist[a]`` = cycles that accepted exactly ``a`` draft tokens."""
        k = max(self.proposed_per_cycle, default=0)
        hist = [0] * (k + 1)
        for a in self.accepted_per_cycle:
            hist[a] += 1
        return hist

    def with_cycles(self, k: int) -> GenerationMetrics:
        """A copy whose per-cycle lists are rebuilt from ``accepted_per_position`` (vLLM's counters).

        ``accepted_per_position[i]`` = cycles that accepted draft position ``i`` fixes the multiset
        of accepted lengths exactly; cycle order is lost, and every cycle counts as proposing ``k``.
        """
        at_least = [
            self.num_drafts,
            *self.accepted_per_position,
            0,
        ]  # at_least[a] = cycles with >= a accepted
        accepted = [a for a in range(len(at_least) - 1) for _ in range(at_least[a] - at_least[a + 1])]
        return replace(
            self,
            accepted_per_cycle=accepted,
            proposed_per_cycle=[k] * len(accepted),
            emitted_per_cycle=[a + 1 for a in accepted],
            accepted_per_position=list(self.accepted_per_position),
        )

    # -- aggregation -----------------------------------------------------------------
    @classmethod
    def merge(cls, items: Iterable[GenerationMetrics]) -> GenerationMetrics:
        total = cls(num_generations=0)
        for m in items:
            for f in (
                "num_output_tokens", "num_prompt_tokens", "num_drafts", "num_draft_tokens",
                "num_accepted_tokens", "num_judge_accepted", "num_judge_calls", "num_target_forwards",
                "num_target_tokens", "prefill_time", "draft_time", "target_time", "judge_time",
                "wall_time", "num_generations", "num_mismatches_reached",
            ):  # fmt: skip
                setattr(total, f, getattr(total, f) + getattr(m, f))
            total.accepted_per_cycle += m.accepted_per_cycle
            total.proposed_per_cycle += m.proposed_per_cycle
            total.emitted_per_cycle += m.emitted_per_cycle
            per, other = total.accepted_per_position, m.accepted_per_position
            per.extend([0] * (len(other) - len(per)))
            for i, a in enumerate(other):
                per[i] += a
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_generations": self.num_generations,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_output_tokens": self.num_output_tokens,
            "num_drafts": self.num_drafts,
            "num_draft_tokens": self.num_draft_tokens,
            "num_accepted_tokens": self.num_accepted_tokens,
            "num_judge_accepted": self.num_judge_accepted,
            "num_judge_calls": self.num_judge_calls,
            "num_target_forwards": self.num_target_forwards,
            "num_target_tokens": self.num_target_tokens,
            "mean_acceptance_length": round(self.mean_acceptance_length, 4),
            "draft_acceptance_rate": round(self.draft_acceptance_rate, 4),
            "acceptance_per_position": [round(r, 4) for r in self.acceptance_per_position()],
            "acceptance_histogram": self.acceptance_histogram(),
            "prefill_time": round(self.prefill_time, 4),
            "draft_time": round(self.draft_time, 4),
            "target_time": round(self.target_time, 4),
            "judge_time": round(self.judge_time, 4),
            "wall_time": round(self.wall_time, 4),
            "tokens_per_s": round(self.tokens_per_s, 3),
        }
