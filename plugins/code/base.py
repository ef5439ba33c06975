"""Shared behaviour of the code tasks: extraction, test suites, sandboxed equivalence and correctness.

Subclasses set ``name``, ``description``, the splits, ``test_timeout`` and implement
``load``, ``build_messages`` and :meth:`CodeTask.build_suite` (the problem's tests as
sandbox tests). Answers are code strings (JSON-serialisable). Every check runs the
programs through :mod:`autojudge.core.compare.sandboxed` (shared sandbox, cached results);
``equivalent_outcomes`` / ``correct_outcomes`` run every program of a batch
concurrently on the warm pool. The rule is in :mod:`autojudge.core.compare.program_results`;
equivalence goes through its :class:`~autojudge.core.compare.program_results.SandboxTestsComparer`.

Instances hold plain attributes only (the sandbox backend name); test suites are cached
per instance and dropped when pickled, so tasks travel to worker processes.
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from autojudge.core.compare.pool import CheckOutcome
from autojudge.core.compare.program_results import SandboxTestsComparer, correct_result
from autojudge.core.compare.sandboxed import configured_backend, run_programs
from autojudge.core.task import Example, Task
from autojudge.plugins.code.extract import extract_code
from autojudge.sandbox import Program, ProgramResult, TestCase

__all__ = ["CodeTask", "Suite"]

log = logging.getLogger(__name__)
_SUITE_CACHE = 256


@dataclass(frozen=True)
class Suite:
    """A problem's tests and the code run around the program (``prelude`` before, ``setup`` after)."""

    tests: tuple[TestCase, ...]
    prelude: str = ""
    setup: str = ""

    def program(self, code: str, id: str | None = None) -> Program:
        return Program(code, list(self.tests), prelude=self.prelude, setup=self.setup, id=id)


class CodeTask(Task):
    """A code-generation task whose answers are compared by running unit tests in the sandbox."""

    #: seconds per test inside the sandbox (``TestCase.timeout``)
    test_timeout: ClassVar[float] = 6.0
    #: informational: a check is bounded by the per-test timeouts times the number of tests
    check_timeout: ClassVar[float] = 60.0
    #: what ``accuracy`` means for this task in reports
    metric: ClassVar[str] = "pass@1"

    def __init__(self, sandbox: str | None = None) -> None:
        self.sandbox = configured_backend(sandbox) if sandbox is not None else None
        self._suites: OrderedDict[str, Suite] = OrderedDict()
        self._suite_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_suites", None)
        state.pop("_suite_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._suites = OrderedDict()
        self._suite_lock = threading.Lock()

    # -- data ------------------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        """The data set this task reads (recorded in mined data and run keys)."""
        return self.name

    @abstractmethod
    def build_suite(self, example: Example) -> Suite:
        """The sandbox tests of ``example`` (built from ``example.meta`` / ``example.reference``)."""

    def suite(self, example: Example) -> Suite:
        """:meth:`build_suite`, cached per example id."""
        with self._suite_lock:
            found = self._suites.get(example.id)
            if found is not None:
                self._suites.move_to_end(example.id)
                return found
        suite = self.build_suite(example)
        if not suite.tests:
            raise ValueError(f"{self.name} problem {example.id} has no tests")
        with self._suite_lock:
            self._suites[example.id] = suite
            while len(self._suites) > _SUITE_CACHE:
                self._suites.popitem(last=False)
        return suite

    def problem_key(self, example: Example) -> str:
        return f"{self.dataset}:{example.id}"

    # -- comparing -------------------------------------------------------------------------------
    def extract_answer(self, response: str) -> str | None:
        return extract_code(response)

    def job(self, code: str, example: Example) -> tuple[str, Program]:
        """``(problem key, program)``: ``code`` on ``example``'s tests, as :func:`run_programs` takes it."""
        return self.problem_key(example), self.suite(example).program(code, id=example.id)

    def run(self, items: Sequence[tuple[str, Example]]) -> list[ProgramResult]:
        """Run ``(code, example)`` pairs concurrently (cached per process); results in order."""
        return run_programs([self.job(code, ex) for code, ex in items], backend=self.sandbox)

    def comparer(self) -> SandboxTestsComparer:
        """The ``sandbox-tests`` comparer on this task's problems (cheap: built per call, never stored)."""
        return SandboxTestsComparer(self.job, backend=self.sandbox, label=self.name)

    def equivalent_outcomes(self, items: Sequence[tuple[Any, Any, Example]]) -> list[CheckOutcome]:
        """Equivalence of every ``(a, b, example)``; all programs of the batch run concurrently.

        ``value`` is a bool; a sandbox failure gives ``value=False`` with ``error`` set (and a
        logged warning), never a silent "equivalent".
        """
        return self.comparer().compare_many(items)

    def correct_outcomes(self, items: Sequence[tuple[Any, Example]]) -> list[CheckOutcome]:
        """Correctness (all tests pass) of every ``(code, example)``, run concurrently."""
        outcomes: list[CheckOutcome | None] = [None] * len(items)
        need = []
        for i, (code, ex) in enumerate(items):
            if not isinstance(code, str) or not code.strip():
                outcomes[i] = CheckOutcome(value=False)
            else:
                need.append((code, ex))
        results = iter(self.run(need)) if need else iter(())
        for i, (_code, ex) in enumerate(items):
            if outcomes[i] is None:
                ok, err = correct_result(next(results))
                if err:
                    log.warning(
                        "%s %s: correctness undecided, counted as NOT correct: %s", self.name, ex.id, err
                    )
                outcomes[i] = CheckOutcome(value=ok, error=err)
        return [o for o in outcomes if o is not None]

    def equivalent_many(self, items: Sequence[tuple[Any, Any, Example]]) -> list[bool]:
        return [bool(o.value) for o in self.equivalent_outcomes(items)]

    def equivalent(self, answer_a: Any, answer_b: Any, example: Example) -> bool:
        return bool(self.equivalent_outcomes([(answer_a, answer_b, example)])[0].value)

    def is_correct(self, answer: Any, example: Example) -> bool:
        return bool(self.correct_outcomes([(answer, example)])[0].value)

    def info(self) -> dict[str, Any]:
        # the sandbox backend is left out on purpose: it must not change results, so it must not
        # invalidate cached runs (info() enters aj run's stage keys)
        return {
            **super().info(),
            "dataset": self.dataset,
            "metric": self.metric,
            "test_timeout": self.test_timeout,
        }
