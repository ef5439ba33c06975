"""The harness as a host subprocess (the bubblewrap and unsafe-local backends)."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TypeVar

from autojudge.sandbox.pool import RunOutcome
from autojudge.sandbox.protocol import Collector

_STDERR_TAIL = 4096
T = TypeVar("T")


class _OwnerThread:
    """One long-lived thread of this process that starts the harness processes.

    ``bwrap --die-with-parent`` (``PR_SET_PDEATHSIG``) kills the sandbox when the *thread* that
    started it exits, not the process: a warm sandbox started by a short-lived thread (a caller's
    own thread, ``warmup``'s pool) would die with that thread and fail the next program on its
    slot. Processes started here live until they are closed, or until the process ends: the thread
    ends only with the process (it is a daemon thread), so no sandbox outlives its Python process.
    A forked child gets its own thread on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None

    def _after_fork(self) -> None:  # the thread and maybe the lock's holder are gone in a forked child
        self._lock = threading.Lock()
        self._pid = self._queue = self._thread = None

    def call(self, fn: Callable[[], T], *, undo: Callable[[T], object] | None = None) -> T:
        """``fn()`` run on the owner thread; ``undo(result)`` if the caller stops waiting (Ctrl-C)."""
        if threading.current_thread() is self._thread:
            return fn()
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, args=(self._queue,), name="autojudge-sandbox-owner", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()
            q = self._queue
        fut: Future[T] = Future()
        q.put((fn, fut))  # type: ignore[union-attr]
        try:
            return fut.result()
        except BaseException:
            if undo is not None and not fut.cancel():  # started already: undo it once it is done
                fut.add_done_callback(lambda f: f.exception() is None and undo(f.result()))
            raise

    @staticmethod
    def _serve(q: queue.SimpleQueue) -> None:
        while True:
            fn, fut = q.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)
            del fn, fut


_owner = _OwnerThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_owner._after_fork)


def _kill_quietly(p: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        p.kill()
    with contextlib.suppress(Exception):
        p.wait(timeout=10)


class ProcessSession:
    """One harness process: send it job lines, read its result lines; SIGKILL on any trouble.

    ``owned``: start it from this process's long-lived owner thread (see :class:`_OwnerThread`),
    for commands that tie their life to the starting thread (``bwrap --die-with-parent``).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        owned: bool = False,
    ) -> None:
        self.argv = list(argv)

        def popen() -> subprocess.Popen:
            return subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
            )

        self.p = _owner.call(popen, undo=_kill_quietly) if owned else popen()
        assert self.p.stdin is not None and self.p.stdout is not None and self.p.stderr is not None
        self.out_fd = self.p.stdout.fileno()
        self.err_fd = self.p.stderr.fileno()
        self.in_fd = self.p.stdin.fileno()
        for fd in (self.out_fd, self.err_fd, self.in_fd):
            os.set_blocking(fd, False)
        self.err_tail = bytearray()
        self.out_eof = False
        self.err_eof = False
        self.jobs = 0

    def _send(self, job: bytes, t_end: float) -> str | None:
        view = memoryview(job)
        while view:
            left = t_end - time.monotonic()
            if left <= 0:
                return "timed out sending the job"
            _, ready, _ = select.select([], [self.in_fd], [], left)
            if not ready:
                continue
            try:
                n = os.write(self.in_fd, view)
            except BlockingIOError:
                continue
            except OSError as e:  # EPIPE: the harness is gone
                return f"could not send the job: {e}"
            view = view[n:]
        return None

    def run(self, job: bytes, collector: Collector, t_end: float, *, last: bool) -> RunOutcome:
        outcome = RunOutcome()
        self.jobs += 1
        try:
            why = self._send(job, t_end)
            if why is not None:
                if "timed out" in why:
                    outcome.timed_out = True
                else:
                    outcome.error = why
                return outcome
            if last:
                with contextlib.suppress(OSError):
                    self.p.stdin.close()  # type: ignore[union-attr]
            while not collector.done:
                if self.out_eof:
                    outcome.error = (
                        f"the harness exited (code {self.p.poll()}) before reporting every test"
                        + (f" ({collector.problem})" if collector.problem else "")
                    )
                    return outcome
                left = t_end - time.monotonic()
                if left <= 0:
                    outcome.timed_out = True
                    return outcome
                fds = [self.out_fd] if self.err_eof else [self.out_fd, self.err_fd]
                ready, _, _ = select.select(fds, [], [], left)
                for fd in ready:
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if fd == self.err_fd:
                        if not chunk:
                            self.err_eof = True
                        self.err_tail += chunk
                        del self.err_tail[:-_STDERR_TAIL]
                    elif not chunk:
                        self.out_eof = True
                    elif not collector.feed(chunk):
                        outcome.error = collector.problem
                        return outcome
            if not collector.complete:
                outcome.error = collector.problem or "incomplete results"
            return outcome
        finally:
            outcome.stderr = bytes(self.err_tail).decode("utf-8", "replace")

    def close(self, *, kill: bool = True) -> None:
        if kill:
            with contextlib.suppress(OSError):
                self.p.kill()
        else:
            with contextlib.suppress(OSError):
                self.p.stdin.close()  # type: ignore[union-attr]
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]


class SessionSlot:
    """A slot running a :class:`ProcessSession`: kept across programs (``persistent``) or not (``cold``)."""

    #: start the harness from the owner thread (``bwrap --die-with-parent`` follows the starting thread)
    owned = False

    def __init__(self, persistent: bool, jobs_per_session: int = 1000) -> None:
        self.persistent = persistent
        self.jobs_per_session = jobs_per_session
        self.session: ProcessSession | None = None
        self.closed = False

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _cwd(self) -> str | None:
        return None

    def start(self) -> None:
        """Start the harness now (a warm slot) instead of with the first program."""
        if self.session is None:
            self.session = ProcessSession(self._argv(), env=self._env(), cwd=self._cwd(), owned=self.owned)

    def execute(self, job: bytes, collector: Collector, timeout: float) -> RunOutcome:
        if self.session is not None and self.session.p.poll() is not None:
            self.session.close(kill=True)  # the harness is gone (it should not be): start another
            self.session = None
        if self.session is None:
            try:
                self.start()
            except OSError as e:
                return RunOutcome(error=f"cannot start the sandbox: {e}")
        session = self.session
        last = not self.persistent or session.jobs + 1 >= self.jobs_per_session
        outcome = session.run(job, collector, time.monotonic() + timeout, last=last)
        failed = bool(outcome.error or outcome.timed_out or not collector.complete)
        if failed or last:
            self.session = None
            session.close(kill=failed)
        return outcome

    def close(self) -> None:
        self.closed = True
        if self.session is not None:
            session, self.session = self.session, None
            session.close(kill=True)
