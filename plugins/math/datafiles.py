"""Where the math data sets live: local file names, upstream URLs, the MATH-500 mining/eval split.

Local files (under ``--data-dir``, ``AJ_DATA_DIR`` or the cache, see
:mod:`autojudge.core.data`): ``gsm8k/{train,test}.jsonl.gz`` or
``gsm8k/{train,test}.jsonl``; ``math500/test.jsonl``. When none exists and the
machine is online (``AJ_OFFLINE`` unset), the plain ``.jsonl`` is downloaded from
upstream into the cache: GSM8K from openai/grade-school-math, MATH-500 from
openai/prm800k (pinned by sha256; the GSM8K files are not pinned).

MATH-500 split: ``mine`` holds the problems whose ``sha256(unique_id)`` has an
even first byte, ``eval`` the rest (261 / 239 problems on the released file);
``test`` is all 500. The rule depends only on ``unique_id``, so it is stable
across file copies and row orders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from autojudge.core.data import find_data_file

__all__ = ["GSM8K_URL", "MATH500_SHA256", "MATH500_URL", "find_gsm8k", "find_math500", "math500_half"]

GSM8K_URL = (
    "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl"
)
MATH500_URL = "https://raw.githubusercontent.com/openai/prm800k/main/prm800k/math_splits/test.jsonl"
MATH500_SHA256 = "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"


def find_gsm8k(split: str, data_dir: str | Path | None = None) -> Path:
    """Path of GSM8K ``split`` (``train``/``test``): ``.jsonl.gz`` or ``.jsonl``, else download the latter."""
    gz, plain = f"gsm8k/{split}.jsonl.gz", f"gsm8k/{split}.jsonl"
    return find_data_file((gz, plain), data_dir=data_dir, url=GSM8K_URL.format(split=split), dataset="gsm8k")


def find_math500(data_dir: str | Path | None = None) -> Path:
    """Path of ``math500/test.jsonl``, downloaded from openai/prm800k when allowed."""
    return find_data_file(
        "math500/test.jsonl", data_dir=data_dir, url=MATH500_URL, sha256=MATH500_SHA256, dataset="math500"
    )


def math500_half(unique_id: str) -> str:
    """``"mine"`` or ``"eval"``: the MATH-500 half that problem ``unique_id`` belongs to."""
    return "mine" if hashlib.sha256(unique_id.encode("utf-8")).digest()[0] % 2 == 0 else "eval"
