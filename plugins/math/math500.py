"""MATH-500 (openai/prm800k ``math_splits/test.jsonl``): competition problems with LaTeX answers.

Splits (see :func:`autojudge.plugins.math.datafiles.math500_half`): ``mine``
(261 problems, mining), ``eval`` (239, evaluation), ``test`` (all 500), decided by
a hash of ``unique_id``. Example ids are ``math500-<subject>-<number>`` from
``unique_id`` (``test/algebra/1349.json`` -> ``math500-algebra-1349``). The
reference is the ``answer`` field (LaTeX); ``meta`` keeps subject, level,
unique_id and the worked solution. Answers are compared with math-verify only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from autojudge.core.data import iter_jsonl
from autojudge.core.task import Example
from autojudge.plugins.math.base import MathTask
from autojudge.plugins.math.datafiles import find_math500, math500_half

__all__ = ["Math500Task", "math500_example_id"]

SPLITS = ("mine", "eval", "test")


def math500_example_id(unique_id: str) -> str:
    """``test/algebra/1349.json`` -> ``math500-algebra-1349``."""
    stem = unique_id.removeprefix("test/").removesuffix(".json")
    return "math500-" + stem.replace("/", "-").replace("_", "-")


class Math500Task(MathTask):
    """MATH-500, zero-shot ``\\boxed{}`` prompts (few-shot exemplars are GSM8K's, so off by default)."""

    name: ClassVar[str] = "math500"
    description: ClassVar[str] = "MATH-500 competition problems (LaTeX answers) checked with math-verify."
    mining_split: ClassVar[str] = "mine"
    eval_split: ClassVar[str] = "eval"
    numeric: ClassVar[bool] = False

    def __init__(self, fewshot: int = 0) -> None:
        super().__init__(fewshot)

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"math500 has splits {SPLITS}, not {split!r}")
        path = find_math500(data_dir)
        rows: list[Example] = []
        for row in iter_jsonl(path):
            if limit is not None and len(rows) >= limit:
                break
            uid = row["unique_id"]
            half = math500_half(uid)
            if split != "test" and half != split:
                continue
            rows.append(
                Example(
                    id=math500_example_id(uid),
                    question=row["problem"],
                    reference=row["answer"],
                    meta={
                        "subject": row.get("subject"),
                        "level": row.get("level"),
                        "unique_id": uid,
                        "half": half,
                        "solution": row.get("solution"),
                    },
                )
            )
        return rows
