"""LiveCodeBench code generation (``livecodebench/code_generation_lite``), official format and prompt.

Data: the hub files of a release (``version``, default ``release_v5``: 880 problems,
May 2023 - Jan 2025), found under ``--data-dir`` / ``AJ_DATA_DIR`` / the cache as
``livecodebench/test.jsonl``, ``test2.jsonl``, ... or downloaded from the hub when online;
or a local dump: ``LiveCodeBenchTask(path=FILE_OR_DIR)`` / ``AJ_LCB_PATH`` (JSONL, or
Parquet when ``pyarrow`` is installed; a directory means every ``*.jsonl`` / ``*.parquet``
in it, sorted by name). Rows are decoded with :mod:`autojudge.plugins.code.lcb_format`
(private tests through the restricted unpickler).

Splits: no training split exists, so ``mine`` / ``eval`` are the halves of
:func:`~autojudge.plugins.code.datafiles.hash_half` of ``question_id``; ``test`` is all.
Ids: ``lcb-<question_id>``. Tests: public + private; ``stdin`` problems are stdio tests
compared with LiveCodeBench's rule, ``functional`` ones call ``metadata.func_name`` (a
top-level function or a method of ``Solution()``) with the JSON-lines arguments and
compare the return value (a tuple counts as a list). Every program runs after
LiveCodeBench's implicit imports (:data:`autojudge.sandbox.LCB_PRELUDE`), 6 s per test
as in LiveCodeBench. Private tests are decoded when a problem's suite is first needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from autojudge.core.data import iter_jsonl
from autojudge.core.task import Example, Messages
from autojudge.plugins.code.base import CodeTask, Suite
from autojudge.plugins.code.datafiles import find_lcb_files, hash_half, lcb_release_files
from autojudge.plugins.code.lcb_format import (
    LCBFormatError,
    decode_private_tests,
    func_name,
    parse_tests,
)
from autojudge.plugins.code.prompts import lcb_messages
from autojudge.sandbox import LCB_PRELUDE, TestCase

__all__ = ["LCB_PATH_ENV", "LCB_VERSION_ENV", "LiveCodeBenchTask", "read_lcb_rows"]

SPLITS = ("mine", "eval", "test")
LCB_PATH_ENV = "AJ_LCB_PATH"
LCB_VERSION_ENV = "AJ_LCB_VERSION"
DEFAULT_VERSION = "release_v5"
_FIELDS = ("question_content", "question_id", "public_test_cases", "private_test_cases")


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LCBFormatError(
            f"{path} is Parquet: install pyarrow (`pip install pyarrow`) to read it, or convert it to JSONL"
        ) from None
    return pq.read_table(path).to_pylist()


def read_lcb_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local dump: a ``.jsonl`` / ``.parquet`` file, or a directory of them (sorted by name)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet") or p.name.endswith(".jsonl.gz")
        )
        if not files:
            raise FileNotFoundError(f"{path} holds no .jsonl or .parquet file")
        return [row for f in files for row in read_lcb_rows(f)]
    if not path.is_file():
        raise FileNotFoundError(f"LiveCodeBench dump {path} does not exist")
    rows = _read_parquet(path) if path.suffix == ".parquet" else list(iter_jsonl(path))
    for i, row in enumerate(rows):
        missing = [f for f in _FIELDS if f not in row]
        if missing:
            raise LCBFormatError(
                f"{path}: row {i} lacks {', '.join(missing)} (not code_generation_lite format)"
            )
    return rows


class LiveCodeBenchTask(CodeTask):
    """LiveCodeBench; ``version`` (``AJ_LCB_VERSION``) picks the release, ``path`` (``AJ_LCB_PATH``) a local dump."""

    name: ClassVar[str] = "livecodebench"
    description: ClassVar[str] = (
        "LiveCodeBench code generation (stdin and functional tests, official prompt), pass@1 in the sandbox."
    )
    mining_split: ClassVar[str] = "mine"
    eval_split: ClassVar[str] = "eval"
    test_timeout: ClassVar[float] = 6.0

    def __init__(
        self, version: str | None = None, path: str | Path | None = None, sandbox: str | None = None
    ) -> None:
        super().__init__(sandbox)
        if version is not None:
            lcb_release_files(version)  # validates an explicit choice now; AJ_LCB_VERSION when loading
        # (a bad environment value must not break the registration of the other code tasks)
        self.version = version or os.environ.get(LCB_VERSION_ENV, "").strip() or DEFAULT_VERSION
        env_path = os.environ.get(LCB_PATH_ENV, "").strip()
        self.path = str(path) if path is not None else (env_path or None)

    @property
    def dataset(self) -> str:
        return (
            f"livecodebench/{self.version}"
            if self.path is None
            else f"livecodebench/path:{Path(self.path).name}"
        )

    def _rows(self, data_dir: str | Path | None) -> list[dict[str, Any]]:
        if self.path is not None:
            return read_lcb_rows(self.path)
        return [row for f in find_lcb_files(self.version, data_dir) for row in read_lcb_rows(f)]

    def load(
        self, split: str, *, data_dir: str | Path | None = None, limit: int | None = None
    ) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"livecodebench has splits {SPLITS}, not {split!r}")
        rows: list[Example] = []
        seen: set[str] = set()
        for row in self._rows(data_dir):
            if limit is not None and len(rows) >= limit:
                break
            qid = str(row["question_id"])
            half = hash_half(qid)
            if (split != "test" and half != split) or qid in seen:
                continue
            seen.add(qid)
            starter = row.get("starter_code") or ""
            fn = func_name(row.get("metadata"))
            rows.append(
                Example(
                    id=f"lcb-{qid}",
                    question=row["question_content"],
                    reference={
                        "question_id": qid,
                        "platform": row.get("platform"),
                        "difficulty": row.get("difficulty"),
                        "contest_date": str(row.get("contest_date") or ""),
                        "func_name": fn,
                        "testtype": "functional" if fn else "stdin",
                    },
                    meta={
                        "starter_code": starter,
                        "title": row.get("question_title"),
                        "half": half,
                        "public_test_cases": row["public_test_cases"],
                        "private_test_cases": row["private_test_cases"],
                    },
                )
            )
        return rows

    def build_messages(self, example: Example) -> Messages:
        return lcb_messages(example.question, example.meta.get("starter_code"))

    def build_suite(self, example: Example) -> Suite:
        import json

        public = example.meta["public_test_cases"]
        raw = json.loads(public) if isinstance(public, str) else list(public)
        raw += decode_private_tests(example.meta["private_test_cases"])
        tests: list[TestCase] = []
        fn = example.reference.get("func_name")
        for t in parse_tests(raw):
            if t.testtype == "functional":
                if not fn:
                    raise LCBFormatError(f"{example.id}: functional test without metadata.func_name")
                tests.append(
                    TestCase.call(
                        fn, t.call_args(), t.expected_value(), compare="lcb", timeout=self.test_timeout
                    )
                )
            else:
                tests.append(TestCase.stdio(t.input, t.output, timeout=self.test_timeout))
        return Suite(tests=tuple(tests), prelude=LCB_PRELUDE)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "version": self.version, "path": self.path}
