"""Built-in toy task ``toy-arith``: exact-match integer arithmetic, FOR TESTS AND DEMOS ONLY.

Its problems are generated deterministically (no data files), its answer is the
last integer in the response, and equivalence is integer equality. It exists so
the pipeline can be exercised end to end on tiny random models in seconds; it
says nothing about model quality.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from autojudge.core.task import Example, Messages, Task
from autojudge.plugins.hookspecs import hookimpl

_INT_RE = re.compile(r"-?\d+")


class ToyArithmeticTask(Task):
    name = "toy-arith"
    description = "Toy integer arithmetic with exact-match answers (for tests and demos only)."
    stop_sequences = ("\n\n\n",)
    check_timeout = 2.0

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in ("train", "test"):
            raise ValueError(f"toy-arith has splits 'train' and 'test', not {split!r}")
        rng = random.Random(f"toy-arith-{split}")
        n = 200 if limit is None else limit
        rows = []
        for i in range(n):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            op = rng.choice("+-*")
            value = a + b if op == "+" else a - b if op == "-" else a * b
            rows.append(Example(id=f"{split}-{i}", question=f"What is {a} {op} {b}?", reference=value))
        return rows

    def build_messages(self, example: Example) -> Messages:
        return [{"role": "user", "content": example.question + " Answer with a single integer."}]

    def extract_answer(self, response: str) -> int | None:
        found = _INT_RE.findall(response)
        return int(found[-1]) if found else None

    def equivalent(self, answer_a: Any, answer_b: Any, example: Example) -> bool:
        return answer_a is not None and answer_b is not None and int(answer_a) == int(answer_b)

    def is_correct(self, answer: Any, example: Example) -> bool:
        return answer is not None and int(answer) == int(example.reference)


@hookimpl
def register_tasks(register):
    register(ToyArithmeticTask())
