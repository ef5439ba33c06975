"""What the harness does with programs and tests, on every backend.

The unsafe-local backend runs the same harness without isolation, so these semantics are
checked quickly there and again inside Docker and bubblewrap (``integration``). The Docker
runs FAIL, never skip, when no daemon is reachable (``-k "not docker"`` deselects them).
"""

from __future__ import annotations

import warnings

import pytest

from autojudge.sandbox import LCB_PRELUDE, Limits, Program, TestCase, get_sandbox

BACKENDS = [
    "unsafe-local",
    pytest.param("bwrap", marks=pytest.mark.integration),
    pytest.param("docker", marks=pytest.mark.integration),
]
LIMITS = Limits(timeout=3, memory_mb=256)


@pytest.fixture(scope="module", params=BACKENDS)
def box(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opts = {"quiet": True} if request.param == "unsafe-local" else {}
        sb = get_sandbox(request.param, workers=2, limits=LIMITS, **opts)
    yield sb
    sb.close()


def statuses(res):
    return [r.status for r in res.results]


def test_stdio_program(box):
    code = "import sys\nn = int(input())\nxs = list(map(int, sys.stdin.readline().split()))\nprint(sum(xs[:n]))\n"
    res = box.run(
        Program(
            code,
            [
                TestCase.stdio("2\n1 2 3\n", "3"),
                TestCase.stdio("3\n1 2 3\n", "5"),
                TestCase.stdio("x\n", "0"),
            ],
        )
    )
    assert statuses(res) == ["passed", "wrong_answer", "runtime_error"]
    assert res.results[1].actual == "6\n" and "line 1" in res.results[1].reason
    assert "ValueError" in res.results[2].reason or "IndexError" in res.results[2].reason
    assert "main.py" in res.results[2].reason and "_child" not in res.results[2].reason
    assert res.results[0].time_s is not None and res.results[0].exit_code == 0
    assert not res.passed and res.n_passed == 1 and res.backend == box.name


def test_main_guard_exit_codes_and_stderr(box):
    code = (
        "import sys\n"
        "def main():\n    print('hi')\n    print('warn', file=sys.stderr)\n    sys.exit(int(input()))\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    res = box.run(Program(code, [TestCase.stdio("0", "hi"), TestCase.stdio("3", "hi")]))
    assert statuses(res) == ["passed", "passed"]  # LiveCodeBench ignores SystemExit
    assert res.results[1].exit_code == 3 and "warn" in res.results[1].stderr


def test_big_input_and_unicode(box):
    n = 200_000
    data = "\n".join(str(i) for i in range(n)) + "\n"
    code = "import sys\nprint(sum(map(int, sys.stdin.read().split())), 'é✓')\n"
    res = box.run(Program(code, [TestCase.stdio(data, f"{n * (n - 1) // 2} é✓")]))
    assert res.passed, res.results[0].reason


def test_call_tests_lcb_style(box):
    code = "class Solution:\n    def twoSum(self, nums, target):\n        return (0, 1) if nums else ()\n"
    tests = [
        TestCase.call("twoSum", [[2, 7], 9], [0, 1], compare="lcb"),
        TestCase.call("twoSum", [[], 9], [], compare="lcb"),
        TestCase.call("twoSum", [[2, 7], 9], [0, 1]),  # python rule: a tuple is not a list
        TestCase.call("missing", [], 1),
    ]
    res = box.run(Program(code, tests, prelude=LCB_PRELUDE))
    assert statuses(res) == ["passed", "passed", "wrong_answer", "runtime_error"]
    assert "missing" in res.results[3].reason


def test_call_and_expr_values(box):
    code = (
        "import math\n"
        "def f(x, *, scale=1):\n    return {'x': x * scale, 't': (x, [x]), 's': {x}}\n"
        "def g(x):\n    return math.sqrt(x)\n"
        "def big():\n    return 3 ** 5000\n"
    )
    tests = [
        TestCase.call("f", [2], {"x": 2, "t": (2, [2]), "s": {2}}),
        TestCase.call("f", [2], {"x": 6, "t": (2, [2]), "s": {2}}, kwargs={"scale": 3}),
        TestCase.call("g", [2], 1.41421356, abs_tol=1e-6),
        TestCase.expr("candidate(9) + 1", 4.0),
        TestCase.expr("big()", 3**5000),
        TestCase.expr("f(", 1),
        TestCase.call("f", [1]),
    ]
    res = box.run(Program(code, tests, setup="candidate = g\n"))
    assert statuses(res) == ["passed", "passed", "passed", "passed", "passed", "compile_error", "ran"]
    assert res.results[6].value == {"$dict": [["x", 1], ["t", {"$tuple": [1, [1]]}], ["s", {"$set": [1]}]]}


def test_compile_error_and_prints_in_call_tests(box):
    res = box.run(Program("def f(:\n  pass", [TestCase.call("f", [], 1)]))
    assert statuses(res) == ["compile_error"] and "SyntaxError" in res.results[0].reason
    res = box.run(Program("def f():\n    print('debug')\n    return 1\n", [TestCase.call("f", [], 1)]))
    assert res.passed and res.results[0].stdout == "debug\n"


def test_custom_eq_cannot_pass(box):
    code = (
        "class Anything:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n        return False\n"
        "class EvilInt(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
        "class EvilStr(str):\n    def __eq__(self, o):\n        return True\n    __hash__ = str.__hash__\n"
        "def f():\n    return Anything()\n"
        "def g():\n    return EvilInt(3)\n"
        "def h():\n    return [EvilStr('no')]\n"
    )
    tests = [
        TestCase.call("f", [], 5),
        TestCase.call("g", [], 5),
        TestCase.call("h", [], ["yes"]),
        TestCase.expr("candidate()", 5),
        TestCase.call("f", [], True, compare="truthy"),
    ]
    res = box.run(Program(code, tests, setup="candidate = f"))
    assert statuses(res) == ["wrong_answer"] * 5
    assert "not plain data" in res.results[0].reason and "got '3'" in res.results[1].reason


def test_skip_after_timeout_and_run_all(box):
    code = "import time\nif input() == 'slow':\n    time.sleep(60)\nprint('ok')\n"
    tests = [
        TestCase.stdio("fast", "ok"),
        TestCase.stdio("slow", "ok", timeout=1),
        TestCase.stdio("fast", "ok"),
    ]
    res = box.run(Program(code, tests))
    assert statuses(res) == ["passed", "timeout", "skipped"]
    assert "1 s" in res.results[1].reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box_all = get_sandbox(
            box.name,
            workers=1,
            limits=Limits(timeout=3, stop_after_timeouts=None),
            **({"quiet": True} if box.name == "unsafe-local" else {}),
        )
    try:
        res = box_all.run(Program(code, tests))
        assert statuses(res) == ["passed", "timeout", "passed"]
    finally:
        box_all.close()


def test_run_many_keeps_order(box):
    programs = [
        Program(f"print({i} * int(input()))", [TestCase.stdio("2", str(2 * i))], id=str(i)) for i in range(12)
    ]
    seen = []
    res = box.run_many(programs, progress=lambda done, total: seen.append((done, total)))
    assert [r.id for r in res] == [str(i) for i in range(12)] and all(r.passed for r in res)
    assert seen[-1] == (12, 12)
    assert box.run_many([]) == []
    empty = box.run(Program("print(1)", []))
    assert empty.results == [] and not empty.passed
