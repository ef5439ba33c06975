"""MBPP (Austin et al. 2021): 974 short Python problems, three asserts each.

Splits by task id, the standard ones: ``prompt`` (1-10), ``test`` (11-510, evaluation),
``validation`` (511-600), ``train`` (601-974, mining). Ids: ``mbpp-<task_id>``. The
prompt shows the task text and its three asserts (as the MBPP paper does; they name the
function); the same asserts are the tests (``challenge_test_list`` is not used). The
program is the model's code, then ``test_setup_code`` and the asserts' imports.
``reference`` holds the asserts and the set-up code.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from autojudge.core.data import iter_jsonl
from autojudge.core.task import Example, Messages
from autojudge.plugins.code.base import CodeTask, Suite
from autojudge.plugins.code.datafiles import MBPP_SPLITS, find_mbpp
from autojudge.plugins.code.prompts import mbpp_messages
from autojudge.plugins.code.testsuites import assert_tests

__all__ = ["MBPPTask"]


class MBPPTask(CodeTask):
    """MBPP with the standard prompt; the three asserts of each problem are its tests."""

    name: ClassVar[str] = "mbpp"
    description: ClassVar[str] = "MBPP Python problems, pass@1 by the problem's three asserts in the sandbox."
    mining_split: ClassVar[str] = "train"
    eval_split: ClassVar[str] = "test"
    shipped_judge: ClassVar[str | None] = "code"  # trained on MBPP train prompts (data/mined/mbpp-train)
    test_timeout: ClassVar[float] = 10.0  # a few reference solutions (e.g. task 123) are slow on a loaded CPU

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in MBPP_SPLITS:
            raise ValueError(f"mbpp has splits {tuple(MBPP_SPLITS)}, not {split!r}")
        ids = MBPP_SPLITS[split]
        rows: list[Example] = []
        for row in iter_jsonl(find_mbpp(data_dir)):
            if int(row["task_id"]) not in ids:
                continue
            rows.append(
                Example(
                    id=f"mbpp-{row['task_id']}",
                    question=row["text"],
                    reference={
                        "task_id": int(row["task_id"]),
                        "test_list": list(row["test_list"]),
                        "test_setup_code": row.get("test_setup_code") or "",
                    },
                    meta={"code": row["code"]},
                )
            )
        rows.sort(key=lambda e: e.reference["task_id"])  # task-id order, whatever the file's order
        return rows[:limit]

    def build_messages(self, example: Example) -> Messages:
        return mbpp_messages(example.question, example.reference["test_list"])

    def build_suite(self, example: Example) -> Suite:
        ref = example.reference
        tests, setup, _ = assert_tests(
            ref["test_list"], None, timeout=self.test_timeout, setup_prefix=ref["test_setup_code"]
        )
        return Suite(tests=tests, setup=setup)
