"""When two programs count as the same answer (mining), and when one is correct (evaluation).

Both programs run on every test of the problem (public and private / every assert).

**Equivalent** when, for every test ``i``:

1. both pass, or both fail (the same pass/fail vector, LiveCodeBench's reference rule), and
2. when both fail, they fail *the same way*: :func:`autojudge.sandbox.compare.same_output`
   holds -- for stdio tests the two stdouts match under LiveCodeBench's comparison (either
   one taken as the expected output) when both programs ran to completion, else both
   ended with the same status; for value tests (function calls, HumanEval/MBPP asserts)
   the returned values are equal as plain data, or neither returned one and both ended
   with the same status (``runtime_error``, ``timeout``, ``compile_error``...).

Rule 2 goes beyond the reference: when the target's own program is wrong, two different
wrong programs have the same all-fail vector, and the reference would call every such
change "unimportant".

Timeouts are program behaviour: a ``timeout`` equals only another ``timeout`` on the same
test; tests ``skipped`` after a program's first timeout equal only skipped tests. A
sandbox failure (``ProgramResult.error`` or any ``sandbox_error`` test, after one retry)
never counts as equal: the pair is **not equivalent** and the outcome carries the error,
so callers can flag it. Identical code, or code with the same Python AST (comments and
layout differ), is equivalent without running anything. ``None`` (no code) is never
equivalent to anything.

**Correct** (pass@1 with one sample): every test passes (at least one test), without a
sandbox failure.

:class:`SandboxTestsComparer` applies the rule to batches of ``(code_a, code_b, example)``
(the :class:`~autojudge.core.compare.Comparer` ``"sandbox-tests"``); the code tasks use it.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from autojudge.core.compare import Pair
from autojudge.core.compare.sandboxed import has_sandbox_error, run_programs
from autojudge.core.task import CheckOutcome, Example
from autojudge.sandbox import Program, ProgramResult, TestCase
from autojudge.sandbox.compare import same_output

__all__ = ["SandboxTestsComparer", "Verdict", "compare_results", "correct_result", "same_program"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The decision on one pair and why; ``error`` is set when a sandbox failure prevented it."""

    equivalent: bool
    reason: str
    error: str | None = None


def _ast_dump(code: str) -> str | None:
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def same_program(a: str, b: str) -> bool:
    """Identical code, or both parse to the same AST (comments, blank lines, layout aside)."""
    if a == b:
        return True
    da = _ast_dump(a)
    return da is not None and da == _ast_dump(b)


def compare_results(a: ProgramResult, b: ProgramResult, tests: Sequence[TestCase]) -> Verdict:
    """The equivalence rule of the module doc for two runs of ``tests``."""
    for which, res in (("first", a), ("second", b)):
        err = has_sandbox_error(res)
        if err:
            return Verdict(False, f"sandbox failure in the {which} program", error=f"sandbox error: {err}")
    if not (len(a.results) == len(b.results) == len(tests)):
        return Verdict(False, "result counts differ", error="sandbox error: wrong number of test results")
    for i, (ra, rb, t) in enumerate(zip(a.results, b.results, tests, strict=True)):
        if ra.passed != rb.passed:
            return Verdict(
                False,
                f"test {i}: {'passes' if ra.passed else 'fails'} vs {'passes' if rb.passed else 'fails'}",
            )
        if not ra.passed and not same_output(ra, rb, "stdio" if t.kind == "stdio" else "value"):
            return Verdict(False, f"test {i}: both fail, differently ({ra.status} vs {rb.status})")
    return Verdict(True, "same outcome on every test")


def correct_result(res: ProgramResult) -> tuple[bool, str | None]:
    """``(all tests passed, sandbox error or None)``."""
    err = has_sandbox_error(res)
    if err:
        return False, f"sandbox error: {err}"
    return res.passed, None


class SandboxTestsComparer:
    """Equivalence of programs by the rule of the module doc (:class:`~autojudge.core.compare.Comparer` ``"sandbox-tests"``).

    ``program_for(code, example)`` gives ``(problem_key, program)``: the program that runs
    ``code`` on the example's tests (``problem_key`` names those tests, for the result cache
    of :func:`~autojudge.core.compare.sandboxed.run_programs`). ``backend``: the sandbox
    backend (``None``: ``AJ_CODE_SANDBOX``). ``label`` starts the warning logged when a
    sandbox failure leaves a pair undecided (counted as not equivalent, ``error`` set).
    Every program of a batch runs concurrently in the shared sandbox.
    """

    name: ClassVar[str] = "sandbox-tests"

    def __init__(
        self,
        program_for: Callable[[str, Example], tuple[str, Program]],
        *,
        backend: str | None = None,
        label: str = "sandbox-tests",
    ) -> None:
        self.program_for = program_for
        self.backend = backend
        self.label = label

    def compare_many(self, pairs: Sequence[Pair]) -> list[CheckOutcome]:
        """Equivalence of every ``(a, b, example)``; ``value`` is a bool, a sandbox failure sets ``error``."""
        outcomes: list[CheckOutcome | None] = [None] * len(pairs)
        jobs: list[tuple[str, Program]] = []
        for i, (a, b, ex) in enumerate(pairs):
            if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
                outcomes[i] = CheckOutcome(value=False)
            elif same_program(a, b):
                outcomes[i] = CheckOutcome(value=True)
            else:
                jobs += [self.program_for(a, ex), self.program_for(b, ex)]
        results = iter(run_programs(jobs, backend=self.backend)) if jobs else iter(())
        tests = iter([program.tests for _, program in jobs[::2]])
        for i, (_a, _b, ex) in enumerate(pairs):
            if outcomes[i] is not None:
                continue
            ra, rb = next(results), next(results)
            verdict = compare_results(ra, rb, next(tests))
            if verdict.error:
                log.warning(
                    "%s %s: equivalence undecided, counted as NOT equivalent: %s",
                    self.label,
                    ex.id,
                    verdict.error,
                )
            outcomes[i] = CheckOutcome(value=verdict.equivalent, error=verdict.error)
        return [o for o in outcomes if o is not None]
