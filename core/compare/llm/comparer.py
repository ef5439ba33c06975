"""The LLM backend as a :class:`~autojudge.core.compare.Comparer` (``"llm"``), for use outside a task.

:class:`LLMComparer` wraps one :class:`~autojudge.core.compare.llm.checker.LLMEquivalenceChecker`
(built from a :class:`~autojudge.core.compare.llm.config.ComparerConfig` on first use,
never in ``__init__``) and asks it about ``(answer_a, answer_b, example)`` pairs with
``question_for(example)`` as the question (default: ``example.question``).
:class:`~autojudge.core.compare.llm.task.LLMComparedTask` does the same for its task
(and adds the task's name and resume advice to failures).

Failures raise :class:`~autojudge.core.compare.llm.backends.ComparerBackendError`;
they never become an outcome (see :mod:`autojudge.core.compare.llm.task` for why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from autojudge.core.compare import Pair
from autojudge.core.compare.llm.checker import LLMEquivalenceChecker
from autojudge.core.compare.llm.config import ComparerConfig
from autojudge.core.task import CheckOutcome, Example

__all__ = ["LLMComparer"]


def _question(example: Example) -> str:
    return example.question


class LLMComparer:
    """Answer equivalence decided by a chat model (only a YES verdict is equivalent).

    ``config``: a :class:`ComparerConfig` (or a spec string such as
    ``"openai:http://127.0.0.1:8000/v1#my-model"``), or a ready
    :class:`LLMEquivalenceChecker`. A copy (e.g. sent to a worker process) built from a
    config drops the built checker and builds its own on first use.
    """

    name: ClassVar[str] = "llm"

    def __init__(
        self,
        config: ComparerConfig | LLMEquivalenceChecker | str,
        *,
        question_for: Callable[[Example], str] = _question,
    ) -> None:
        if isinstance(config, str):
            config = ComparerConfig(config)
        self.config = config if isinstance(config, ComparerConfig) else None
        self._checker = config if isinstance(config, LLMEquivalenceChecker) else None
        self.question_for = question_for

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.config is not None:
            state["_checker"] = None
        return state

    def checker(self) -> LLMEquivalenceChecker:
        """The checker (built from the config on first use)."""
        if self._checker is None:
            assert self.config is not None
            self._checker = self.config.build_checker()
        return self._checker

    def compare_many(self, pairs: Sequence[Pair]) -> list[CheckOutcome]:
        """One outcome per ``(a, b, example)``, all asked in one batch; backend failures raise."""
        checker = self.checker()
        results = checker.check_many([(self.question_for(ex), a, b) for a, b, ex in pairs])
        return [CheckOutcome(value=r.equivalent) for r in results]
