"""The task interface: what mining, evaluation and the plugins agree on.

A task is a data set plus the rules that decide whether two model responses are
"the same" for that task. Mining asks ``equivalent`` whether swapping in a draft
token changed the final answer; evaluation asks ``is_correct`` against the
reference. Tasks are registered by plugins (``register_tasks`` hook), never
imported by ``autojudge.core``.

Contract, in the order the pipeline uses it:

1. ``load(split)`` returns :class:`Example` rows. ``mining_split`` feeds mining,
   ``eval_split`` feeds evaluation. A missing data set raises
   :class:`autojudge.core.data.DatasetNotFoundError` with instructions.
2. ``build_messages(example)`` gives chat messages; :meth:`Task.render_prompt`
   turns them into text with the model's chat template.
3. Generation stops at EOS or at any of ``stop_sequences``.
4. ``extract_answer(response)`` returns a JSON-serialisable answer, or ``None``
   when the response has no answer.
5. ``equivalent(a, b, example)`` and ``is_correct(answer, example)`` decide.
   They may be slow (SymPy, sandboxes, an LLM comparer). They must be callable in a
   worker process: a task instance and its answers must survive the trip to a
   process pool (plain attributes, no open handles or models created in
   ``__init__``; create those lazily). ``equivalent_outcomes`` is the batch entry
   point: mining calls it once per batch of checks (then ``is_correct`` per
   answer), see ``run_checks`` in :mod:`autojudge.core.mining.steps`. Its default
   wraps ``equivalent_many``, which calls ``equivalent`` per pair; override
   ``equivalent_outcomes`` when the task has a faster batched path or can report
   timeouts and errors (the built-in tasks hand it to a comparer of
   :mod:`autojudge.core.compare`: the math-verify process pool, the warm sandbox
   pool, one LLM comparer batch).

Limits: answers are compared as opaque values by the task alone; ``None``
(no answer) is never equivalent to anything, including another ``None``,
unless the task says otherwise.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: start of ``CheckOutcome.error`` for checks that failed because the check pool itself broke
BROKEN_PREFIX = "check pool is broken: "


@dataclass(frozen=True)
class CheckOutcome:
    """Result of one check: ``value`` when it finished, else ``timed_out`` or ``error`` says why not."""

    value: Any = None
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The check finished without timing out or raising."""
        return not self.timed_out and self.error is None

    @property
    def pool_broken(self) -> bool:
        """The check never ran because the pool broke (not the check's fault)."""
        return self.error is not None and self.error.startswith(BROKEN_PREFIX)


TASK_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Example:
    """One problem of a task.

    ``id`` is unique and stable within a task and split (mining resumes by it).
    ``reference`` is the gold answer, tests, or whatever ``is_correct`` needs;
    it must be JSON-serialisable so reports can store it.
    """

    id: str
    question: str
    reference: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """Base class of every task. Subclass it, set ``name`` and ``description``.

    Instances must be cheap to construct (no data or model loading in
    ``__init__``): the plugin manager builds one per registration.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    #: split used for mining important mismatches and for judge training
    mining_split: ClassVar[str] = "train"
    #: held-out split used for evaluation
    eval_split: ClassVar[str] = "test"
    #: generation stops after any of these strings (besides EOS)
    stop_sequences: ClassVar[tuple[str, ...]] = ()
    #: seconds one equivalence / correctness check may take before it counts as "not equivalent"
    check_timeout: ClassVar[float] = 10.0
    #: the judge shipped in the package for this task on the default model pair (a name in
    #: ``aj judges list``), or None; ``aj run`` evaluates it instead of mining when it fits the models
    shipped_judge: ClassVar[str | None] = None

    # -- data -----------------------------------------------------------------
    @abstractmethod
    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        """Return the examples of ``split`` (first ``limit`` rows when given)."""

    # -- prompting --------------------------------------------------------------
    @abstractmethod
    def build_messages(self, example: Example) -> Messages:
        """Chat messages (``[{"role": ..., "content": ...}, ...]``) asking the question."""

    def render_prompt(self, example: Example, tokenizer: Any) -> str:
        """Prompt text for ``tokenizer``'s chat template, ending with the assistant turn opener.

        Falls back to the concatenated message contents when the tokenizer has no
        chat template (base models).
        """
        messages = self.build_messages(example)
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    # -- answers and their comparison -----------------------------------------
    @abstractmethod
    def extract_answer(self, response: str) -> Any | None:
        """The final answer in ``response``, or ``None`` when it has none."""

    @abstractmethod
    def equivalent(self, answer_a: Any, answer_b: Any, example: Example) -> bool:
        """Whether two answers to ``example`` are the same for this task."""

    @abstractmethod
    def is_correct(self, answer: Any, example: Example) -> bool:
        """Whether ``answer`` is correct against ``example.reference``."""

    def equivalent_many(self, items: Sequence[tuple[Any, Any, Example]]) -> list[bool]:
        """Batch form of :meth:`equivalent`; sequential unless a task overrides it."""
        return [self.equivalent(a, b, ex) for a, b, ex in items]

    def equivalent_outcomes(self, items: Sequence[tuple[Any, Any, Example]]) -> list[CheckOutcome]:
        """Like :meth:`equivalent_many`, but each result says whether the check timed out or failed.

        Mining records these flags; a timed-out or failed check counts as "not
        equivalent". Tasks that run checks in a :class:`~autojudge.core.compare.pool.CheckPool`
        override this; the default wraps :meth:`equivalent_many` (no timeouts).
        """
        return [CheckOutcome(value=bool(v)) for v in self.equivalent_many(items)]

    # -- description ------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """JSON-friendly description used by ``aj tasks`` and ``aj plugins``."""
        return {
            "name": self.name,
            "description": self.description,
            "mining_split": self.mining_split,
            "eval_split": self.eval_split,
            "stop_sequences": list(self.stop_sequences),
        }


class TaskValidationError(ValueError):
    """A registered object does not satisfy the :class:`Task` contract."""


def validate_task(task: Any) -> Task:
    """Check that ``task`` is a usable :class:`Task` instance; raise :class:`TaskValidationError` if not."""
    if isinstance(task, type) and issubclass(task, Task):
        raise TaskValidationError(
            f"register() got the class {task.__name__}, not an instance: call register({task.__name__}())"
        )
    if not isinstance(task, Task):
        raise TaskValidationError(
            f"register() expects an autojudge.core.task.Task instance, got {type(task).__name__}"
        )
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not TASK_NAME_RE.match(name):
        raise TaskValidationError(
            f"task {type(task).__name__} has an invalid name {name!r}: "
            f"use lowercase letters, digits, '_', '-', '.' (regex {TASK_NAME_RE.pattern})"
        )
    desc = getattr(task, "description", None)
    if not isinstance(desc, str) or not desc.strip():
        raise TaskValidationError(f"task {name!r} has no description (a one-line string)")
    stops = getattr(task, "stop_sequences", ())
    if (
        not isinstance(stops, Iterable)
        or isinstance(stops, str)
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise TaskValidationError(f"task {name!r}: stop_sequences must be a tuple of non-empty strings")
    return task
