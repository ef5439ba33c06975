"""Code tasks through the sandbox: correctness of reference solutions, the equivalence rule, batching.

Programs run on the default backend (``AJ_CODE_SANDBOX``, else ``auto``: Docker when its daemon
and image are there, else bubblewrap), as the tasks do; one test runs on bubblewrap explicitly.
These tests FAIL, never skip, when no sandbox is usable (``aj sandbox check`` says why).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from autojudge.core.compare import sandboxed as runner
from autojudge.core.compare.program_results import compare_results, same_program
from autojudge.core.task import Example
from autojudge.plugins.code.humaneval import HumanEvalTask
from autojudge.plugins.code.livecodebench import LiveCodeBenchTask
from autojudge.plugins.code.mbpp import MBPPTask
from autojudge.sandbox import ProgramResult, TestCase, TestResult

LCB_DIR = Path(__file__).parent / "data" / "code" / "livecodebench"
SOLUTIONS = json.loads((LCB_DIR / "solutions.json").read_text())


@pytest.fixture(scope="module")
def lcb():
    task = LiveCodeBenchTask(path=LCB_DIR / "test.jsonl")
    return task, {e.reference["question_id"]: e for e in task.load("test")}


@pytest.fixture(autouse=True)
def fresh_cache():
    runner.cache_clear()
    yield
    runner.cache_clear()


class CountingBox:
    """Wraps the shared sandbox and records every batch it is given."""

    def __init__(self, box):
        self.box, self.batches = box, []
        self.lock = threading.Lock()

    def run_many(self, programs, **kw):
        programs = list(programs)
        with self.lock:
            self.batches.append([p.code for p in programs])
        return self.box.run_many(programs, **kw)


@pytest.fixture
def counting(monkeypatch):
    box = CountingBox(runner.get_code_sandbox())
    monkeypatch.setattr(runner, "get_code_sandbox", lambda backend=None: box)
    return box


# -- correctness -----------------------------------------------------------------------------------


def test_humaneval_canonical_solutions_pass_and_broken_ones_fail():
    task = HumanEvalTask()
    exs = task.load("test", limit=10)
    good = task.correct_outcomes([(task.canonical_program(e), e) for e in exs])
    assert [o.value for o in good] == [True] * 10 and all(o.ok for o in good)
    broken = [e.question + "    return None\n" for e in exs[:3]]
    assert [o.value for o in task.correct_outcomes(list(zip(broken, exs[:3], strict=True)))] == [False] * 3
    # the model's code alone (the prompt's imports and stub run before it) also passes
    body_only = (
        "from typing import List\n\ndef has_close_elements(numbers, threshold):\n"
        + exs[0].meta["canonical_solution"]
    )
    assert task.is_correct(body_only, exs[0])
    assert not task.is_correct("def unrelated():\n    pass\n", exs[0])  # the prompt's stub returns None


def test_humaneval_problem_with_unconverted_asserts_is_judged():
    task = HumanEvalTask()
    ex = next(e for e in task.load("test") if e.id == "humaneval-32")
    assert task.is_correct(task.canonical_program(ex), ex)
    assert not task.is_correct(ex.question + "    return 0.123\n", ex)


def test_mbpp_reference_code_passes():
    task = MBPPTask()
    exs = task.load("test", limit=10)
    assert [o.value for o in task.correct_outcomes([(e.meta["code"], e) for e in exs])] == [True] * 10
    assert not task.is_correct("def remove_Occ(s, ch):\n    return s\n", exs[0])


def test_lcb_fixture_solutions_pass_stdin_and_functional(lcb):
    task, ex = lcb
    items = [(SOLUTIONS[q], ex[q]) for q in ("abc900_a", "abc900_c", "3001", "3002")]
    assert [o.value for o in task.correct_outcomes(items)] == [True] * 4
    # right on the public tests, wrong on a private one (it overflows nothing, just caps)
    capped = "a, b = map(int, input().split())\nprint(min(a + b, 10**6))\n"
    assert not task.is_correct(capped, ex["abc900_a"])
    res = task.run([(capped, ex["abc900_a"])])[0]
    assert [r.passed for r in res.results] == [True, True, False, True, True]
    assert task.is_correct(
        "class Solution:\n    def twoSum(self, nums, target):\n        return (0, 1) if nums[0] + nums[1] == target else"
        " next((i, j) for i in range(len(nums)) for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target)\n",
        ex["3001"],
    )  # a tuple counts as a list (LiveCodeBench's rule)
    assert not task.is_correct(None, ex["3001"]) and not task.is_correct("", ex["3001"])


def test_bubblewrap_backend_judges_the_same(lcb):
    task, ex = lcb
    bw = LiveCodeBenchTask(path=LCB_DIR / "test.jsonl", sandbox="bwrap")
    assert bw.is_correct(SOLUTIONS["abc900_a"], ex["abc900_a"])
    assert not bw.is_correct("print(0)\n", ex["abc900_a"])
    assert ("bwrap", runner.configured_workers()) in runner._boxes


# -- the equivalence rule, on real runs ------------------------------------------------------------------


def test_equivalence_rule_on_stdin_programs(lcb):
    task, ex = lcb
    p = ex["abc900_a"]
    right = SOLUTIONS["abc900_a"]
    right2 = "import sys\nx, y = sys.stdin.read().split()\nprint(int(x) + int(y))\n"
    wrong_a = "print(-1)\n"  # fails every test (answers 8, 0, 2000000000, 0, -2)
    wrong_b = "import sys\nsys.stdout.write(str(-1) + '\\n')\n"  # the same wrong output, other code
    wrong_c = "print(-7)\n"  # fails every test too, with another output
    loop_a, loop_b = "while True:\n    pass\n", "import time\nwhile True:\n    time.sleep(0.01)\n"
    crash = "raise SystemExit(3)\n"
    items = [
        (right, right2, p),
        (wrong_a, wrong_b, p),
        (wrong_a, wrong_c, p),
        (loop_a, loop_b, p),
        (loop_a, wrong_a, p),
        (right, wrong_a, p),
        (crash, wrong_a, p),
    ]
    out = task.equivalent_outcomes(items)
    assert [o.value for o in out] == [True, True, False, True, False, False, False]
    assert all(o.ok for o in out)  # program timeouts are outcomes, not failed checks
    # beyond the reference: wrong_a and wrong_c have the same (all-fail) pass vector, yet differ
    ra, rc = task.run([(wrong_a, p), (wrong_c, p)])
    assert [r.passed for r in ra.results] == [r.passed for r in rc.results] == [False] * 5


def test_equivalence_rule_on_functional_programs(lcb):
    task, ex = lcb
    p = ex["3002"]
    a = "class Solution:\n    def countVowels(self, s):\n        return 0\n"
    b = "class Solution:\n    def countVowels(self, s):\n        return len(s) * 0\n"
    c = "class Solution:\n    def countVowels(self, s):\n        return len(s)\n"
    d = "class Solution:\n    def countVowels(self, s):\n        raise ValueError(s)\n"
    e = "class Solution:\n    def countVowels(self, s):\n        return [][1]\n"
    out = task.equivalent_outcomes([(a, b, p), (a, c, p), (d, e, p), (SOLUTIONS["3002"], a, p)])
    # a == b: same values (right on "xyz", wrong elsewhere); d, e: both runtime errors on every test
    assert [o.value for o in out] == [True, False, True, False]


def test_identical_and_reformatted_code_need_no_run(lcb, counting):
    task, ex = lcb
    code = SOLUTIONS["abc900_a"]
    reformatted = "# sum\na,b = map(int, input().split())   # read\n\nprint(a+b)\n"
    assert same_program(code, reformatted) and not same_program(code, code.replace("+", "-"))
    out = task.equivalent_outcomes([(code, code, ex["abc900_a"]), (code, reformatted, ex["abc900_a"])])
    assert [o.value for o in out] == [True, True] and counting.batches == []
    assert (
        task.equivalent_outcomes([(None, None, ex["abc900_a"]), (code, None, ex["abc900_a"])])[0].value
        is False
    )


def test_a_batch_runs_concurrently_and_the_target_program_once(lcb, counting):
    task, ex = lcb
    p = ex["abc900_a"]
    target = SOLUTIONS["abc900_a"]
    alts = [
        "print(0)\n",
        "a, b = map(int, input().split())\nprint(a - b)\n",
        "print(8)\n",
        "a, b = map(int, input().split())\nprint(b + a)\n",
    ]
    out = task.equivalent_outcomes([(target, alt, p) for alt in alts])
    assert [o.value for o in out] == [False, False, False, True]
    assert len(counting.batches) == 1 and sorted(counting.batches[0]) == sorted(
        {target, *alts}
    )  # one batch, no duplicate
    assert task.is_correct(target, p) and not task.is_correct(alts[0], p)
    assert len(counting.batches) == 1  # both answered from the cache
    info = runner.cache_info()
    assert info["hits"] == 2 and info["misses"] == 5


# -- the rule on synthetic results (statuses the real sandbox rarely gives) ------------------------------


def tr(status: str, actual: str | None = None) -> TestResult:
    return TestResult(passed=status == "passed", status=status, actual=actual)


def pr(*results: TestResult, error: str | None = None) -> ProgramResult:
    return ProgramResult(list(results), backend="fake", error=error)


STDIO = [TestCase.stdio("1", "1"), TestCase.stdio("2", "2")]
VALUE = [TestCase.expr("f(1)", 1), TestCase.expr("f(2)", 2)]


@pytest.mark.parametrize(
    ("a", "b", "tests", "equivalent"),
    [
        (pr(tr("passed", "1"), tr("passed", "2")), pr(tr("passed", "1 "), tr("passed", "2")), STDIO, True),
        (
            pr(tr("passed", "1"), tr("wrong_answer", "3")),
            pr(tr("passed", "1"), tr("wrong_answer", "3.0")),
            STDIO,
            True,
        ),
        (
            pr(tr("passed", "1"), tr("wrong_answer", "3")),
            pr(tr("passed", "1"), tr("wrong_answer", "4")),
            STDIO,
            False,
        ),
        (
            pr(tr("passed", "1"), tr("wrong_answer", "3")),
            pr(tr("wrong_answer", "0"), tr("wrong_answer", "3")),
            STDIO,
            False,
        ),
        (pr(tr("timeout"), tr("skipped")), pr(tr("timeout"), tr("skipped")), STDIO, True),
        (pr(tr("timeout"), tr("skipped")), pr(tr("runtime_error"), tr("runtime_error")), STDIO, False),
        (
            pr(tr("wrong_answer", "[1]"), tr("runtime_error")),
            pr(tr("wrong_answer", "[1]"), tr("runtime_error")),
            VALUE,
            True,
        ),
        (
            pr(tr("wrong_answer", "[1]"), tr("runtime_error")),
            pr(tr("wrong_answer", "[2]"), tr("runtime_error")),
            VALUE,
            False,
        ),
        (
            pr(tr("runtime_error"), tr("runtime_error")),
            pr(tr("compile_error"), tr("compile_error")),
            VALUE,
            False,
        ),
    ],
)
def test_equivalence_rule_cases(a, b, tests, equivalent):
    v = compare_results(a, b, tests)
    assert v.equivalent is equivalent and v.error is None
    assert compare_results(b, a, tests).equivalent is equivalent  # symmetric


def test_sandbox_errors_are_never_equivalent():
    same = pr(tr("sandbox_error"), tr("sandbox_error"))
    v = compare_results(same, same, STDIO)
    assert not v.equivalent and v.error and "sandbox error" in v.error
    v = compare_results(
        pr(tr("passed", "1"), tr("passed", "2"), error="container died"),
        pr(tr("passed", "1"), tr("passed", "2")),
        STDIO,
    )
    assert not v.equivalent and "container died" in v.error


def test_a_sandbox_failure_is_retried_once_flagged_and_not_cached(monkeypatch, caplog):
    calls = []

    class BrokenBox:
        def run_many(self, programs, **kw):
            programs = list(programs)
            calls.append(len(programs))
            return [pr(*[tr("sandbox_error") for _ in p.tests], error="no container") for p in programs]

    monkeypatch.setattr(runner, "get_code_sandbox", lambda backend=None: BrokenBox())
    task = MBPPTask()
    ex = Example("mbpp-x", "q", {"task_id": 0, "test_list": ["assert f(1) == 1"], "test_setup_code": ""})
    out = task.equivalent_outcomes([("def f(x):\n    return x\n", "def f(x):\n    return 1\n", ex)])
    assert out[0].value is False and not out[0].ok and "no container" in out[0].error
    assert calls == [2, 2]  # the batch, then one retry
    assert "NOT equivalent" in caplog.text
    c = task.correct_outcomes([("def f(x):\n    return x\n", ex)])[0]
    assert c.value is False and "sandbox error" in c.error and runner.cache_info()["size"] == 0
