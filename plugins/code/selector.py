"""The ``code`` task: one name for the three code data sets, chosen with ``--dataset``.

It offers ``datasets`` and ``for_dataset`` (the plugin manager's generic dataset
mechanism, see :func:`autojudge.plugins.manager.get_task`), which return the task of that
data set -- ``humaneval``, ``mbpp`` or ``livecodebench`` -- with its own name, splits and
``info()``, so mined data and run keys record the resolved task. Used directly (without
resolution) it behaves as its default data set, HumanEval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from autojudge.core.task import Example, Messages, Task
from autojudge.plugins.code.base import CodeTask
from autojudge.plugins.code.humaneval import HumanEvalTask
from autojudge.plugins.code.livecodebench import LiveCodeBenchTask
from autojudge.plugins.code.mbpp import MBPPTask

__all__ = ["DATASET_TASKS", "CodeSelectorTask"]

DATASET_TASKS: dict[str, type[CodeTask]] = {
    "humaneval": HumanEvalTask,
    "mbpp": MBPPTask,
    "livecodebench": LiveCodeBenchTask,
}


class CodeSelectorTask(Task):
    """``code``: ``--dataset humaneval`` (default, offline) | ``mbpp`` | ``livecodebench``."""

    name: ClassVar[str] = "code"
    description: ClassVar[str] = (
        "Code generation judged by unit tests in the sandbox; --dataset humaneval (default) | mbpp | livecodebench."
    )
    datasets: ClassVar[tuple[str, ...]] = tuple(DATASET_TASKS)
    default_dataset: ClassVar[str] = "humaneval"
    mining_split: ClassVar[str] = HumanEvalTask.mining_split
    eval_split: ClassVar[str] = HumanEvalTask.eval_split

    def __init__(self, sandbox: str | None = None) -> None:
        self.sandbox = sandbox

    def for_dataset(self, dataset: str) -> CodeTask:
        """A new task instance for ``dataset`` (``KeyError`` for an unknown one; the manager checks first)."""
        return DATASET_TASKS[dataset](sandbox=self.sandbox)

    def _default(self) -> CodeTask:
        return self.for_dataset(self.default_dataset)

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        return self._default().load(split, data_dir=data_dir, limit=limit)

    def build_messages(self, example: Example) -> Messages:
        return self._default().build_messages(example)

    def extract_answer(self, response: str) -> Any | None:
        return self._default().extract_answer(response)

    def equivalent(self, answer_a: Any, answer_b: Any, example: Example) -> bool:
        return self._default().equivalent(answer_a, answer_b, example)

    def is_correct(self, answer: Any, example: Example) -> bool:
        return self._default().is_correct(answer, example)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "datasets": list(self.datasets), "default_dataset": self.default_dataset}
