"""Locating and reading data sets: a path option, ``AJ_DATA_DIR``, or the upstream when online.

Tasks call :func:`find_data_file` with the file's path relative to a data
directory laid out like the project's shared data sets (``gsm8k/train.jsonl.gz``,
``humaneval/HumanEval.jsonl.gz``, ...). Resolution order:

1. the ``data_dir`` argument (``--data-dir`` on the command line),
2. the ``AJ_DATA_DIR`` environment variable,
3. the user cache (``~/.cache/autojudge/datasets``), where :func:`fetch_url`
   stores upstream downloads.

When none holds the file, the task may download it from upstream with
:func:`fetch_url` (skipped when ``AJ_OFFLINE=1``); if that fails too,
:class:`DatasetNotFoundError` explains every place that was tried and how to fix it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from autojudge.core.paths import cache_dir

DATA_DIR_ENV = "AJ_DATA_DIR"
OFFLINE_ENV = "AJ_OFFLINE"


class DatasetNotFoundError(FileNotFoundError):
    """A data set could not be found locally nor fetched; the message says how to get it."""


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The directories searched for data files, in priority order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_dir("datasets"))
    return dirs


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def find_data_file(
    relpath: str | Sequence[str],
    *,
    data_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    dataset: str | None = None,
) -> Path:
    """Return a local path to ``relpath``, downloading it from ``url`` when allowed.

    ``relpath`` may be several alternatives (e.g. ``("gsm8k/train.jsonl.gz", "gsm8k/train.jsonl")``):
    each directory is searched for each of them, in order; a download is saved as the last one.
    ``sha256`` (optional) is checked on downloads. Raises :class:`DatasetNotFoundError`, whose
    message names every path tried.
    """
    relpaths = [relpath] if isinstance(relpath, str) else list(relpath)
    if not relpaths:
        raise ValueError("find_data_file needs at least one relative path")
    tried = []
    for d in data_dirs(data_dir):
        for rel in relpaths:
            p = d / rel
            tried.append(str(p))
            if p.is_file():
                return p
    download_error = None
    if url and not is_offline():
        target = cache_dir("datasets") / relpaths[-1]
        try:
            return fetch_url(url, target, sha256=sha256)
        except (OSError, urllib.error.URLError, ValueError) as e:
            download_error = f"download from {url} failed: {e}"
    name = dataset or relpaths[0].split("/")[0]
    files = " or ".join(repr(r) for r in relpaths)
    lines = [f"data set {name!r} not found: no file {files} in any of:"]
    lines += [f"  - {t}" for t in tried]
    if download_error:
        lines.append(f"  and {download_error}")
    elif url and is_offline():
        lines.append(f"  and {OFFLINE_ENV}=1 forbids downloading it from {url}")
    lines.append(
        f"Fix: pass --data-dir DIR (or set {DATA_DIR_ENV}=DIR) where {' or '.join(f'DIR/{r}' for r in relpaths)} exists"
        + (", or run once with network access to fetch it from upstream." if url else ".")
    )
    raise DatasetNotFoundError("\n".join(lines))


def fetch_url(url: str, target: Path, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` atomically, verifying ``sha256`` when given."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if sha256 and h.hexdigest() != sha256:
            raise ValueError(f"sha256 mismatch for {url}: expected {sha256}, got {h.hexdigest()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a ``.jsonl`` or ``.jsonl.gz`` file, naming the line on errors."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for row in iter_jsonl(path):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(row)
    return rows
