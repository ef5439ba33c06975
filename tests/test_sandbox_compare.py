"""Fast unit tests of the sandbox's host side: comparison, serialization, protocol, API, assert parsing."""

from __future__ import annotations

import ast
import json
import math
import time
from collections import Counter, OrderedDict, namedtuple

import pytest

from autojudge.sandbox import NO_EXPECTED, Limits, Program, TestCase, TestResult, same_output
from autojudge.sandbox.asserts import NotHostValue, host_value, parse_asserts
from autojudge.sandbox.compare import (
    Uncomparable,
    canonical,
    compare_stdio,
    compare_value,
    grade,
    stripped_lines,
)
from autojudge.sandbox.harness import decode, encode
from autojudge.sandbox.protocol import Collector, build_job, hard_timeout, output_cap


# --------------------------------------------------------------------------- stdio (LiveCodeBench rules)
@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        ("3\n", "3", True),
        ("  3  \n\n", "3\n", True),  # the whole output and each line are stripped
        ("1 2\n3 4\n", "1 2\n3 4", True),
        ("1.0\n", "1.00\n", True),  # Decimal equality: same number, other spelling
        ("1e2", "100", True),
        ("0.1 0.2", "0.10 0.20", True),
        ("1.0000001", "1.0", False),  # no epsilon: LiveCodeBench compares Decimals exactly
        ("3\n4\n", "3\n", False),  # line count
        ("Yes", "yes", False),
        ("a b", "a  b", False),  # not numbers: text must match after stripping the line
        ("1  2", "1 2", True),  # numbers: whitespace-split
        ("", "", True),
        ("\n", "", True),
        ("x\n\ny", "x\ny", False),  # inner blank lines count
    ],
)
def test_stdio_lcb_rules(actual, expected, ok):
    assert compare_stdio(actual, expected)[0] is ok


def test_stdio_reasons_and_exact_mode():
    ok, why = compare_stdio("1\n2\n", "1\n3\n")
    assert not ok and "line 2" in why and "'2'" in why and "'3'" in why
    ok, why = compare_stdio("1\n", "1\n2\n")
    assert not ok and "1 output line(s), expected 2" in why
    assert compare_stdio("3\n", "3\n", "exact") == (True, None)
    assert compare_stdio("3", "3\n", "exact")[0] is False
    assert stripped_lines("  a \n b\n\n") == ["a", "b"]


# --------------------------------------------------------------------------- values
class EvilInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class Anything:
    def __eq__(self, other):
        return True


def test_encode_decode_round_trip():
    values = [
        None,
        True,
        0,
        -5,
        2**80,
        -(2**200),
        1.5,
        float("inf"),
        "s",
        b"\x00b",
        bytearray(b"x"),
        1 + 2j,
        [1, [2, (3, 4)]],
        (1,),
        (),
        {1, 2},
        frozenset({"a"}),
        {"k": [1], 2: (3,), (1, 2): None},
    ]
    for v in values:
        assert decode(json.loads(json.dumps(encode(v)))) == v
    nan = decode(encode(float("nan")))
    assert math.isnan(nan)


def test_encode_reads_subclasses_through_the_base_type():
    assert encode(EvilInt(3)) == 3
    Point = namedtuple("Point", "x y")
    assert encode(Point(1, 2)) == {"$tuple": [1, 2]}
    assert encode(OrderedDict(a=1)) == {"$dict": [["a", 1]]}
    assert encode(Counter("aa")) == {"$dict": [["a", 2]]}
    assert encode(Anything()) == {"$opaque": "Anything"}
    deep: list = []
    cur = deep
    for _ in range(300):
        cur.append([])
        cur = cur[0]
    assert "$opaque" in json.dumps(encode(deep))  # depth-limited, no RecursionError


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        (1, 1.0, True),
        (True, 1, True),
        (-0.0, 0, True),
        ([1, 2], [1, 2.0], True),
        ((1, 2), [1, 2], False),  # Python: a tuple is not a list
        ({1, 2}, frozenset({2, 1}), True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({1: "x"}, {1.0: "x"}, True),
        (b"ab", bytearray(b"ab"), True),
        ("ab", b"ab", False),
        (2**100, 2**100, True),
        (2**100, float(2**100), True),
        (2**53 + 1, float(2**53), False),
        (1 + 0j, 1, True),
        (float("nan"), float("nan"), False),  # NaN equals nothing
        ([float("inf")], [float("inf")], True),
        (None, 0, False),
        ("1", 1, False),
    ],
)
def test_value_equality_follows_python(actual, expected, ok):
    assert (actual == expected) is ok or (actual != actual)  # the table is Python's own answer
    assert compare_value(json.loads(json.dumps(encode(actual))), expected)[0] is ok


def test_custom_eq_objects_never_pass():
    for v in (Anything(), [Anything()], {"k": Anything()}):
        ok, why = compare_value(encode(v), 5)
        assert not ok and "not plain data" in why
    ok, _ = compare_value(encode(EvilInt(3)), 5)  # compared as the int it is
    assert not ok
    assert compare_value(encode(EvilInt(5)), 5)[0]


def test_compare_modes():
    assert compare_value(encode((1, 2)), [1, 2], mode="lcb")[0]  # LiveCodeBench: tuple -> list
    assert not compare_value(encode([(1, 2)]), [[1, 2]], mode="lcb")[0]  # only at the top, as LCB does
    assert not compare_value(encode(1), True, mode="strict")[0]
    assert compare_value(encode(True), True, mode="strict")[0]
    assert not compare_value(encode(1.0), 1, mode="strict")[0]
    assert compare_value(encode([0.1 + 0.2, 1]), [0.3, 1], abs_tol=1e-9)[0]
    assert not compare_value(encode([0.1 + 0.2, 1]), [0.3, 1])[0]
    assert compare_value(encode((1.0000001,)), (1.0,), rel_tol=1e-6)[0]
    assert not compare_value(encode([1.1]), [1.0], abs_tol=0.01)[0]
    assert compare_value(encode([1]), None, mode="truthy")[0]
    assert compare_value(encode({}), None, mode="falsy")[0]
    assert not compare_value(encode(Anything()), None, mode="truthy")[0]
    assert compare_value(encode(2**70), None, mode="truthy")[0]


@pytest.mark.parametrize(
    "bad",
    [
        {"$set": 3},
        {"$dict": [[1]]},
        {"$int": "zz"},
        {"$bytes": "!!"},
        {"$float": "big"},
        {"$what": 1},
        {"a": 1, "b": 2},
        {"$complex": [1]},
        {"$opaque": "X"},
    ],
)
def test_malformed_values_from_the_sandbox_are_uncomparable(bad):
    with pytest.raises(Uncomparable):
        canonical(bad)
    assert compare_value(bad, 1)[0] is False


def test_canonical_is_cheap_on_hash_colliding_numbers():
    # equal hashes for every element (multiples of 2**61 - 1): a host-side set would be quadratic
    evil = {"$set": [{"$int": hex(k * (2**61 - 1))} for k in range(1, 20001)]}
    t0 = time.monotonic()
    canonical(evil)
    assert time.monotonic() - t0 < 5


def test_deeply_nested_untrusted_value():
    v: object = 1
    for _ in range(5000):
        v = [v]
    with pytest.raises(Uncomparable):
        canonical(v)


# --------------------------------------------------------------------------- grading
def test_grade_records():
    t = TestCase.stdio("", "3")
    r = grade(t, {"status": "ok", "stdout": "3\n", "stderr": "", "time": 0.01, "exit": 0})
    assert r.passed and r.status == "passed" and r.actual == "3\n" and r.exit_code == 0
    r = grade(t, {"status": "timeout", "stdout": "partial", "error": "timed out after 2 s"})
    assert not r.passed and r.status == "timeout" and "time limit exceeded" in r.reason and r.actual is None
    assert r.stdout == "partial"
    r = grade(t, None, missing_status="timeout", missing_reason="host-side hard timeout")
    assert r.status == "timeout" and r.reason == "host-side hard timeout"
    r = grade(t, {"status": "made-up"})
    assert r.status == "sandbox_error" and not r.passed
    c = TestCase.call("f", [1], 2)
    r = grade(c, {"status": "ok", "value": 2, "stdout": "debug\n"})
    assert r.passed and r.actual == canonical(2) and r.stdout == "debug\n"
    r = grade(c, {"status": "ok"})
    assert r.status == "sandbox_error"
    r = grade(TestCase.call("f", [1]), {"status": "ok", "value": 7})
    assert r.status == "ran" and not r.passed and r.actual == canonical(7)


def test_same_output_for_equivalence():
    a = TestResult(passed=False, status="wrong_answer", actual="1.0\n")
    b = TestResult(passed=False, status="wrong_answer", actual="1.00")
    c = TestResult(passed=False, status="wrong_answer", actual="2")
    assert same_output(a, b) and not same_output(a, c)
    t1 = TestResult(passed=False, status="timeout")
    t2 = TestResult(passed=False, status="timeout")
    assert same_output(t1, t2) and not same_output(t1, a)
    v1 = TestResult(passed=False, status="wrong_answer", actual=canonical(encode({1, 2})))
    v2 = TestResult(passed=False, status="wrong_answer", actual=canonical(encode(frozenset({2, 1}))))
    assert same_output(v1, v2, "call")


# --------------------------------------------------------------------------- protocol and API
def test_job_carries_no_expected_output():
    secret = "EXPECTED-OUTPUT-0123456789"
    p = Program(
        "print(1)",
        [
            TestCase.stdio("in", secret),
            TestCase.call("f", [1, (2, 3)], secret),
            TestCase.expr("f(1)", {secret: 1}),
        ],
    )
    job = build_job(p, Limits(), "tok", kill_all=True, wipe=["/tmp"], workdir="/tmp", nproc=64)
    assert secret.encode() not in job and job.endswith(b"\n") and job.count(b"\n") == 1
    decoded = json.loads(job)
    assert decode(decoded["tests"][1]["args"]) == [1, (2, 3)]
    assert hard_timeout(p, Limits(timeout=2)) > 6 and output_cap(p, Limits()) > 3 * (1 << 20)


def test_collector_ignores_strangers_and_rejects_forgeries():
    c = Collector("tok", 2, 10_000)
    assert c.feed(b'noise\nothertoken {"i": 0}\ntok {"i": 0, "status": "ok"}\ntok {"i"')
    assert c.feed(b': 1}\ntok {"done": 2}\n') and c.complete
    dup = Collector("tok", 2, 10_000)
    assert not dup.feed(b'tok {"i": 0}\ntok {"i": 0}\n') and "test 0" in dup.problem
    bad = Collector("tok", 1, 10_000)
    assert not bad.feed(b"tok not json\n")
    late = Collector("tok", 1, 10_000)
    assert not late.feed(b'tok {"i": 0}\ntok {"done": 1}\ntok {"i": 0}\n')
    big = Collector("tok", 1, 100)
    assert not big.feed(b"x" * 101) and "more than 100 bytes" in big.problem


def test_testcase_validation():
    with pytest.raises(ValueError):
        TestCase("nope")
    with pytest.raises(TypeError):
        TestCase.stdio("x", 3)
    with pytest.raises(TypeError, match="plain data"):
        TestCase.call("f", [Anything()])
    with pytest.raises(TypeError, match="plain data"):
        TestCase.expr("f()", Anything())
    with pytest.raises(ValueError):
        TestCase.call("", [])
    with pytest.raises(ValueError):
        TestCase.expr("f()", 1, compare="fuzzy")
    with pytest.raises(ValueError):
        Limits(timeout=0)
    assert TestCase.call("f", [1]).expected is NO_EXPECTED and not NO_EXPECTED
    with pytest.raises(TypeError):
        Program("x", ["not a test"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- HumanEval / MBPP asserts
HUMANEVAL_TEST = """
METADATA = {"author": "jt"}

def check(candidate):
    import math
    assert candidate([1, 2], 3) == True, "message"
    assert 5 == candidate([0], 1)
    assert candidate([]) is None
    assert abs(candidate([1.0], 2) - 0.5) < 1e-6
    assert math.isclose(candidate([1], 1), 2.5, rel_tol=1e-3)
    assert candidate([3])
    assert not candidate([4])
    assert candidate([1]) == set([1, 2])
    assert candidate([1]) == -(2 ** 3)
    assert True, "This prints if this assert fails"
    assert candidate([1]) != 3
    assert candidate([1]) == candidate([2])
    assert candidate([1]) == helper(3)
    for x in range(3):
        assert candidate([x]) == x
"""


def test_parse_humaneval_asserts():
    s = parse_asserts(HUMANEVAL_TEST, "add")
    got = [(t.expression, t.expected, t.compare, t.rel_tol, t.abs_tol) for t in s.tests]
    assert got == [
        ("candidate([1, 2], 3)", True, "python", 0.0, 0.0),
        ("candidate([0], 1)", 5, "python", 0.0, 0.0),
        ("candidate([])", None, "strict", 0.0, 0.0),
        ("candidate([1.0], 2)", 0.5, "python", 0.0, 1e-6),
        ("candidate([1], 1)", 2.5, "python", 1e-3, 0.0),
        ("candidate([3])", True, "truthy", 0.0, 0.0),
        ("candidate([4])", True, "falsy", 0.0, 0.0),
        ("candidate([1])", {1, 2}, "python", 0.0, 0.0),
        ("candidate([1])", -8, "python", 0.0, 0.0),
    ]
    assert s.ignored == 1
    assert len(s.unsupported) == 4 and any(u.startswith("for x in range(3)") for u in s.unsupported)
    assert "import math" in s.setup and "candidate = add" in s.setup


def test_parse_mbpp_asserts_finds_the_entry_point():
    s = parse_asserts(
        [
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2),(5, 4)) == ()",
        ]
    )
    assert [(t.expression, t.expected) for t in s.tests] == [
        ("similar_elements((3, 4, 5, 6), (5, 7, 4, 10))", (4, 5)),
        ("similar_elements((1, 2), (5, 4))", ()),
    ]
    assert s.setup == "" and not s.unsupported


@pytest.mark.parametrize(
    ("src", "value"),
    [
        ("[1, (2, 3), {4}]", [1, (2, 3), {4}]),
        ("float('inf')", math.inf),
        ("-1.5e3", -1500.0),
        ("2 ** 10", 1024),
        ("'ab' * 3", "ababab"),
        ("sorted([3, 1])", [1, 3]),
        ("math.pi", math.pi),
        ("{'a': (1,)}", {"a": (1,)}),
        ("frozenset()", frozenset()),
    ],
)
def test_host_value(src, value):
    assert host_value(ast.parse(src, mode="eval").body) == value


@pytest.mark.parametrize(
    "src",
    [
        "x",
        "f(1)",
        "open('/etc/passwd')",
        "2 ** 10 ** 9",
        "'a' * 10 ** 9",
        "[].append(1)",
        "__import__('os')",
        "'%s' % 1",
        "range(10 ** 12)",
    ],
)
def test_host_value_refuses_code(src):
    with pytest.raises(NotHostValue):
        host_value(ast.parse(src, mode="eval").body)
