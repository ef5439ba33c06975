"""Built-in answer-comparison backends, registered through the public ``register_comparers`` hook.

Each one is registered as its class (the factory: call it with the backend's own
arguments); the class attribute ``name`` is the registry name:

* ``"math-verify"``: :class:`~autojudge.core.compare.math.MathVerifyComparer`
  (``numeric=``, ``timeout=``), used by the math tasks;
* ``"sandbox-tests"``: :class:`~autojudge.core.compare.program_results.SandboxTestsComparer`
  (``program_for(code, example) -> (problem_key, program)``, ``backend=``), used by the code tasks;
* ``"llm"``: :class:`~autojudge.core.compare.llm.LLMComparer` (a ``ComparerConfig``, a spec
  string or a checker; ``question_for=``), used by the ``qa`` task.

Every instance implements :class:`autojudge.core.compare.Comparer`. Registering imports no
model, pool or sandbox: those start with the first pair compared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autojudge.core.compare.llm.comparer import LLMComparer
from autojudge.core.compare.math import MathVerifyComparer
from autojudge.core.compare.program_results import SandboxTestsComparer
from autojudge.plugins.hookspecs import hookimpl

BUILTIN_COMPARERS = (MathVerifyComparer, SandboxTestsComparer, LLMComparer)


@hookimpl
def register_comparers(register: Callable[[Any], None]) -> None:
    """Register each built-in comparer: ``register(comparer)``, ``comparer.name`` its registry name."""
    for comparer in BUILTIN_COMPARERS:
        register(comparer)
