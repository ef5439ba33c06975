"""CheckPool: order, errors, per-item timeouts with worker replacement, futures, shutdown without orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from autojudge.core.compare.pool import CheckOutcome, CheckPool, PoolBrokenError, in_worker

REPO = Path(__file__).resolve().parents[1]


# -- functions run in the workers (module level: picklable by reference) --------------------------------
def square(x: int) -> int:
    return x * x


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def maybe_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return x


def worker_info() -> tuple[int, bool]:
    return os.getpid(), in_worker()


def returns_unpicklable() -> object:
    return lambda: None


def die() -> None:
    os._exit(7)


def busy_c_loop() -> int:
    return sum(range(10**12))  # one C call for minutes: signal handlers would not run before it ends


def failing_initializer() -> None:
    raise RuntimeError("no such module")


def slow_first_initializer(marker: str, seconds: float) -> None:
    """Hangs in the first worker only (it leaves a marker file): a start slowed by a loaded machine."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)


def hanging_initializer() -> None:
    time.sleep(60)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def pool():
    with CheckPool(workers=2, timeout=5.0) as p:
        yield p


def test_map_returns_outcomes_in_input_order(pool: CheckPool) -> None:
    assert pool.map(square, range(20)) == [CheckOutcome(value=i * i) for i in range(20)]
    assert pool.starmap(pow, [(2, 3), (3, 2)]) == [CheckOutcome(value=8), CheckOutcome(value=9)]


def test_errors_come_back_as_outcomes(pool: CheckPool) -> None:
    out = pool.map(maybe_fail, [1, 3, 5])
    assert [o.value for o in out] == [1, None, 5]
    assert out[1].error == "ValueError: three is bad" and not out[1].ok and not out[1].timed_out
    bad = pool.submit(returns_unpicklable).result()
    assert bad.error is not None and "sent back" in bad.error
    unpicklable_fn = pool.submit(lambda: 1).result()
    assert unpicklable_fn.error is not None and "could not be sent" in unpicklable_fn.error


def test_submit_returns_a_future_and_runs_in_a_worker(pool: CheckPool) -> None:
    fut = pool.submit(worker_info)
    assert isinstance(fut, Future)
    pid, flagged = fut.result(timeout=30).value
    assert pid != os.getpid() and flagged is True and in_worker() is False


def test_prefetched_items_survive_a_timeout_of_the_item_before_them() -> None:
    with CheckPool(workers=1, timeout=0.5, prefetch=2) as p:
        p.submit(square, 1, timeout=60).result()
        out = p.map(sleepy, [60, 0.01, 0.02], timeout=0.5)
        assert out[0].timed_out and [o.value for o in out[1:]] == [0.01, 0.02]


def test_timeout_kills_the_worker_and_a_fresh_one_takes_over() -> None:
    with CheckPool(workers=1, timeout=0.5) as p:
        first_pid = p.submit(worker_info, timeout=60).result().value[0]  # the first call imports this module
        t0 = time.monotonic()
        out = p.map(sleepy, [60, 0.01])
        assert time.monotonic() - t0 < 30
        assert out[0] == CheckOutcome(timed_out=True)
        assert out[1] == CheckOutcome(value=0.01)
        assert p.restarts == 1
        assert _wait_gone([first_pid])
        assert p.submit(worker_info, timeout=60).result().value[0] != first_pid
        # a per-call override beats the pool default
        assert p.submit(sleepy, 1.0, timeout=10).result().value == 1.0


@pytest.mark.slow
def test_timeout_stops_c_level_loops() -> None:
    with CheckPool(workers=1, timeout=0.5) as p:
        p.submit(square, 1, timeout=60).result()  # import this module in the worker first
        assert p.submit(busy_c_loop).result(timeout=60).timed_out


def test_a_dying_worker_is_reported_and_replaced(pool: CheckPool) -> None:
    out = pool.submit(die).result(timeout=60)
    assert out.error is not None and "died" in out.error
    assert pool.submit(square, 4).result(timeout=60).value == 16


def test_shutdown_leaves_no_worker_processes() -> None:
    p = CheckPool(workers=2, timeout=5.0)
    p.map(square, range(4))
    pids = p.worker_pids()
    assert pids
    p.shutdown()
    assert _wait_gone(pids, 5)
    with pytest.raises(RuntimeError):
        p.submit(square, 1)


def test_shutdown_can_cancel_queued_checks_and_terminate_kills_running_ones() -> None:
    p = CheckPool(workers=1, timeout=None)
    running = p.submit(sleepy, 30)
    queued = [p.submit(sleepy, 30) for _ in range(3)]
    deadline = time.monotonic() + 60
    while not running.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = p.worker_pids()
    p.terminate()
    # queued checks are cancelled; the one prefetched to the worker ends with an error instead
    assert all(f.cancelled() or f.result(timeout=10).error for f in queued)
    assert sum(f.cancelled() for f in queued) >= 2
    assert running.result(timeout=10).error is not None
    assert _wait_gone(pids, 5)


def test_context_manager_without_work_starts_nothing() -> None:
    with CheckPool(workers=2) as p:
        assert p.worker_pids() == []


def test_forkserver_context_works() -> None:
    with CheckPool(workers=1, timeout=5.0, mp_context="forkserver") as p:
        assert p.map(square, [3]) == [CheckOutcome(value=9)]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="fork"):
        CheckPool(mp_context="fork")
    with pytest.raises(ValueError):
        CheckPool(workers=0)
    with pytest.raises(ValueError):
        CheckPool(timeout=0)
    with pytest.raises(ValueError):
        CheckPool(prefetch=-1)


def test_a_failing_initializer_breaks_the_pool_loudly() -> None:
    with CheckPool(workers=1, timeout=5.0, initializer=failing_initializer) as p:
        first = p.submit(square, 2).result(timeout=60)
        assert first.pool_broken and "no such module" in (first.error or "")
        with pytest.raises(PoolBrokenError):
            p.submit(square, 2)


def test_one_slow_start_replaces_the_worker_instead_of_breaking_the_pool(tmp_path: Path) -> None:
    marker = str(tmp_path / "started-once")
    with CheckPool(
        workers=1, timeout=5.0, initializer=slow_first_initializer, initargs=(marker, 60), startup_timeout=3.0
    ) as p:
        assert p.map(square, [4], timeout=30) == [CheckOutcome(value=16)]
        assert p.broken is None and p.restarts == 1


def test_starts_that_keep_hanging_break_the_pool_with_a_clear_reason() -> None:
    with CheckPool(workers=1, timeout=5.0, initializer=hanging_initializer, startup_timeout=1.0) as p:
        first = p.submit(square, 2).result(timeout=60)  # 1 + 2 + 4 s of start-up budget, then broken
        assert first.pool_broken and "3 workers in a row did not start in time" in (first.error or "")
        assert "within 4 s" in (first.error or "")
        with pytest.raises(PoolBrokenError, match="overloaded"):
            p.submit(square, 2)


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from autojudge.core.compare.pool import CheckPool
            from test_checkpool import sleepy
            if __name__ == "__main__":
                p = CheckPool(workers=2, timeout=None)
                futs = [p.submit(sleepy, 60) for _ in range(2)]
                time.sleep(0.2)
                while len(p.worker_pids()) < 2:
                    time.sleep(0.1)
                print(" ".join(map(str, p.worker_pids())), flush=True)
                time.sleep(1.0)
                os._exit(0)  # no clean-up: like a crash
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    pids = [int(x) for x in proc.stdout.split()]
    assert len(pids) == 2, proc.stderr
    assert _wait_gone(pids, 10)
