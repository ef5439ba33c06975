"""Shared behaviour of the math tasks: prompts, answer extraction and pooled math-verify checks.

Subclasses set ``name``, ``description``, the splits, ``numeric`` (GSM8K-style
number normalisation) and implement ``load``. Checks run in the shared
:class:`~autojudge.core.compare.pool.CheckPool` of :mod:`autojudge.core.compare.math`
with ``check_timeout`` seconds per check; a timed-out check is "not equivalent" /
"not correct", and the ``*_outcomes`` methods say which checks timed out.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

from autojudge.core.compare import math as checks
from autojudge.core.compare.math import MathVerifyComparer
from autojudge.core.compare.pool import CheckOutcome
from autojudge.core.task import Example, Messages, Task
from autojudge.plugins.math.extract import extract_final_answer
from autojudge.plugins.math.prompts import build_math_messages, check_fewshot

__all__ = ["MathTask"]


class MathTask(Task):
    """A math word-problem task whose answers are compared with math-verify.

    ``fewshot`` exemplars (0-8, GSM8K chain of thought) go before each question.
    Instances hold only plain attributes, so they pickle (process pools).
    """

    #: reduce answers to plain numbers before comparing (GSM8K)
    numeric: ClassVar[bool] = False
    check_timeout: ClassVar[float] = 5.0

    def __init__(self, fewshot: int = 0) -> None:
        self.fewshot = check_fewshot(fewshot)

    # -- prompting ------------------------------------------------------------------------------------------
    def build_messages(self, example: Example) -> Messages:
        return build_math_messages(example.question, self.fewshot)

    # -- comparing ------------------------------------------------------------------------------------------
    def extract_answer(self, response: str) -> str | None:
        return extract_final_answer(response)

    def submit_equivalent(self, answer_a: Any, answer_b: Any, example: Example | None = None) -> Future:
        """Start one equivalence check; the future's result is a :class:`CheckOutcome` with a bool value."""
        return checks.submit_equivalent(answer_a, answer_b, numeric=self.numeric, timeout=self.check_timeout)

    def submit_correct(self, answer: Any, example: Example) -> Future:
        """Start one correctness check against ``example.reference``; result as in :meth:`submit_equivalent`."""
        return checks.submit_correct(
            answer, example.reference, numeric=self.numeric, timeout=self.check_timeout
        )

    def comparer(self) -> MathVerifyComparer:
        """The ``math-verify`` comparer with this task's ``numeric`` and ``check_timeout``."""
        return MathVerifyComparer(numeric=self.numeric, timeout=self.check_timeout)

    def equivalent_outcomes(self, items: Sequence[tuple[Any, Any, Example]]) -> list[CheckOutcome]:
        """Equivalence of every ``(a, b, example)``, concurrently, with timeout flags; input order."""
        return self.comparer().compare_many(items)

    def correct_outcomes(self, items: Sequence[tuple[Any, Example]]) -> list[CheckOutcome]:
        """Correctness of every ``(answer, example)``, concurrently, with timeout flags; input order."""
        pairs = [(a, ex.reference) for a, ex in items]
        return checks.check_correct(pairs, numeric=self.numeric, timeout=self.check_timeout)

    def equivalent_many(self, items: Sequence[tuple[Any, Any, Example]]) -> list[bool]:
        return [bool(o.value) for o in self.equivalent_outcomes(items)]

    def equivalent(self, answer_a: Any, answer_b: Any, example: Example) -> bool:
        return bool(self.submit_equivalent(answer_a, answer_b, example).result().value)

    def is_correct(self, answer: Any, example: Example) -> bool:
        return bool(self.submit_correct(answer, example).result().value)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "fewshot": self.fewshot, "check_timeout": self.check_timeout}
