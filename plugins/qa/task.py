"""The ``qa`` task: open-ended short-answer questions whose answers an LLM compares.

Data (first match wins):

1. ``AJ_QA_DATA=/path/file.jsonl`` (or ``.jsonl.gz``): a file of your own;
2. ``qa/questions.jsonl`` under ``--data-dir`` / ``AJ_DATA_DIR`` / the cache
   (:func:`autojudge.core.data.data_dirs`);
3. the 80 questions shipped in this package (``questions.jsonl``, written for
   autojudge, CC0-1.0; see ``DATA.md``), 40 ``train`` / 40 ``test``.

Each line: ``{"question": str, "answer": str, "id"?: str, "aliases"?: [str],
"split"?: "train"|"test"}``. Missing ids become ``qa-<line number>``; a row
without ``split`` goes to ``train`` when the first byte of ``sha256(id)`` is
even, else to ``test`` (stable per row, whatever else the file holds). Splits:
``train`` (mining), ``test`` (evaluation) and ``all``.

Prompt: the question, then "Answer briefly. End your reply with a final line of
the form "Answer: <short answer>"." Answer extraction: the text after the last
``Answer:`` line (markdown such as ``**Answer:**`` allowed) when there is one,
else the whole response; blank means no answer (``None``).

Equivalence and correctness: :class:`~autojudge.core.compare.llm.task.LLMComparedTask`
(the ``llm`` comparer) configured by ``AJ_QA_JUDGE`` (a name kept for compatibility;
default ``local:qwen2.5-coder-1.5b-instruct``, the default pair's target, offline).
Correct = identical (after normalisation) to the answer or an alias, else the
comparing model compares it with ``answer``.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from autojudge.core.compare.llm.task import LLMComparedTask
from autojudge.core.data import DatasetNotFoundError, data_dirs, iter_jsonl
from autojudge.core.task import Example, Messages

__all__ = ["QA_DATA_ENV", "QATask", "extract_qa_answer", "qa_split_of"]

QA_DATA_ENV = "AJ_QA_DATA"
QA_DATA_RELPATH = "qa/questions.jsonl"
SPLITS = ("train", "test", "all")

_ANSWER_LINE_RE = re.compile(
    r"^[ \t*_#>-]*(?:final[ \t]+)?answer[ \t*_]*[:：][ \t*_]*(?P<a>.*?)[ \t*_]*$",
    re.IGNORECASE | re.MULTILINE,
)


def extract_qa_answer(response: str) -> str | None:
    """The text after the last non-empty ``Answer:`` line, else the whole response; ``None`` when blank."""
    if not isinstance(response, str):
        return None
    found = [m.group("a").strip() for m in _ANSWER_LINE_RE.finditer(response) if m.group("a").strip()]
    text = found[-1] if found else response.strip()
    return text or None


def qa_split_of(example_id: str) -> str:
    """``train`` or ``test`` for a row without an explicit split: the parity of ``sha256(id)[0]``."""
    return "train" if hashlib.sha256(example_id.encode("utf-8")).digest()[0] % 2 == 0 else "test"


class QATask(LLMComparedTask):
    """Short open-domain factual questions; an LLM comparer decides equivalence and correctness."""

    name: ClassVar[str] = "qa"
    description: ClassVar[str] = (
        "Short factual open QA (80 shipped questions or AJ_QA_DATA); answers compared by an LLM (AJ_QA_JUDGE)."
    )
    mining_split: ClassVar[str] = "train"
    eval_split: ClassVar[str] = "test"
    comparer_env_prefix: ClassVar[str] = "AJ_QA_JUDGE"
    default_comparer: ClassVar[str] = "local:qwen2.5-coder-1.5b-instruct"

    # -- data -------------------------------------------------------------------------------------------
    def data_path(self, data_dir: str | Path | None = None) -> Path:
        """The question file in use (see the module docstring for the order)."""
        env = os.environ.get(QA_DATA_ENV, "").strip()
        if env:
            path = Path(env).expanduser()
            if not path.is_file():
                raise DatasetNotFoundError(
                    f"data set 'qa' not found: {QA_DATA_ENV}={env} is not a file.\n"
                    f"Fix: point {QA_DATA_ENV} at a JSONL file with one "
                    '{"question": ..., "answer": ...} object per line, or unset it to use the shipped questions.'
                )
            return path
        for d in data_dirs(data_dir):
            if (d / QA_DATA_RELPATH).is_file():
                return d / QA_DATA_RELPATH
        return Path(str(files(__package__) / "questions.jsonl"))

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"qa has splits {SPLITS}, not {split!r}")
        path = self.data_path(data_dir)
        rows: list[Example] = []
        seen: set[str] = set()
        for lineno, row in enumerate(iter_jsonl(path), 1):
            ex = _example(row, path, lineno)
            if ex.id in seen:
                raise ValueError(f"{path}:{lineno}: duplicate id {ex.id!r}")
            seen.add(ex.id)
            if split != "all" and ex.meta["split"] != split:
                continue
            if limit is None or len(rows) < limit:
                rows.append(ex)
        return rows

    # -- prompting and answers ----------------------------------------------------------------------------
    def build_messages(self, example: Example) -> Messages:
        return [
            {
                "role": "user",
                "content": f"{example.question}\n\nAnswer briefly. End your reply with a final line of the "
                'form "Answer: <short answer>".',
            }
        ]

    def extract_answer(self, response: str) -> str | None:
        return extract_qa_answer(response)

    def reference_answers(self, example: Example) -> list[str]:
        return [str(example.reference), *example.meta.get("aliases", [])]

    def info(self) -> dict[str, Any]:
        """Adds the data source (``shipped`` or the file's path) and its sha256, so runs notice new data."""
        try:
            path = self.data_path()
        except DatasetNotFoundError as e:
            return {**super().info(), "data": str(e).splitlines()[0]}
        shipped = path == Path(str(files(__package__) / "questions.jsonl"))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return {**super().info(), "data": "shipped" if shipped else str(path), "data_sha256": digest}


def _example(row: Any, path: Path, lineno: int) -> Example:
    where = f"{path}:{lineno}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: 'question' must be a non-empty string")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where}: 'answer' must be a non-empty string")
    ex_id = row.get("id", f"qa-{lineno}")
    if not isinstance(ex_id, (str, int)) or not str(ex_id).strip():
        raise ValueError(f"{where}: 'id' must be a non-empty string")
    ex_id = str(ex_id)
    aliases = row.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise ValueError(f"{where}: 'aliases' must be a list of non-empty strings")
    split = row.get("split") or qa_split_of(ex_id)
    if split not in ("train", "test"):
        raise ValueError(f"{where}: 'split' must be 'train' or 'test', got {split!r}")
    return Example(
        id=ex_id,
        question=question.strip(),
        reference=answer.strip(),
        meta={"aliases": aliases, "split": split},
    )
