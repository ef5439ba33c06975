"""Throughput of math answer-equivalence checks: in-process vs the CheckPool on 1 and 2 workers.

Pairs (a realistic mining mix, built deterministically from the data sets):

* GSM8K test gold answers vs reformattings (``1,234``, ``$1234``, ``1234.00``,
  ``1234 dollars``) and perturbations (off by one, times ten);
* MATH-500 answers vs reformattings (spacing, ``\\dfrac``, ``x = ...``, a numeric
  value for numeric answers) and another problem's answer (not equivalent).

Modes:

* ``in-process``: :func:`equivalent_answers` called directly, no timeout;
* ``pool-1`` / ``pool-2``: :class:`CheckPool` with 1 / 2 workers and a 5 s timeout
  per check, submitting every pair at once (start-up is measured separately and
  excluded).

Each mode runs twice: ``math-verify`` (fast path off: every pair goes through
SymPy) and ``with fast path`` (the production path of the math tasks: plain-number
pairs are decided in the calling process and never reach a worker). Parse caches
are per process. Before timing, every mode checks a separate warm-up set (pairs
from the next 20 problems of each data set) so SymPy is warm, as in a long mining
run; the in-process parse cache is then cleared. Worker start-up is reported
separately.

Usage: ``python bench/bench_math_equivalence.py [--n-gsm8k 80] [--n-math 80] [--data-dir DIR]``
(the data sets come from ``--data-dir`` / ``AJ_DATA_DIR``). Limits: one machine, one
run; on a shared or loaded machine the absolute numbers move a lot.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from autojudge.core.compare import math as checks
from autojudge.core.compare.math_verify import equivalent_answers, parse_answer, warm_up
from autojudge.core.compare.pool import CheckPool
from autojudge.plugins.math.gsm8k import GSM8KTask
from autojudge.plugins.math.math500 import Math500Task

Pair = tuple[str, str, bool]  # a, b, numeric


def gsm8k_pairs(start: int, n: int, data_dir: str | None) -> list[Pair]:
    pairs: list[Pair] = []
    for ex in GSM8KTask(fewshot=0).load("test", data_dir=data_dir, limit=start + n)[start:]:
        g = ex.reference
        v = int(g) if g.lstrip("-").isdigit() else None
        forms = [g, f"{int(g):,}" if v is not None else g, f"\\${g}", f"{g}.00", f"{g} dollars"]
        if v is not None:
            forms += [str(v + 1), str(v * 10)]
        pairs += [(g, f, True) for f in forms]
    return pairs


def math500_pairs(start: int, n: int, data_dir: str | None) -> list[Pair]:
    examples = Math500Task().load("test", data_dir=data_dir)[start : start + n]
    rng = random.Random(0)
    pairs: list[Pair] = []
    for ex in examples:
        g = ex.reference
        other = rng.choice(examples).reference
        forms = [g.replace(" ", ""), g.replace("\\frac", "\\dfrac"), f"x = {g}" if "=" not in g else g, other]
        try:
            value = float(g)
        except ValueError:
            value = None
        if value is not None:
            forms.append(f"{value:.6f}")
        pairs += [(g, f, False) for f in forms]
    return pairs


def check(a: str, b: str, numeric: bool, fast_path: bool) -> bool:
    return equivalent_answers(a, b, numeric, fast_path)


def run_in_process(pairs: list[Pair], warm: list[Pair], fast_path: bool) -> tuple[float, int]:
    for a, b, numeric in warm:
        check(a, b, numeric, fast_path)
    parse_answer.cache_clear()
    t0 = time.perf_counter()
    for a, b, numeric in pairs:
        check(a, b, numeric, fast_path)
    return time.perf_counter() - t0, 0


def run_pool(pairs: list[Pair], warm: list[Pair], workers: int, fast_path: bool) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    pool = CheckPool(workers=workers, timeout=5.0, initializer=warm_up)
    pool.map(int, range(workers * 4))  # start every worker
    startup = time.perf_counter() - t0
    pool.starmap(check, [(a, b, numeric, fast_path) for a, b, numeric in warm])  # warm SymPy in the workers
    try:
        t1 = time.perf_counter()
        if fast_path:  # the production path of MathTask: plain-number pairs never leave this process
            checks.set_check_pool(pool)
            futures = [checks.submit_equivalent(a, b, numeric=n, timeout=5.0) for a, b, n in pairs]
            out = [f.result() for f in futures]
            checks.set_check_pool(None)
        else:
            out = pool.starmap(check, [(a, b, numeric, False) for a, b, numeric in pairs])
        elapsed = time.perf_counter() - t1
    finally:
        pool.shutdown()
    return elapsed, sum(o.timed_out for o in out), startup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-gsm8k", type=int, default=80, help="GSM8K test problems (7 pairs each)")
    ap.add_argument("--n-math", type=int, default=80, help="MATH-500 problems (4-5 pairs each)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    pairs = gsm8k_pairs(0, args.n_gsm8k, args.data_dir) + math500_pairs(0, args.n_math, args.data_dir)
    warm = gsm8k_pairs(args.n_gsm8k, 20, args.data_dir) + math500_pairs(args.n_math, 20, args.data_dir)
    random.Random(1).shuffle(pairs)
    warm_up()
    n_gsm = sum(p[2] for p in pairs)
    cpus = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{len(pairs)} pairs ({n_gsm} GSM8K, {len(pairs) - n_gsm} MATH-500); CPUs: {cpus}; load average: {load}"
    )
    print(f"{'mode':<12} {'checks':<16} {'seconds':>8} {'checks/s':>9} {'timeouts':>9} {'startup s':>9}")
    for fast_path in (False, True):
        label = "with fast path" if fast_path else "math-verify"
        secs, tmo = run_in_process(pairs, warm, fast_path)
        print(f"{'in-process':<12} {label:<16} {secs:8.2f} {len(pairs) / secs:9.1f} {tmo:9d} {'-':>9}")
        for workers in (1, 2):
            secs, tmo, startup = run_pool(pairs, warm, workers, fast_path)
            print(
                f"{f'pool-{workers}':<12} {label:<16} {secs:8.2f} {len(pairs) / secs:9.1f} {tmo:9d} {startup:9.2f}"
            )


if __name__ == "__main__":
    if "AJ_DATA_DIR" not in os.environ:
        shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
        if shared.is_dir():
            os.environ["AJ_DATA_DIR"] = str(shared)
    main()
