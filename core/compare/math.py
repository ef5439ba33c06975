"""Run math equivalence / correctness checks with a hard timeout in a shared process pool.

The pool is created lazily on the first check that needs SymPy (plain-number
pairs are decided in-process by the fast path, see
:mod:`autojudge.core.compare.math_verify`), and is shared by every math task in
the process. A caller may hand in its own pool with :func:`set_check_pool`
(``bench/bench_math_equivalence.py`` does). :class:`MathVerifyComparer` is the
:class:`~autojudge.core.compare.Comparer` face of :func:`check_equivalent`.

Configuration (read when the pool is created):

* ``AJ_CHECK_WORKERS``: worker processes (default ``min(2, CPUs)``); ``0`` runs
  checks in this process **without any timeout** (debugging, or callers that
  already run inside a worker process).
* Inside a :class:`~autojudge.core.compare.pool.CheckPool` worker, checks always run
  in-process (no nested pools).

Every outcome's ``value`` is a ``bool``: a timed-out or failed check is ``False``
("not equivalent" / "not correct") with ``timed_out`` / ``error`` set. A pool that
cannot start workers raises :class:`~autojudge.core.compare.pool.PoolBrokenError`
instead of answering ``False`` (that would silently mislabel every pair). Spawned
workers re-import the caller's ``__main__``: scripts need an
``if __name__ == "__main__":`` guard, and code piped to ``python -`` cannot use the
pool (set ``AJ_CHECK_WORKERS=0``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import ClassVar

from autojudge.core.compare import Pair
from autojudge.core.compare.math_verify import (
    correct_answer,
    equivalent_answers,
    fast_compare,
    prepare_answer,
    warm_up,
)
from autojudge.core.compare.pool import CheckOutcome, CheckPool, PoolBrokenError, default_workers, in_worker

__all__ = [
    "CHECK_WORKERS_ENV",
    "MathVerifyComparer",
    "check_correct",
    "check_equivalent",
    "close_check_pool",
    "get_check_pool",
    "set_check_pool",
    "submit_correct",
    "submit_equivalent",
]

CHECK_WORKERS_ENV = "AJ_CHECK_WORKERS"

_lock = threading.Lock()
_pool: CheckPool | None = None


def _configured_workers() -> int:
    raw = os.environ.get(CHECK_WORKERS_ENV, "").strip()
    if not raw:
        return min(2, default_workers())
    n = int(raw)
    if n < 0:
        raise ValueError(f"{CHECK_WORKERS_ENV} must be >= 0, got {raw!r}")
    return n


def get_check_pool() -> CheckPool | None:
    """The shared pool (created on first use), or ``None`` when checks run in-process."""
    global _pool
    if in_worker():
        return None
    with _lock:
        if _pool is None:
            n = _configured_workers()
            if n == 0:
                return None
            _pool = CheckPool(workers=n, timeout=None, mp_context="spawn", initializer=warm_up)
        return _pool


def set_check_pool(pool: CheckPool | None) -> None:
    """Use ``pool`` for math checks from now on (``None``: create a default one again when needed).

    The caller keeps ownership of ``pool`` (it is not shut down here).
    """
    global _pool
    with _lock:
        _pool = pool


def close_check_pool() -> None:
    """Shut down the shared pool if this module created it; the next check starts a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)


def _as_bool(outcome: CheckOutcome) -> CheckOutcome:
    if outcome.ok and isinstance(outcome.value, bool):
        return outcome
    return CheckOutcome(value=False, timed_out=outcome.timed_out, error=outcome.error)


def _done(outcome: CheckOutcome) -> Future:
    fut: Future = Future()
    fut.set_result(outcome)
    return fut


def _submit(
    fn: Callable[..., bool], x: str | None, y: str | None, numeric: bool, timeout: float | None
) -> Future:
    if x is None or y is None:
        return _done(CheckOutcome(value=False))
    x, y = str(x), str(y)
    fast = fast_compare(prepare_answer(x, numeric), prepare_answer(y, numeric))
    if fast is not None:
        return _done(CheckOutcome(value=fast))
    pool = get_check_pool()
    if pool is None:
        try:
            return _done(CheckOutcome(value=bool(fn(x, y, numeric))))
        except Exception as e:
            return _done(CheckOutcome(value=False, error=f"{type(e).__name__}: {e}"))
    raw = pool.submit(fn, x, y, numeric, timeout=timeout)
    out: Future = Future()

    def relay(f: Future) -> None:
        if f.cancelled():
            out.set_result(CheckOutcome(False, error="cancelled"))
        elif f.result().pool_broken:
            out.set_exception(PoolBrokenError(f.result().error))
        else:
            out.set_result(_as_bool(f.result()))

    raw.add_done_callback(relay)
    return out


def submit_equivalent(a: str | None, b: str | None, *, numeric: bool, timeout: float | None) -> Future:
    """Future of the :class:`CheckOutcome` of ``equivalent_answers(a, b)`` (``None`` answers: False)."""
    return _submit(equivalent_answers, a, b, numeric, timeout)


def submit_correct(
    answer: str | None, reference: str | None, *, numeric: bool, timeout: float | None
) -> Future:
    """Future of the :class:`CheckOutcome` of ``correct_answer(answer, reference)``."""
    return _submit(correct_answer, answer, reference, numeric, timeout)


def check_equivalent(
    pairs: Sequence[tuple[str | None, str | None]], *, numeric: bool, timeout: float | None
) -> list[CheckOutcome]:
    """Equivalence of every pair, checked concurrently; outcomes in input order."""
    futures = [submit_equivalent(a, b, numeric=numeric, timeout=timeout) for a, b in pairs]
    return [f.result() for f in futures]


def check_correct(
    pairs: Sequence[tuple[str | None, str | None]], *, numeric: bool, timeout: float | None
) -> list[CheckOutcome]:
    """Correctness of every ``(answer, reference)`` pair, checked concurrently; outcomes in input order."""
    futures = [submit_correct(a, r, numeric=numeric, timeout=timeout) for a, r in pairs]
    return [f.result() for f in futures]


class MathVerifyComparer:
    """The math-verify :class:`~autojudge.core.compare.Comparer` (``"math-verify"``): :func:`check_equivalent` on pairs.

    ``numeric``: reduce answers to plain numbers first (GSM8K); ``timeout``: seconds per
    check in the shared pool. The example of a pair is not used. Plain attributes: pickles.
    """

    name: ClassVar[str] = "math-verify"

    def __init__(self, *, numeric: bool = False, timeout: float | None = 5.0) -> None:
        self.numeric = bool(numeric)
        self.timeout = timeout

    def compare_many(self, pairs: Sequence[Pair]) -> list[CheckOutcome]:
        """Equivalence of every ``(a, b, example)``, concurrently, with timeout flags; input order."""
        return check_equivalent([(a, b) for a, b, _ in pairs], numeric=self.numeric, timeout=self.timeout)
