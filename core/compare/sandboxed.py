"""Running model-written programs for the code tasks: one shared sandbox per process, cached results.

* The sandbox is created lazily on the first program (never when a task is built or
  unpickled) with :func:`autojudge.sandbox.get_sandbox`: backend ``AJ_CODE_SANDBOX``
  (``auto`` by default: the Docker warm pool when a daemon and the image are there, else
  bubblewrap with a warning; ``docker``, ``bwrap`` or ``unsafe-local`` on request) unless
  the task names one, ``AJ_CODE_WORKERS`` concurrent slots (default 2). One sandbox per
  (backend, workers) is shared by every code task of the process and closed at exit
  (:func:`close_sandboxes`).
* :func:`run_programs` runs a batch concurrently (``Sandbox.run_many``) and caches each
  result under ``(problem key, sha256(code))``, so the target's own program is run once
  per problem however many mismatches are compared with it. The cache is per process and
  bounded (:data:`CACHE_SIZE` programs, least recently used first out).
* A result with a sandbox-level problem (``ProgramResult.error`` or any ``sandbox_error``
  test) is run once more; if it fails again it is returned as it is (the caller flags it)
  and never cached.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from autojudge.sandbox import BACKENDS, Program, ProgramResult, Sandbox, get_sandbox

__all__ = [
    "CACHE_SIZE",
    "SANDBOX_ENV",
    "WORKERS_ENV",
    "cache_clear",
    "cache_info",
    "close_sandboxes",
    "configured_backend",
    "configured_workers",
    "get_code_sandbox",
    "has_sandbox_error",
    "run_programs",
]

SANDBOX_ENV = "AJ_CODE_SANDBOX"
WORKERS_ENV = "AJ_CODE_WORKERS"
CACHE_SIZE = 2048

_lock = threading.Lock()
_boxes: dict[tuple[str, int], Sandbox] = {}
_cache: OrderedDict[tuple[str, str], ProgramResult] = OrderedDict()
_stats = {"hits": 0, "misses": 0, "retries": 0}


def configured_backend(explicit: str | None = None) -> str:
    """The backend to use: ``explicit``, else ``AJ_CODE_SANDBOX``, else ``auto``; validated."""
    name = (explicit or os.environ.get(SANDBOX_ENV, "").strip() or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"{SANDBOX_ENV}/sandbox must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def configured_workers() -> int:
    """Concurrent sandbox slots: ``AJ_CODE_WORKERS`` (default 2, at least 1)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    n = int(raw) if raw else 2
    if n < 1:
        raise ValueError(f"{WORKERS_ENV} must be >= 1, got {raw!r}")
    return n


def get_code_sandbox(backend: str | None = None) -> Sandbox:
    """The process's shared sandbox for ``backend`` (created on first use)."""
    name, workers = configured_backend(backend), configured_workers()
    with _lock:
        box = _boxes.get((name, workers))
        if box is None:
            box = get_sandbox(name, workers=workers)
            _boxes[(name, workers)] = box
        return box


def close_sandboxes() -> None:
    """Close every shared sandbox (the next program opens a new one)."""
    with _lock:
        boxes = list(_boxes.values())
        _boxes.clear()
    for box in boxes:
        with contextlib.suppress(Exception):  # best effort at exit
            box.close()


atexit.register(close_sandboxes)


def has_sandbox_error(result: ProgramResult) -> str | None:
    """Why ``result`` is not the program's own doing (a sandbox failure), or ``None``."""
    if result.error:
        return result.error
    for i, r in enumerate(result.results):
        if r.status == "sandbox_error":
            return f"test {i}: {r.reason or 'sandbox error'}"
    return None


def _key(problem_key: str, code: str) -> tuple[str, str]:
    return problem_key, hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def cache_clear() -> None:
    with _lock:
        _cache.clear()
        _stats.update(hits=0, misses=0, retries=0)


def cache_info() -> dict[str, Any]:
    """Cache size and hit/miss/retry counters of this process."""
    with _lock:
        return {"size": len(_cache), **_stats}


def run_programs(jobs: Sequence[tuple[str, Program]], *, backend: str | None = None) -> list[ProgramResult]:
    """Results of ``(problem_key, program)`` jobs, in order: cached ones reused, the rest run concurrently.

    Duplicate jobs (same problem key and code) run once. ``problem_key`` must identify the
    problem's tests (e.g. ``"humaneval:HumanEval/0"``).
    """
    out: list[ProgramResult | None] = [None] * len(jobs)
    todo: dict[tuple[str, str], list[int]] = {}
    programs: dict[tuple[str, str], Program] = {}
    with _lock:
        for i, (pkey, prog) in enumerate(jobs):
            k = _key(pkey, prog.code)
            if k in _cache:
                _cache.move_to_end(k)
                out[i] = _cache[k]
                _stats["hits"] += 1
            else:
                todo.setdefault(k, []).append(i)
                programs[k] = prog
        _stats["misses"] += len(todo)
    if todo:
        keys = list(todo)
        box = get_code_sandbox(backend)
        results = box.run_many([programs[k] for k in keys])
        again = [j for j, r in enumerate(results) if has_sandbox_error(r)]
        if again:  # not the program's fault as far as we can tell: one more try
            with _lock:
                _stats["retries"] += len(again)
            for j, r in zip(again, box.run_many([programs[keys[j]] for j in again]), strict=True):
                results[j] = r
        with _lock:
            for k, r in zip(keys, results, strict=True):
                for i in todo[k]:
                    out[i] = r
                if not has_sandbox_error(r):
                    _cache[k] = r
                    while len(_cache) > CACHE_SIZE:
                        _cache.popitem(last=False)
    return [r for r in out if r is not None]
