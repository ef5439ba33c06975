"""HumanEval (openai/human-eval): 164 function-completion problems with assert tests.

Splits: ``mine`` / ``eval`` by :func:`~autojudge.plugins.code.datafiles.hash_half` of
``task_id`` (HumanEval has only 164 test problems and no training split), ``test`` = all
164. Ids: ``humaneval-<n>`` from ``HumanEval/<n>``. The program run is the problem's own
prompt (imports, helper functions, the signature with its docstring: a stub returning
``None``) followed by the model's code, which redefines the function; so a model that
omits an import or a helper the prompt provides is not penalised, and one that writes no
such function fails every test. ``reference`` holds the test code and entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from autojudge.core.data import iter_jsonl
from autojudge.core.task import Example, Messages
from autojudge.plugins.code.base import CodeTask, Suite
from autojudge.plugins.code.datafiles import find_humaneval, hash_half
from autojudge.plugins.code.prompts import humaneval_messages
from autojudge.plugins.code.testsuites import assert_tests

__all__ = ["HumanEvalTask", "humaneval_example_id"]

SPLITS = ("mine", "eval", "test")


def humaneval_example_id(task_id: str) -> str:
    """``HumanEval/12`` -> ``humaneval-12``."""
    return "humaneval-" + task_id.rsplit("/", 1)[-1]


class HumanEvalTask(CodeTask):
    """HumanEval with EvalPlus's chat instruction; tests from ``check(candidate)``."""

    name: ClassVar[str] = "humaneval"
    description: ClassVar[str] = "HumanEval Python functions, pass@1 by the problem's asserts in the sandbox."
    mining_split: ClassVar[str] = "mine"
    eval_split: ClassVar[str] = "eval"
    test_timeout: ClassVar[float] = 6.0
    shipped_judge: ClassVar[str | None] = "code"  # trained on MBPP train prompts (data/mined/mbpp-train)

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"humaneval has splits {SPLITS}, not {split!r}")
        rows: list[Example] = []
        for row in iter_jsonl(find_humaneval(data_dir)):
            if limit is not None and len(rows) >= limit:
                break
            half = hash_half(row["task_id"])
            if split != "test" and half != split:
                continue
            rows.append(
                Example(
                    id=humaneval_example_id(row["task_id"]),
                    question=row["prompt"],
                    reference={
                        "task_id": row["task_id"],
                        "entry_point": row["entry_point"],
                        "test": row["test"],
                    },
                    meta={"canonical_solution": row["canonical_solution"], "half": half},
                )
            )
        return rows

    def build_messages(self, example: Example) -> Messages:
        return humaneval_messages(example.question)

    def build_suite(self, example: Example) -> Suite:
        ref = example.reference
        tests, setup, _ = assert_tests(ref["test"], ref["entry_point"], timeout=self.test_timeout)
        return Suite(tests=tests, prelude=example.question, setup=setup)

    def canonical_program(self, example: Example) -> str:
        """The reference solution as a complete program (prompt + canonical body)."""
        return example.question + example.meta["canonical_solution"]
