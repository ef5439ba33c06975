"""Regression harness for real model outputs: extraction and grading of saved responses.

A row of the JSONL file (e.g. ``tests/data/math_model_outputs.jsonl``) is::

    {"id": "...", "task": "gsm8k" | "gsm8k-8shot" | "math500", "response": "<model text>",
     "reference": "<gold answer>", "expected_answer": "<answer text>" | null,
     "expected_correct": true | false, "source": "handwritten" | "<model name>"}

A row passes when (1) the task's ``extract_answer(response)`` equals
``expected_answer`` as a string, or both are non-null and the task finds them
equivalent (so a hand-written ``"1000"`` accepts an extracted ``"1,000"``), and
(2) ``is_correct(extracted, reference)`` equals ``expected_correct``. A timed-out
check fails the row (it is reported). Point :func:`check_output_file` at any
such file; the test suite runs it over the repository's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autojudge.core.data import read_jsonl
from autojudge.core.task import Example
from autojudge.plugins.math.base import MathTask

__all__ = ["REQUIRED_FIELDS", "RowCheck", "check_output_file", "check_output_row", "load_output_rows"]

REQUIRED_FIELDS = ("id", "task", "response", "reference", "expected_answer", "expected_correct")


@dataclass(frozen=True)
class RowCheck:
    """What the harness found for one row."""

    id: str
    task: str
    extracted: str | None
    expected_answer: str | None
    answer_match: str | None  # "exact", "equivalent" or None (mismatch)
    correct: bool
    expected_correct: bool
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.answer_match is not None and self.correct == self.expected_correct and not self.timed_out

    def explain(self) -> str:
        return (
            f"row {self.id} ({self.task}): extracted {self.extracted!r}, expected {self.expected_answer!r} "
            f"[{self.answer_match or 'MISMATCH'}]; correct={self.correct}, expected {self.expected_correct}"
            + ("; a check TIMED OUT" if self.timed_out else "")
        )


def load_output_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``path``; ``ValueError`` naming the row when a required field is missing."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        missing = [f for f in REQUIRED_FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}: row {i} ({row.get('id')!r}) lacks {', '.join(missing)}")
    return rows


def _get_task(name: str) -> MathTask:
    from autojudge.plugins.manager import get_task

    task = get_task(name)
    if not isinstance(task, MathTask):
        raise ValueError(f"task {name!r} is not a math task")
    return task


def check_output_row(row: dict[str, Any], task: MathTask | None = None) -> RowCheck:
    """Extract and grade one row with its task (looked up by name unless given)."""
    task = task or _get_task(row["task"])
    example = Example(id=str(row["id"]), question="", reference=row["reference"])
    extracted = task.extract_answer(row["response"])
    expected = row["expected_answer"]
    timed_out = False
    if extracted == expected:
        match: str | None = "exact"
    elif extracted is not None and expected is not None:
        outcome = task.equivalent_outcomes([(extracted, expected, example)])[0]
        timed_out |= outcome.timed_out
        match = "equivalent" if outcome.value else None
    else:
        match = None
    outcome = task.correct_outcomes([(extracted, example)])[0]
    timed_out |= outcome.timed_out
    return RowCheck(
        id=str(row["id"]),
        task=row["task"],
        extracted=extracted,
        expected_answer=expected,
        answer_match=match,
        correct=bool(outcome.value),
        expected_correct=bool(row["expected_correct"]),
        timed_out=timed_out,
    )


def check_output_file(path: str | Path) -> list[RowCheck]:
    """Check every row of ``path``; inspect ``[c for c in result if not c.ok]``."""
    return [check_output_row(row) for row in load_output_rows(path)]
