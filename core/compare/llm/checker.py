"""LLM answer comparison: ask a chat model whether two responses give the same answer.

:class:`LLMEquivalenceChecker` takes ``(question, response_a, response_b)``
triples and returns a :class:`ComparisonResult` per triple. Per triple it

1. decides without the model when that is safe: a missing or blank response
   is never equivalent (``NO``); two responses identical after
   :func:`normalize_answer` (case, spacing, surrounding quotes and a final
   period) are equivalent (``YES``), unless ``exact_match_shortcut=False``;
2. otherwise asks the model ``samples`` times in the order (a, b), and, with
   ``both_orders``, as many times in the order (b, a) to cancel position bias;
   replies come from the :class:`~autojudge.core.compare.llm.cache.ReplyCache`
   when present, and every new reply is cached as soon as its batch returns;
3. turns each reply into a vote (:func:`~autojudge.core.compare.llm.prompt.parse_vote`:
   the verdict of :func:`~autojudge.core.compare.llm.prompt.parse_verdict`, but
   CANNOT_TELL when the reply's restated ``A:``/``B:`` answers are missing or
   not taken from the responses shown in that order, or when it says Yes to
   restated answers whose numbers differ) and takes a strict majority over
   *all* votes: YES only if more than half the votes are YES, NO if more than
   half are NO, else CANNOT_TELL. With both orders and one sample each,
   equivalence needs a Yes in both orders.

Only YES is equivalent: CANNOT_TELL and NO are not. Backend failures (after
the backend's retries) raise :class:`~autojudge.core.compare.llm.backends.ComparerBackendError`;
they never become a verdict. Replies that did arrive before the failure are
cached first, so a retry resumes where it stopped.

Greedy decoding (``temperature=0``) gives one reply per order, so ``samples``
must be 1 there; ``samples > 1`` needs ``temperature > 0`` and uses seeds
0..samples-1 (reproducible and cacheable).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autojudge.core.compare.llm.backends import ChatBackend, ChatRequest, ComparerBackendError
from autojudge.core.compare.llm.cache import ReplyCache, reply_key
from autojudge.core.compare.llm.prompt import PROMPT_VERSION, VOTE_RULES, Verdict, build_messages, parse_vote
from autojudge.core.compare.pool import CheckOutcome

__all__ = [
    "ComparisonResult",
    "ComparerSettings",
    "LLMEquivalenceChecker",
    "aggregate_votes",
    "normalize_answer",
]

Triple = tuple[Any, Any, Any]  # question, response_a, response_b


@dataclass(frozen=True)
class ComparerSettings:
    """How each pair is asked; every field changes verdicts, so all of them are reported in ``info()``."""

    both_orders: bool = True
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 64

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0: greedy decoding repeats the same reply")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "both_orders": self.both_orders,
            "samples": self.samples,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }


@dataclass(frozen=True)
class ComparisonResult:
    """The decision about one pair, with the evidence behind it."""

    verdict: Verdict
    votes: tuple[Verdict, ...] = ()
    replies: tuple[str, ...] = ()
    orders: tuple[str, ...] = ()  # "ab" or "ba" per vote
    cached: int = 0  # votes that came from the cache
    shortcut: str | None = None  # "no answer" / "identical" when decided without the model

    @property
    def equivalent(self) -> bool:
        return self.verdict is Verdict.YES


@dataclass
class CheckerStats:
    pairs: int = 0
    shortcuts: int = 0
    requests: int = 0  # votes needed from the model
    cache_hits: int = 0
    backend_calls: int = 0  # requests actually sent to the backend
    verdicts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "shortcuts": self.shortcuts,
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "backend_calls": self.backend_calls,
            "verdicts": {v.value: self.verdicts.get(v, 0) for v in Verdict},
        }


def aggregate_votes(votes: Sequence[Verdict]) -> Verdict:
    """Strict majority over all votes; anything short of one is CANNOT_TELL."""
    n = len(votes)
    if n == 0:
        return Verdict.CANNOT_TELL
    counts = Counter(votes)
    if 2 * counts[Verdict.YES] > n:
        return Verdict.YES
    if 2 * counts[Verdict.NO] > n:
        return Verdict.NO
    return Verdict.CANNOT_TELL


_QUOTES = "\"'`“”‘’"


def normalize_answer(text: Any) -> str:
    """Text for the identical-answer shortcut: casefolded, spaces collapsed, outer quotes and final period off."""
    s = re.sub(r"\s+", " ", str(text)).strip().casefold()
    s = s.strip(_QUOTES).strip()
    return s[:-1].rstrip() if s.endswith(".") else s


class LLMEquivalenceChecker:
    """Decides answer equivalence with a chat model (see the module docstring for the rules).

    ``cache``: a :class:`ReplyCache`, or ``None`` for no caching. The checker keeps
    running totals in :attr:`stats` (pairs, shortcuts, cache hits, backend calls,
    verdicts). Not thread-safe; use one per thread.
    """

    def __init__(
        self,
        backend: ChatBackend,
        settings: ComparerSettings | None = None,
        *,
        cache: ReplyCache | None = None,
        exact_match_shortcut: bool = True,
    ) -> None:
        self.backend = backend
        self.settings = settings or ComparerSettings()
        self.cache = cache
        self.exact_match_shortcut = exact_match_shortcut
        self.stats = CheckerStats()

    @property
    def comparer_id(self) -> str:
        return self.backend.comparer_id

    def describe(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "prompt_version": PROMPT_VERSION,
            "vote_rules": VOTE_RULES,
            **self.settings.as_dict(),
            "exact_match_shortcut": self.exact_match_shortcut,
            "cache": str(self.cache.path) if self.cache is not None else None,
        }

    # -- requests -------------------------------------------------------------------------------------
    def _requests(self, question: str, a: str, b: str) -> list[tuple[str, ChatRequest]]:
        s = self.settings
        orders = [("ab", a, b)] + ([("ba", b, a)] if s.both_orders else [])
        out = []
        for name, x, y in orders:
            messages = build_messages(question, x, y)
            for i in range(s.samples):
                seed = i if s.temperature > 0 else None
                out.append(
                    (
                        name,
                        ChatRequest.make(
                            messages, max_tokens=s.max_tokens, temperature=s.temperature, seed=seed
                        ),
                    )
                )
        return out

    def _key(self, req: ChatRequest) -> str:
        return reply_key(
            self.backend.comparer_id,
            PROMPT_VERSION,
            req.message_dicts(),
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            seed=req.seed,
        )

    def _shortcut(self, a: Any, b: Any) -> ComparisonResult | None:
        if a is None or b is None or not str(a).strip() or not str(b).strip():
            return ComparisonResult(Verdict.NO, shortcut="no answer")
        if self.exact_match_shortcut and normalize_answer(a) == normalize_answer(b):
            return ComparisonResult(Verdict.YES, shortcut="identical")
        return None

    # -- checking -------------------------------------------------------------------------------------
    def check_many(self, items: Sequence[Triple]) -> list[ComparisonResult]:
        """A :class:`ComparisonResult` per ``(question, response_a, response_b)``, in order.

        Raises :class:`ComparerBackendError` when the backend fails; replies received
        before the failure are cached.
        """
        results: list[ComparisonResult | None] = [None] * len(items)
        plans: dict[int, list[tuple[str, str]]] = {}  # item -> [(order, key)]
        shown: dict[int, tuple[str, str, str]] = {}  # item -> (question, response_a, response_b) as strings
        wanted: dict[str, ChatRequest] = {}
        for i, (question, a, b) in enumerate(items):
            self.stats.pairs += 1
            short = self._shortcut(a, b)
            if short is not None:
                self.stats.shortcuts += 1
                results[i] = short
                continue
            plan = []
            shown[i] = (str(question), str(a), str(b))
            for order, req in self._requests(str(question), str(a), str(b)):
                key = self._key(req)
                plan.append((order, key))
                wanted.setdefault(key, req)
            plans[i] = plan
        self.stats.requests += sum(len(p) for p in plans.values())
        replies: dict[str, str] = self.cache.get_many(wanted) if self.cache is not None and wanted else {}
        from_cache = set(replies)
        self.stats.cache_hits += sum(1 for p in plans.values() for _, k in p if k in from_cache)
        missing = [k for k in wanted if k not in replies]
        if missing:
            reqs = [wanted[k] for k in missing]
            self.stats.backend_calls += len(reqs)
            try:
                got = self.backend.complete(reqs)
            except ComparerBackendError as e:
                self._store({missing[j]: r for j, r in e.partial.items()})
                raise
            if len(got) != len(reqs) or not all(isinstance(r, str) for r in got):
                raise ComparerBackendError(
                    f"backend {type(self.backend).__name__} returned {len(got)} replies for {len(reqs)} requests"
                )
            new = dict(zip(missing, got, strict=True))
            self._store(new)
            replies.update(new)
        for i, plan in plans.items():
            q, a, b = shown[i]
            votes = tuple(
                parse_vote(replies[k], *((a, b) if o == "ab" else (b, a)), question=q) for o, k in plan
            )
            results[i] = ComparisonResult(
                verdict=aggregate_votes(votes),
                votes=votes,
                replies=tuple(replies[k] for _, k in plan),
                orders=tuple(o for o, _ in plan),
                cached=sum(1 for _, k in plan if k in from_cache),
            )
        final = [r for r in results if r is not None]
        assert len(final) == len(items)
        self.stats.verdicts.update(r.verdict for r in final)
        return final

    def _store(self, replies: dict[str, str]) -> None:
        if self.cache is None:
            return
        for key, reply in replies.items():
            self.cache.put(key, reply, comparer_id=self.backend.comparer_id, prompt_version=PROMPT_VERSION)

    def check(self, question: Any, response_a: Any, response_b: Any) -> ComparisonResult:
        return self.check_many([(question, response_a, response_b)])[0]

    def equivalent_many(self, items: Sequence[Triple]) -> list[bool]:
        """``True`` only for a YES verdict; raises :class:`ComparerBackendError` on backend failure."""
        return [r.equivalent for r in self.check_many(items)]

    def equivalent(self, question: Any, response_a: Any, response_b: Any) -> bool:
        return self.check(question, response_a, response_b).equivalent

    def outcomes(self, items: Sequence[Triple]) -> list[CheckOutcome]:
        """:class:`CheckOutcome` per item: ``value`` is True only for YES; failures raise (see module doc)."""
        return [CheckOutcome(value=r.equivalent) for r in self.check_many(items)]
