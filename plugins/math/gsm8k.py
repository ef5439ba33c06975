"""GSM8K (openai/grade-school-math): grade-school word problems with integer answers.

Splits: ``train`` (7,473 problems, mining) and ``test`` (1,319, evaluation).
Example ids are ``gsm8k-<split>-<row index>`` (0-based row of the upstream file).
The reference is the text after ``####`` in the ``answer`` field, commas removed;
``meta["solution"]`` keeps the full worked answer. Answers are compared as numbers
first (``numeric``), then with math-verify.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from autojudge.core.data import iter_jsonl
from autojudge.core.task import Example
from autojudge.plugins.math.base import MathTask
from autojudge.plugins.math.datafiles import find_gsm8k
from autojudge.plugins.math.extract import gsm8k_reference
from autojudge.plugins.math.prompts import MAX_FEWSHOT, fewshot_from_env

__all__ = ["GSM8K8ShotTask", "GSM8KTask"]

SPLITS = ("train", "test")


class GSM8KTask(MathTask):
    """GSM8K; ``fewshot=None`` reads ``AJ_MATH_FEWSHOT`` (default zero-shot)."""

    name: ClassVar[str] = "gsm8k"
    description: ClassVar[str] = (
        "GSM8K grade-school math word problems; numeric answers checked with math-verify."
    )
    mining_split: ClassVar[str] = "train"
    eval_split: ClassVar[str] = "test"
    numeric: ClassVar[bool] = True
    shipped_judge: ClassVar[str | None] = "gsm8k"  # trained on zero-shot GSM8K train prompts

    def __init__(self, fewshot: int | None = None) -> None:
        super().__init__(fewshot_from_env() if fewshot is None else fewshot)

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"gsm8k has splits {SPLITS}, not {split!r}")
        path = find_gsm8k(split, data_dir)
        rows: list[Example] = []
        for i, row in enumerate(iter_jsonl(path)):
            if limit is not None and len(rows) >= limit:
                break
            rows.append(
                Example(
                    id=f"gsm8k-{split}-{i}",
                    question=row["question"],
                    reference=gsm8k_reference(row["answer"]),
                    meta={"solution": row["answer"]},
                )
            )
        return rows


class GSM8K8ShotTask(GSM8KTask):
    """GSM8K with Wei et al.'s 8-shot chain-of-thought prompt (same data and ids as ``gsm8k``)."""

    name: ClassVar[str] = "gsm8k-8shot"
    description: ClassVar[str] = "GSM8K with the 8-shot chain-of-thought exemplars of Wei et al. (2022)."
    shipped_judge: ClassVar[str | None] = None  # the shipped judge saw zero-shot prompts only

    def __init__(self) -> None:
        super().__init__(fewshot=MAX_FEWSHOT)
