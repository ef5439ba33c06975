"""A Task base class whose answers an LLM compares: the public API for new domains.

Subclass :class:`LLMComparedTask` instead of :class:`~autojudge.core.task.Task`,
implement ``load``, ``build_messages`` and ``extract_answer``, and set
``comparer_env_prefix`` (the environment variables that configure the comparer, see
:mod:`autojudge.core.compare.llm.config`) and optionally ``default_comparer``.
``equivalent`` / ``equivalent_many`` / ``equivalent_outcomes`` / ``is_correct``
then go through one :class:`~autojudge.core.compare.llm.checker.LLMEquivalenceChecker`
per process, built on first use (never in ``__init__``):

* the comparing model sees :meth:`comparer_question` (default: ``example.question``) and the
  two answers as returned by ``extract_answer``;
* ``is_correct(answer, example)`` compares ``answer`` with
  :meth:`reference_answers` (default: ``[str(example.reference)]``): an answer
  identical to one of them (after the checker's normalisation) is correct
  without asking; otherwise the model compares it with the first reference;
* all checks run **in-process**, batched: ``equivalent_outcomes`` sends a whole
  batch to the backend at once, so there is no process pool loading the comparing
  model once per worker. A copy of the task (e.g. sent to a worker process)
  drops the built checker and builds its own on first use.

Failure semantics: an unreachable or broken comparer raises
:class:`~autojudge.core.compare.llm.backends.ComparerBackendError` from every method
(after the backend's retries). It is never turned into a ``CheckOutcome`` with an
error, because mining turns any non-``ok`` outcome into an *important* label and
records only timeouts: an outage would silently write wrong labels. Raising
stops ``aj mine`` / ``aj run``; finished prompts are on disk and the replies
are cached, so ``--resume`` continues where it stopped once the comparer is back.
A CANNOT_TELL verdict is a normal outcome (``ok``) with value ``False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from autojudge.core.compare.llm.backends import ComparerBackendError
from autojudge.core.compare.llm.checker import ComparisonResult, LLMEquivalenceChecker, normalize_answer
from autojudge.core.compare.llm.comparer import LLMComparer
from autojudge.core.compare.llm.config import ComparerConfig
from autojudge.core.compare.pool import CheckOutcome
from autojudge.core.task import Example, Task

__all__ = ["LLMComparedTask"]


class LLMComparedTask(Task):
    """A task whose equivalence and correctness are decided by an LLM comparer (see the module docstring).

    ``comparer``: a fixed :class:`ComparerConfig`; ``None`` reads the environment
    (``comparer_env_prefix``) each time the checker is needed, so a changed
    environment takes effect on the next check.
    """

    #: prefix of the environment variables configuring this task's comparer
    comparer_env_prefix: ClassVar[str] = "AJ_LLM_JUDGE"
    #: comparer spec used when ``<comparer_env_prefix>`` is unset (the default pair's target, offline)
    default_comparer: ClassVar[str] = "local:qwen2.5-coder-1.5b-instruct"
    check_timeout: ClassVar[float] = 300.0  # informational: the backend's own timeouts apply

    def __init__(self, comparer: ComparerConfig | None = None) -> None:
        self._comparer_config = comparer
        self._checker: LLMEquivalenceChecker | None = None
        self._checker_config: ComparerConfig | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_checker=None, _checker_config=None)
        return state

    # -- configuration ----------------------------------------------------------------------------------
    def comparer_config(self) -> ComparerConfig:
        """The comparer configuration in force: the one given to ``__init__``, else the environment's."""
        if self._comparer_config is not None:
            return self._comparer_config
        return ComparerConfig.from_env(self.comparer_env_prefix, self.default_comparer)

    def checker(self) -> LLMEquivalenceChecker:
        """The checker for the current configuration (built on first use, rebuilt when it changes)."""
        config = self.comparer_config()
        if self._checker is None or self._checker_config != config:
            self._checker = config.build_checker()
            self._checker_config = config
        return self._checker

    def comparer(self) -> LLMComparer:
        """The :class:`~autojudge.core.compare.Comparer` ``"llm"`` on :meth:`checker`, asking :meth:`comparer_question`."""
        return LLMComparer(self.checker(), question_for=self.comparer_question)

    # -- what the model sees ----------------------------------------------------------------------------
    def comparer_question(self, example: Example) -> str:
        """The question shown to the comparing model (override to add context, e.g. a passage)."""
        return example.question

    def reference_answers(self, example: Example) -> list[str]:
        """Acceptable gold answers; the first one is what the model compares with."""
        ref = example.reference
        if isinstance(ref, (list, tuple)):
            return [str(r) for r in ref if str(r).strip()]
        return [str(ref)] if ref is not None and str(ref).strip() else []

    # -- comparing -------------------------------------------------------------------------------------
    def check_many(self, items: Sequence[tuple[Any, Any, Example]]) -> list[ComparisonResult]:
        """Full comparison results for ``(a, b, example)`` items (verdicts, votes, replies)."""
        checker = self.checker()
        try:
            return checker.check_many([(self.comparer_question(ex), a, b) for a, b, ex in items])
        except ComparerBackendError as e:
            raise ComparerBackendError(
                f"task {self.name!r}: the LLM comparer ({checker.comparer_id}, set by {self.comparer_env_prefix}) failed, "
                f"so these checks have no result (nothing was counted as equivalent). Replies received so far "
                f"are cached: fix the comparer, then resume (`aj mine --resume`, `aj run --resume`).\nCause: {e}",
                partial=e.partial,
            ) from e

    def equivalent_outcomes(self, items: Sequence[tuple[Any, Any, Example]]) -> list[CheckOutcome]:
        return [CheckOutcome(value=r.equivalent) for r in self.check_many(items)]

    def equivalent_many(self, items: Sequence[tuple[Any, Any, Example]]) -> list[bool]:
        return [r.equivalent for r in self.check_many(items)]

    def equivalent(self, answer_a: Any, answer_b: Any, example: Example) -> bool:
        return self.equivalent_many([(answer_a, answer_b, example)])[0]

    def correct_outcomes(self, items: Sequence[tuple[Any, Example]]) -> list[CheckOutcome]:
        """Correctness of every ``(answer, example)`` against its references, batched; input order."""
        out: list[CheckOutcome | None] = [None] * len(items)
        ask: list[int] = []
        for i, (answer, ex) in enumerate(items):
            refs = self.reference_answers(ex)
            if answer is None or not str(answer).strip() or not refs:
                out[i] = CheckOutcome(value=False)
            elif normalize_answer(answer) in {normalize_answer(r) for r in refs}:
                out[i] = CheckOutcome(value=True)
            else:
                ask.append(i)
        if ask:
            triples = [(items[i][0], self.reference_answers(items[i][1])[0], items[i][1]) for i in ask]
            for i, outcome in zip(ask, self.equivalent_outcomes(triples), strict=True):
                out[i] = outcome
        return [o for o in out if o is not None]

    def is_correct(self, answer: Any, example: Example) -> bool:
        return bool(self.correct_outcomes([(answer, example)])[0].value)

    def info(self) -> dict[str, Any]:
        try:
            comparer: Any = self.comparer_config().describe()
        except ValueError as e:  # a malformed environment: show it rather than fail `aj tasks`
            comparer = {"error": str(e)}
        # the keys keep their old names: info() enters `aj run`'s stage keys, so renaming them would
        # invalidate every finished run
        return {**super().info(), "judge": comparer, "judge_env_prefix": self.comparer_env_prefix}
