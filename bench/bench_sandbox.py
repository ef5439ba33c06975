"""Sandbox throughput: tests/s for 1-test and 10-test problems, cold vs warm, Docker and bubblewrap.

    python bench/bench_sandbox.py                 # full run (a few minutes)
    python bench/bench_sandbox.py --smoke         # seconds: tiny counts, checks that everything runs

Every problem is a small LiveCodeBench-style stdin program (read numbers, print their sum)
whose tests all pass; ``workers`` programs run at once (``run_many``). Modes:

- docker cold: a new container per program (for 1-test problems: a container per test, like
  ``docker run`` per test); docker exec: warm containers, one ``docker exec`` of the harness per
  program; docker warm: warm containers whose PID 1 is the harness (the default).
- bwrap cold: a new bubblewrap sandbox per program; bwrap warm: one long-lived harness per slot
  (the default).

Warm pools are started (and used once) before the clock starts; cold modes pay everything.
The machine's load average is printed: other jobs on the same CPU change the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from autojudge.sandbox import Limits, Program, SandboxUnavailable, TestCase, get_sandbox

CODE = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums[1:]))\n"


def problem(n_tests: int, seed: int) -> Program:
    tests = []
    for t in range(n_tests):
        nums = [(seed * 7919 + t * 104729 + i * 31) % 1000 for i in range(100)]
        tests.append(TestCase.stdio(f"{len(nums)}\n" + " ".join(map(str, nums)) + "\n", str(sum(nums))))
    return Program(CODE, tests, id=f"p{seed}")


def measure(backend: str, mode: str, n_tests: int, n_programs: int, workers: int) -> dict:
    programs = [problem(n_tests, s) for s in range(n_programs)]
    box = get_sandbox(backend, workers=workers, limits=Limits(timeout=10), mode=mode)
    try:
        warm = mode != "cold"
        if warm:
            box.warmup()
            box.run_many([problem(n_tests, -1 - i) for i in range(workers)])
        t0 = time.perf_counter()
        results = box.run_many(programs)
        elapsed = time.perf_counter() - t0
    finally:
        box.close()
    bad = [r for r in results if not r.passed]
    if bad:
        r = bad[0]
        raise SystemExit(
            f"{backend}/{mode}: {len(bad)} program(s) failed, e.g. {r.error or r.results[0].reason}"
        )
    return {
        "backend": backend,
        "mode": mode,
        "tests_per_problem": n_tests,
        "problems": n_programs,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "tests_per_s": round(n_programs * n_tests / elapsed, 1),
        "ms_per_problem": round(1000 * elapsed * workers / n_programs, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="docker,bwrap")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems-1", type=int, default=120, help="1-test problems per warm measurement")
    ap.add_argument("--problems-10", type=int, default=60, help="10-test problems per warm measurement")
    ap.add_argument("--cold-problems", type=int, default=20, help="problems per cold measurement")
    ap.add_argument("--smoke", action="store_true", help="tiny counts: check that it runs")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.problems_1, args.problems_10, args.cold_problems = 4, 2, 2
    modes = {"docker": ["cold", "exec", "persistent"], "bwrap": ["cold", "persistent"]}
    rows = []
    print(
        f"# sandbox throughput, {args.workers} workers, {os.cpu_count()} CPUs, "
        f"load average before: {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for backend in args.backends.split(","):
        for mode in modes[backend]:
            for n_tests in (1, 10):
                n = (
                    args.cold_problems
                    if mode == "cold"
                    else (args.problems_1 if n_tests == 1 else args.problems_10)
                )
                try:
                    row = measure(backend, mode, n_tests, n, args.workers)
                except SandboxUnavailable as e:
                    raise SystemExit(f"{backend}: {e}") from None
                rows.append(row)
                print(
                    f"{backend} {mode} {n_tests}-test: {row['tests_per_s']} tests/s",
                    file=sys.stderr,
                    flush=True,
                )
    label = {
        "cold": "cold (new sandbox per program)",
        "exec": "warm, docker exec per program",
        "persistent": "warm (harness per slot, default)",
    }
    print("\n| backend | mode | tests/problem | problems | tests/s | ms/problem/worker |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backend']} | {label[r['mode']]} | {r['tests_per_problem']} | {r['problems']} | "
            f"{r['tests_per_s']} | {r['ms_per_problem']} |"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
