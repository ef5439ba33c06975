"""Run slow, possibly hanging checks in worker processes with a hard per-item timeout.

Answer checks (SymPy simplification, code execution, ...) can hang in C code where
``signal.alarm`` never fires, and ``signal`` does not work outside the main thread.
:class:`CheckPool` runs each check in a worker process; a check that exceeds its
timeout gets its worker killed (SIGKILL) and a fresh worker started, and the
caller gets ``CheckOutcome(value=None, timed_out=True)``. Nothing here knows
about any task. Its user today is the math-verify backend
(:mod:`autojudge.core.compare.math`: the math tasks' equivalence and correctness
checks, through one shared pool; ``bench/bench_math_equivalence.py`` measures it).
Mining does not use it directly: it calls ``task.equivalent_outcomes`` and each
task's comparer brings its own isolation (the code tasks run programs in the
sandbox's worker pool, :mod:`autojudge.core.compare.sandboxed`; the LLM comparer
batches requests in-process, :mod:`autojudge.core.compare.llm`).

Usage::

    with CheckPool(workers=2, timeout=5.0) as pool:
        outcomes = pool.map(check, items)          # list[CheckOutcome], input order
        fut = pool.submit(check2, a, b)            # concurrent.futures.Future[CheckOutcome]

Limits:

* ``fn`` and its arguments and result cross a process boundary: they must be
  picklable (module-level functions, plain data). Pickle is used only as the IPC
  encoding between this process and its own workers, never for storage.
* The timeout counts from the moment a worker has unpickled the item and calls
  ``fn`` (queueing, and imports triggered by unpickling ``fn``, are free; those are
  limited by ``startup_timeout`` instead). Use ``initializer`` to import heavy
  modules once per worker; a replaced worker imports them again.
* A killed worker's start-up cost (``spawn``: a new interpreter plus the
  initializer, ~0.5-2 s) is paid again; frequent timeouts are expensive.
* Futures never raise for a failing check: errors come back as
  ``CheckOutcome(error="Type: message")``. Only ``shutdown(cancel_futures=True)``
  and ``terminate()`` cancel queued checks (checks already handed to a worker end
  with an error outcome instead).
* Workers exit on their own when this process dies (they poll their parent's pid).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any

from autojudge.core.task import BROKEN_PREFIX, CheckOutcome

__all__ = ["BROKEN_PREFIX", "CheckOutcome", "CheckPool", "PoolBrokenError", "default_workers", "in_worker"]

_ALLOWED_CONTEXTS = ("spawn", "forkserver")
_PARENT_POLL_S = 0.5
_JOIN_S = 2.0
_MAX_STARTUP_FAILURES = 3

_IN_WORKER = False


def in_worker() -> bool:
    """True inside a :class:`CheckPool` worker process (use it to avoid nesting pools)."""
    return _IN_WORKER


def default_workers() -> int:
    """Number of CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class PoolBrokenError(RuntimeError):
    """The pool cannot run checks: its workers' initializer failed or they could not start."""


# -- worker side ----------------------------------------------------------------------------------------


def _watch_parent(ppid: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != ppid:
            os._exit(3)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _worker_main(conn: multiprocessing.connection.Connection, initializer: Any, initargs: tuple) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    # the parent is this process under spawn, the fork server under forkserver (which exits with ours)
    threading.Thread(
        target=_watch_parent, args=(os.getppid(),), daemon=True, name="checkpool-parent-watch"
    ).start()
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as e:  # report, then exit: the pool marks itself broken
        conn.send(("init_error", _describe(e)))
        return
    conn.send(("ready", None))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            msg = ForkingPickler.loads(data)
        except Exception as e:
            conn.send(("error", f"could not unpickle the check in the worker: {_describe(e)}"))
            continue
        if msg is None:
            return
        fn, args = msg
        conn.send(("start", None))  # the item's timeout counts from here: imports while unpickling are free
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except Exception as e:
            reply = ("error", _describe(e))
        try:
            conn.send(reply)
        except Exception as e:  # unpicklable result
            conn.send(("error", f"result could not be sent back: {_describe(e)}"))


# -- parent side ----------------------------------------------------------------------------------------


@dataclass
class _Item:
    future: Future
    fn: Callable[..., Any]
    args: tuple
    timeout: float | None


class _Worker:
    def __init__(self, ctx: Any, initializer: Any, initargs: tuple, serial: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker_main,
            args=(child, initializer, initargs),
            daemon=True,
            name=f"checkpool-worker-{serial}",
        )
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        #: items sent to this worker, in the order it runs them; the head is running (or unpickling)
        self.items: deque[_Item] = deque()
        self.deadline: float | None = None

    @property
    def item(self) -> _Item | None:
        return self.items[0] if self.items else None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(_JOIN_S)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(_JOIN_S)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(_JOIN_S)
        self.conn.close()


class _Dispatcher:
    """State and loop of one pool, run in a background thread (kept apart from CheckPool for GC)."""

    def __init__(
        self, workers: int, ctx: Any, initializer: Any, initargs: tuple, startup_timeout: float, prefetch: int
    ) -> None:
        self.n = workers
        self.depth = 1 + prefetch
        self.terminating = False
        self.ctx = ctx
        self.initializer = initializer
        self.initargs = initargs
        self.startup_timeout = startup_timeout
        self.lock = threading.Lock()
        self.pending: deque[_Item] = deque()
        self.workers: list[_Worker] = []
        self.closing = False
        self.broken: str | None = None
        self.serial = itertools.count()
        self.restarts = 0
        self.startup_failures = 0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.fds_open = True
        self.fd_lock = threading.Lock()  # the wake pipe is closed only while no one writes to it
        self.thread: threading.Thread | None = None
        self.thread_lock = threading.Lock()

    # called from any thread
    def wake(self) -> None:
        with self.fd_lock:
            if self.fds_open:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(self.wake_w, b"x")

    def ensure_thread(self) -> None:
        with self.thread_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.loop, daemon=True, name="checkpool-dispatcher")
                self.thread.start()

    # dispatcher thread only below
    def _finish(self, item: _Item, outcome: CheckOutcome) -> None:
        with contextlib.suppress(InvalidStateError):  # cancelled or finished meanwhile
            item.future.set_result(outcome)

    def _spawn(self) -> None:
        self.workers.append(_Worker(self.ctx, self.initializer, self.initargs, next(self.serial)))

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers.remove(w)
        self.restarts += 1

    def _break(self, why: str) -> None:
        self.broken = why
        with self.lock:
            items = list(self.pending)
            self.pending.clear()
        for w in self.workers:
            items.extend(w.items)
            w.items.clear()
        for it in items:
            self._finish(it, CheckOutcome(error=BROKEN_PREFIX + why))

    def _requeue(self, items: list[_Item]) -> None:
        """Give back items a worker had received but not started (its death was not their fault)."""
        if self.terminating:
            for it in items:
                self._finish(it, CheckOutcome(error="check pool was terminated"))
            return
        with self.lock:
            self.pending.extendleft(reversed(items))

    def _next_pending(self) -> _Item | None:
        while True:
            with self.lock:
                if not self.pending:
                    return None
                item = self.pending.popleft()
            # a requeued item is already running; a cancelled one is dropped
            if item.future.running() or item.future.set_running_or_notify_cancel():
                return item

    def _assign(self) -> None:
        if self.terminating:
            return
        for w in list(self.workers):
            while w.ready and len(w.items) < self.depth:
                item = self._next_pending()
                if item is None:
                    return
                try:
                    w.conn.send((item.fn, item.args))
                except OSError as e:  # worker pipe broken: give the item back, replace the worker
                    self._requeue([item])
                    self._note_dead(w, str(e))
                    break
                except Exception as e:  # unpicklable fn/args
                    self._finish(
                        item, CheckOutcome(error=f"check could not be sent to a worker: {_describe(e)}")
                    )
                    continue
                w.items.append(item)
                if len(w.items) == 1:
                    w.deadline = time.monotonic() + self.startup_timeout  # until "start": unpickling, imports

    def _note_dead(self, w: _Worker, why: str) -> None:
        if not w.ready:  # never took an item
            self._failed_start(w, f"died while starting (exit code {w.proc.exitcode})")
            return
        if w.items:
            code = w.proc.exitcode
            self._finish(
                w.items.popleft(), CheckOutcome(error=f"worker process died (exit code {code}): {why}")
            )
            self._requeue(list(w.items))
            w.items.clear()
        self._replace(w)

    def _startup_limit(self) -> float:
        """Seconds a new worker may take to start: doubles after each failed start in a row."""
        return self.startup_timeout * 2**self.startup_failures

    def _failed_start(self, w: _Worker, what: str) -> None:
        """``w`` died or missed its start-up deadline: replace it; too many in a row break the pool.

        A slow start is usually a loaded machine (two model processes on two cores), not
        a broken initializer, so the next worker gets twice the time (:meth:`_startup_limit`).
        """
        self._replace(w)
        self.startup_failures += 1
        if self.startup_failures >= _MAX_STARTUP_FAILURES:
            self._break(f"{self.startup_failures} workers in a row {what}")

    def _handle_message(self, w: _Worker) -> None:
        try:
            kind, payload = w.conn.recv()
        except (EOFError, OSError) as e:
            self._note_dead(w, type(e).__name__)
            return
        if kind == "ready":
            w.ready = True
            self.startup_failures = 0
        elif kind == "start":
            head = w.item
            if head is not None:
                w.deadline = None if head.timeout is None else time.monotonic() + head.timeout
        elif kind == "init_error":
            self._replace(w)
            self._break(f"worker initializer failed: {payload}")
        elif w.items:
            item = w.items.popleft()
            # the next item (if any) is unpickling until its "start" arrives
            w.deadline = time.monotonic() + self.startup_timeout if w.items else None
            if kind == "ok":
                self._finish(item, CheckOutcome(value=payload))
            else:
                self._finish(item, CheckOutcome(error=str(payload)))

    def _want_workers(self) -> bool:
        with self.lock:
            return bool(self.pending)

    def _wait_timeout(self, now: float) -> float | None:
        deadlines = [w.deadline for w in self.workers if w.deadline is not None]
        deadlines += [w.started + self._startup_limit() for w in self.workers if not w.ready]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def loop(self) -> None:
        try:
            self._loop()
        finally:
            self._shutdown_workers()

    def _loop(self) -> None:
        while True:
            if self.broken is None and not self.terminating and self._want_workers():
                while len(self.workers) < self.n:
                    try:
                        self._spawn()
                    except Exception as e:
                        self._break(f"cannot start a worker: {_describe(e)}")
                        break
            if self.broken is not None:
                self._break(self.broken)  # fail anything submitted meanwhile
            self._assign()
            with self.lock:
                idle = not self.pending and all(not w.items for w in self.workers)
                if self.closing and idle:
                    return
            now = time.monotonic()
            conns = {w.conn: w for w in self.workers}
            sentinels = {w.proc.sentinel: w for w in self.workers}
            ready = multiprocessing.connection.wait(
                [self.wake_r, *conns, *sentinels], timeout=self._wait_timeout(now)
            )
            if self.wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self.wake_r, 4096)
            for obj in ready:
                w = conns.get(obj)
                if w is not None and w in self.workers:
                    self._handle_message(w)
            for obj in ready:
                w = sentinels.get(obj)
                if w is not None and w in self.workers and not w.conn.poll():
                    self._note_dead(w, "no reply")
            now = time.monotonic()
            for w in list(self.workers):
                if w.items and w.deadline is not None and now >= w.deadline:
                    item = w.items.popleft()
                    self._requeue(list(w.items))
                    w.items.clear()
                    self._replace(w)
                    self._finish(item, CheckOutcome(timed_out=True))
                elif not w.ready and now >= w.started + (limit := self._startup_limit()):
                    self._failed_start(
                        w,
                        f"did not start in time (the last within {limit:g} s); "
                        "the machine may be overloaded, or the worker initializer hangs",
                    )

    def _shutdown_workers(self) -> None:
        for w in self.workers:
            for it in w.items:
                self._finish(it, CheckOutcome(error="check pool was terminated"))
            w.items.clear()
            if w.ready:
                w.stop()
            else:
                w.kill()
        self.workers.clear()
        with self.fd_lock:
            if self.fds_open:
                self.fds_open = False
                os.close(self.wake_r)
                os.close(self.wake_w)

    def drop_pending(self, why: str) -> None:
        """Cancel the queued checks (those already handed out once end with an error outcome)."""
        with self.lock:
            items = list(self.pending)
            self.pending.clear()
        for it in items:
            if not it.future.cancel():
                self._finish(it, CheckOutcome(error=why))

    def terminate(self) -> None:
        """Kill every worker now; pending and running checks end with an error outcome."""
        self.terminating = True
        with self.lock:
            self.closing = True
        self.drop_pending("check pool was terminated")
        for w in list(self.workers):
            if w.proc.is_alive():
                w.proc.kill()
        self.wake()


_live: weakref.WeakSet[CheckPool] = weakref.WeakSet()


@atexit.register
def _terminate_live_pools() -> None:
    for pool in list(_live):
        pool.terminate()


class CheckPool:
    """Worker processes that run picklable callables with a per-item timeout.

    ``workers`` defaults to :func:`default_workers`; ``timeout`` (seconds, ``None``
    for no limit) is the default per-item limit, overridable per call. Workers
    start lazily on the first submission. ``initializer(*initargs)`` runs once in
    each worker before it takes items (not counted in item timeouts; a failure
    breaks the pool). Start-up is limited by ``startup_timeout``: a worker that
    misses it is replaced and the next one gets twice the time; three slow or
    dead starts in a row break the pool (a loaded machine slows a start, it
    should not end a mining run). ``prefetch``
    extra items are sent to a busy worker ahead of time so it never waits for
    the dispatcher; when the running item times out or its worker dies, the
    prefetched ones go back to the queue untouched.
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = 10.0,
        mp_context: str = "spawn",
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        startup_timeout: float = 120.0,
        prefetch: int = 1,
    ) -> None:
        if mp_context not in _ALLOWED_CONTEXTS:
            raise ValueError(
                f"mp_context must be one of {_ALLOWED_CONTEXTS} (fork is unsafe with threads), got {mp_context!r}"
            )
        n = default_workers() if workers is None else int(workers)
        if n < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 or None, got {timeout}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.workers = n
        self.timeout = timeout
        self.mp_context = mp_context
        self._d = _Dispatcher(
            n,
            multiprocessing.get_context(mp_context),
            initializer,
            tuple(initargs),
            startup_timeout,
            prefetch,
        )
        self._closed = False
        weakref.finalize(self, _Dispatcher.terminate, self._d)
        _live.add(self)

    # -- submitting ------------------------------------------------------------------------------------
    def submit(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None | str = "default"
    ) -> Future:
        """Run ``fn(*args)`` in a worker; the future's result is a :class:`CheckOutcome`.

        ``timeout`` overrides the pool's default for this item (``None``: no limit).
        Raises :class:`PoolBrokenError` when the pool cannot start workers; checks
        queued when it broke end with an outcome whose ``pool_broken`` is true.
        """
        if self._closed:
            raise RuntimeError("cannot submit to a CheckPool that was shut down")
        t = self.timeout if timeout == "default" else timeout
        fut: Future = Future()
        d = self._d
        if d.broken is not None:
            raise PoolBrokenError(BROKEN_PREFIX + d.broken)
        with d.lock:
            d.pending.append(_Item(fut, fn, args, t))  # type: ignore[arg-type]
        d.ensure_thread()
        d.wake()
        return fut

    def map(
        self, fn: Callable[[Any], Any], items: Iterable[Any], *, timeout: float | None | str = "default"
    ) -> list[CheckOutcome]:
        """``fn(item)`` for every item, run concurrently; outcomes in input order."""
        futures = [self.submit(fn, item, timeout=timeout) for item in items]
        return [f.result() for f in futures]

    def starmap(
        self,
        fn: Callable[..., Any],
        arg_tuples: Iterable[Sequence[Any]],
        *,
        timeout: float | None | str = "default",
    ) -> list[CheckOutcome]:
        """``fn(*args)`` for every tuple of arguments; outcomes in input order."""
        futures = [self.submit(fn, *args, timeout=timeout) for args in arg_tuples]
        return [f.result() for f in futures]

    # -- introspection -----------------------------------------------------------------------------------
    @property
    def restarts(self) -> int:
        """Workers replaced so far (timeouts and crashes)."""
        return self._d.restarts

    @property
    def broken(self) -> str | None:
        """Why the pool cannot run checks, or ``None``."""
        return self._d.broken

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for tests and diagnostics)."""
        return [w.proc.pid for w in list(self._d.workers) if w.proc.pid is not None]

    # -- shutting down -----------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; finish queued checks (or cancel them) and stop the workers.

        With ``wait`` the call returns once every worker process has exited.
        """
        self._closed = True
        d = self._d
        with d.lock:
            d.closing = True
        if cancel_futures:
            d.drop_pending("check pool was shut down")
        d.wake()
        if wait and d.thread is not None:
            d.thread.join()
        if d.thread is None:  # never started: nothing to stop
            d._shutdown_workers()
        _live.discard(self)

    def terminate(self) -> None:
        """Kill the workers at once; queued checks are cancelled, running ones end with an error."""
        self._closed = True
        self._d.terminate()
        if self._d.thread is not None:
            self._d.thread.join(10 * _JOIN_S)
        else:
            self._d._shutdown_workers()
        _live.discard(self)

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)
