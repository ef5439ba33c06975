"""What every backend shares: worker slots, ``run`` / ``run_many``, grading, clean-up at exit.

A backend subclasses :class:`PooledSandbox` and provides slots: an object with
``execute(job, collector, timeout) -> RunOutcome`` that runs the harness once on a job (in
a warm container, a fresh bubblewrap sandbox, a subprocess) and ``close()``. At most
``workers`` programs run at once, one per slot; ``run_many`` keeps them all busy.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from autojudge.sandbox.api import Limits, Program, ProgramResult, SandboxError, TestResult, note_program
from autojudge.sandbox.compare import grade
from autojudge.sandbox.protocol import Collector, build_job, hard_timeout, new_token, output_cap

log = logging.getLogger("autojudge.sandbox")


@dataclass
class RunOutcome:
    error: str | None = None  # the run broke (harness died, protocol violation, ...)
    timed_out: bool = False  # the host's hard timeout killed the sandbox
    stderr: str = ""  # the harness's own stderr (tail)


class Slot(Protocol):
    def execute(self, job: bytes, collector: Collector, timeout: float) -> RunOutcome: ...

    def close(self) -> None: ...


_live: weakref.WeakSet[PooledSandbox] = weakref.WeakSet()
_handlers_installed = False


def close_all_sandboxes() -> None:
    """Close every open sandbox of this process (atexit, SIGTERM/SIGHUP)."""
    for box in list(_live):
        with contextlib.suppress(Exception):
            box.close()


atexit.register(close_all_sandboxes)


def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
    close_all_sandboxes()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """Close sandboxes on SIGTERM / SIGHUP too (Ctrl-C raises KeyboardInterrupt, then atexit runs).

    Only from the main thread, and only where the signal still has its default action: an
    application's own handlers are left alone.
    """
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_signal)
    _handlers_installed = True


class PooledSandbox:
    """Base of the backends: ``workers`` slots, created lazily and reused."""

    name = "?"
    #: how the harness cleans up between tests; see harness.py
    kill_all = True
    wipe: tuple[str, ...] = ("/tmp", "/dev/shm")
    workdir = "/tmp"
    #: why ``get_sandbox("auto")`` chose this backend instead of Docker (``None``: it was asked for)
    fallback_reason: str | None = None

    def __init__(self, workers: int = 2, limits: Limits | None = None) -> None:
        if int(workers) < 1:
            raise ValueError("workers must be >= 1")
        self.workers = int(workers)
        self.limits = limits or Limits()
        self._sem = threading.BoundedSemaphore(self.workers)
        self._free: list[Slot] = []
        self._all: list[Slot] = []
        self._lock = threading.RLock()  # close() may run from a signal handler on this thread
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        _live.add(self)
        install_signal_handlers()

    # -- for subclasses -----------------------------------------------------------------------------
    def _make_slot(self) -> Slot:
        raise NotImplementedError

    def _job_options(self) -> dict[str, Any]:
        return {"nproc": None, "drop_uid": None}

    def _workdir(self, slot: Slot) -> str:
        return self.workdir

    def _wipe(self, slot: Slot) -> list[str]:
        return list(self.wipe)

    # -- slots ------------------------------------------------------------------------------------------
    def _acquire(self) -> Slot:
        self._sem.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise SandboxError(f"the {self.name} sandbox is closed")
                if self._free:
                    return self._free.pop()
            slot = self._make_slot()
            with self._lock:
                self._all.append(slot)
                if self._closed:
                    self._all.remove(slot)
                    slot.close()
                    raise SandboxError(f"the {self.name} sandbox is closed")
            return slot
        except BaseException:
            self._sem.release()
            raise

    def _release(self, slot: Slot) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._free.append(slot)
        if closed:
            with contextlib.suppress(Exception):
                slot.close()
        self._sem.release()

    def warmup(self) -> None:
        """Create every slot now (containers start in parallel) instead of on first use."""
        slots = []
        try:
            with ThreadPoolExecutor(self.workers) as ex:
                slots = list(ex.map(lambda _: self._acquire(), range(self.workers)))
        finally:
            for s in slots:
                self._release(s)

    # -- running ----------------------------------------------------------------------------------------
    def run(self, program: Program) -> ProgramResult:
        """Run one program's tests (blocks; safe to call from several threads)."""
        if not program.tests:
            return ProgramResult([], backend=self.name, id=program.id)
        note_program(self.name, fallback=self.fallback_reason is not None)
        slot = self._acquire()
        try:
            return self._run_on(slot, program)
        finally:
            self._release(slot)

    def run_many(
        self, programs: Iterable[Program], *, progress: Callable[[int, int], None] | None = None
    ) -> list[ProgramResult]:
        """Run many programs concurrently on the pool; results in input order.

        ``progress(done, total)`` is called after each program. Ctrl-C (KeyboardInterrupt) while
        waiting closes the sandbox: its containers / processes stop at once.
        """
        programs = list(programs)
        if not programs:
            return []
        with self._lock:
            if self._closed:
                raise SandboxError(f"the {self.name} sandbox is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"sandbox-{self.name}")
            ex = self._executor
        futures = [ex.submit(self.run, p) for p in programs]
        out: list[ProgramResult] = []
        try:
            for i, f in enumerate(futures):
                out.append(f.result())
                if progress is not None:
                    progress(i + 1, len(programs))
        except KeyboardInterrupt:
            # Ctrl-C: stop everything now rather than let running programs finish at exit
            for f in futures:
                f.cancel()
            self.close()
            raise
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return out

    def _run_on(self, slot: Slot, program: Program) -> ProgramResult:
        t0 = time.monotonic()
        token = new_token()
        job = build_job(
            program,
            self.limits,
            token,
            kill_all=self.kill_all,
            wipe=self._wipe(slot),
            workdir=self._workdir(slot),
            **self._job_options(),
        )
        collector = Collector(token, len(program.tests), output_cap(program, self.limits))
        limit = hard_timeout(program, self.limits)
        outcome = self._execute_guarded(slot, job, collector, limit)
        error = None
        if outcome.timed_out:
            error = f"host-side hard timeout: the sandbox was killed after {limit:.1f} s"
            missing = ("timeout", error)
        elif outcome.error or not collector.complete:
            error = (
                outcome.error
                or collector.problem
                or ("the sandbox run ended before all results (the program may have killed the test harness)")
            )
            if outcome.stderr.strip():
                error += f"; harness stderr: {outcome.stderr.strip()[-1000:]}"
            missing = ("sandbox_error", error)
        else:
            missing = ("sandbox_error", "no result from the sandbox")
        results: list[TestResult] = [
            grade(t, collector.records.get(i), missing_status=missing[0], missing_reason=missing[1])
            for i, t in enumerate(program.tests)
        ]
        if error:
            log.info("%s sandbox: program %s: %s", self.name, program.id, error)
        return ProgramResult(
            results, backend=self.name, id=program.id, wall_s=time.monotonic() - t0, error=error
        )

    def _execute_guarded(self, slot: Slot, job: bytes, collector: Collector, limit: float) -> RunOutcome:
        try:
            return slot.execute(job, collector, limit)
        except SandboxError:
            raise
        except Exception as e:  # an unexpected failure of the backend: report it on the program
            log.warning("%s sandbox: run failed: %s", self.name, e, exc_info=True)
            return RunOutcome(error=f"{type(e).__name__}: {e}")

    # -- closing ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything this sandbox started (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            slots = list(self._all)
            self._all.clear()
            self._free.clear()
            ex = self._executor
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        for s in slots:
            with contextlib.suppress(Exception):
                s.close()
        self._close_extra()
        _live.discard(self)

    def _close_extra(self) -> None:
        """Backend-specific clean-up after the slots are closed."""

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PooledSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} workers={self.workers} closed={self._closed}>"
