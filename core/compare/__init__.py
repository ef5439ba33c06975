"""Answer comparison: the one home of the backends that decide whether two answers are the same.

Mining labels a swapped draft token *unimportant* when the answer it leads to is
equivalent to the target's own answer; a **comparer** is what says so. The
backends here are the task-independent half of that decision (the tasks in
:mod:`autojudge.plugins` say what an answer is and which backend compares it):

* :mod:`.math` + :mod:`.math_verify` -- math-verify equivalence of math answers,
  run in the process pool of :mod:`.pool` with a hard timeout per check
  (:class:`~autojudge.core.compare.math.MathVerifyComparer`, ``"math-verify"``);
* :mod:`.sandboxed` + :mod:`.program_results` -- run two programs on the
  problem's tests in :mod:`autojudge.sandbox` and compare their results
  (:class:`~autojudge.core.compare.program_results.SandboxTestsComparer`,
  ``"sandbox-tests"``);
* :mod:`.llm` -- ask a chat model (local or an OpenAI-compatible endpoint)
  whether two responses give the same answer, with a reply cache
  (:class:`~autojudge.core.compare.llm.LLMComparer`, ``"llm"``);
* :mod:`.pool` -- :class:`~autojudge.core.compare.pool.CheckPool`, worker
  processes with per-check timeouts (used by the math backend).

Every backend implements :class:`Comparer`: a ``name`` and
``compare_many(pairs)``, where a pair is ``(answer_a, answer_b, example)`` as in
:meth:`autojudge.core.task.Task.equivalent_outcomes`, and the result is one
:class:`~autojudge.core.task.CheckOutcome` per pair, in order (``value`` is the
bool "equivalent"; ``timed_out`` / ``error`` say why a check has no real
answer, and such a pair counts as not equivalent). ``None`` answers are never
equivalent. Comparers are built cheaply (no model, pool or sandbox until the
first pair) and, unless documented otherwise, pickle for worker processes.

Adding a backend: write a module here that imports only the ground floor of
``autojudge.core`` and :mod:`autojudge.sandbox` (never :mod:`autojudge.plugins`),
give it a class with ``name`` and ``compare_many``, and register a factory for it
through the ``register_comparers`` plugin hook (the built-ins are registered in
:mod:`autojudge.plugins.comparers`). "Judge" in autojudge means only the token
classifier used while decoding; nothing here is called one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from autojudge.core.task import CheckOutcome, Example

__all__ = ["Comparer", "Pair"]

#: what a comparer compares: ``(answer_a, answer_b, example)``
Pair = tuple[Any, Any, Example]


@runtime_checkable
class Comparer(Protocol):
    """Says, for each pair of answers to one example, whether they are equivalent (see the module docstring)."""

    #: the name the backend is registered under (``"math-verify"``, ``"sandbox-tests"``, ``"llm"``, ...)
    name: str

    def compare_many(self, pairs: Sequence[Pair]) -> list[CheckOutcome]:
        """One :class:`CheckOutcome` per ``(answer_a, answer_b, example)``, in input order."""
        ...
