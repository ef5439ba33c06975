"""Host-side comparison of a program's outputs with expected outputs.

Nothing here runs program code. Stdout is compared as text; return values arrive as tagged
JSON (:mod:`.harness`) and are compared as plain data through a *canonical form*: a JSON
string that is equal for two values exactly when Python's ``==`` between the plain built-in
values would be true (``1 == 1.0 == True``, ``-0.0 == 0``, sets and dict items unordered,
``set == frozenset``, ``bytes == bytearray``, a tuple is not a list, NaN equals nothing). The
canonical form is built without hashing anything the program chose (no hash-flooding of the
host) and with bounded depth; values the program could not serialize (``$opaque``) or that
are malformed are "uncomparable" and never equal anything.

Stdio comparison follows LiveCodeBench's ``grade_stdio``: strip the whole output, split
into lines, strip each line; same number of lines; each line equal as text, or else equal as
whitespace-separated ``Decimal`` numbers (``1.0`` matches ``1.00``; there is no epsilon).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any

from autojudge.sandbox.api import NO_EXPECTED, TestCase, TestResult
from autojudge.sandbox.harness import MAX_DEPTH, encode

_CMP_DEPTH = MAX_DEPTH + 5
_SHOW = 120


class Uncomparable(ValueError):
    """A value that cannot equal anything (opaque object, NaN inside, malformed data)."""


def _short(s: str, n: int = _SHOW) -> str:
    s = s if len(s) <= n else s[: n // 2] + "..." + s[-n // 2 :]
    return repr(s)


# --------------------------------------------------------------------------- stdio
def stripped_lines(text: str) -> list[str]:
    """LiveCodeBench's ``get_stripped_lines``."""
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None


def compare_stdio(actual: str, expected: str, mode: str = "lcb") -> tuple[bool, str | None]:
    """Whether stdout ``actual`` matches ``expected``; the reason when it does not."""
    if mode == "exact":
        if actual == expected:
            return True, None
        return False, f"output differs from the expected output (exact comparison): got {_short(actual)}"
    got, want = stripped_lines(actual), stripped_lines(expected)
    if len(got) != len(want):
        return False, f"wrong answer: {len(got)} output line(s), expected {len(want)}"
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a == b:
            continue
        da, db = _decimals(a), _decimals(b)
        if da is None or db is None or da != db:
            return False, f"wrong answer at line {i + 1}: got {_short(a)}, expected {_short(b)}"
    return True, None


# --------------------------------------------------------------------------- values
def _payload(v: Any, tag: str) -> Any:
    if type(v) is dict and len(v) == 1 and tag in v:
        return v[tag]
    return None


def _tag(v: Any) -> str | None:
    if type(v) is dict and len(v) == 1:
        (k,) = v
        return k
    return None


def _check_list(x: Any) -> list:
    if type(x) is not list:
        raise Uncomparable("malformed value")
    return x


def _float_of(tagged: Any) -> float:
    if type(tagged) is float:
        return tagged
    if type(tagged) is int:
        return float(tagged)
    p = _payload(tagged, "$float")
    if p in ("nan", "inf", "-inf"):
        return float(p)
    raise Uncomparable("malformed float")


def _num_canon(x: float | int, strict: bool) -> list:
    if isinstance(x, float):
        if x != x:
            raise Uncomparable("NaN never equals anything")
        if math.isinf(x):
            return ["f", "inf" if x > 0 else "-inf"]
        if x.is_integer() and not strict:
            return ["i", hex(int(x))]
        return ["f", x.hex()]
    return ["i", hex(x)]


def _dumps(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


def _canon(v: Any, depth: int, strict: bool) -> Any:
    if depth > _CMP_DEPTH:
        raise Uncomparable("value nested too deep")
    d = depth + 1
    t = type(v)
    if v is None:
        return ["n"]
    if t is bool:
        return ["B", int(v)] if strict else ["i", hex(int(v))]
    if t is int:
        return _num_canon(v, strict)
    if t is float:
        return _num_canon(v, strict)
    if t is str:
        return ["s", v]
    if t is list:
        return ["l", [_canon(x, d, strict) for x in v]]
    tag = _tag(v)
    if tag is None:
        raise Uncomparable("malformed value")
    p = v[tag]
    if tag == "$tuple":
        return ["t", [_canon(x, d, strict) for x in _check_list(p)]]
    if tag in ("$set", "$frozenset"):
        items = sorted({_dumps(_canon(x, d, strict)) for x in _check_list(p)})
        return ["S" if not strict else tag, items]
    if tag == "$dict":
        pairs = {}
        for kv in _check_list(p):
            if type(kv) is not list or len(kv) != 2:
                raise Uncomparable("malformed dict")
            pairs[_dumps(_canon(kv[0], d, strict))] = _canon(kv[1], d, strict)
        return ["d", sorted([k, val] for k, val in pairs.items())]
    if tag == "$int":
        if type(p) is not str:
            raise Uncomparable("malformed int")
        try:
            return _num_canon(int(p, 16), strict)
        except ValueError:
            raise Uncomparable("malformed int") from None
    if tag == "$float":
        return _num_canon(_float_of(v), strict)
    if tag in ("$bytes", "$bytearray"):
        if type(p) is not str:
            raise Uncomparable("malformed bytes")
        try:
            raw = base64.b64decode(p, validate=True)
        except (binascii.Error, ValueError):
            raise Uncomparable("malformed bytes") from None
        return ["b" if not strict else tag, base64.b64encode(raw).decode()]
    if tag == "$complex":
        pl = _check_list(p)
        if len(pl) != 2:
            raise Uncomparable("malformed complex")
        re_, im = _float_of(pl[0]), _float_of(pl[1])
        if im == 0 and not strict:
            return _num_canon(re_, strict)
        return ["c", _num_canon(re_, strict), _num_canon(im, strict)]
    if tag == "$opaque":
        raise Uncomparable(f"returned an object of type {str(p)[:80]}, which is not plain data")
    raise Uncomparable("malformed value")


def canonical(tagged: Any, *, strict: bool = False) -> str:
    """The canonical JSON of a tagged value; raises :class:`Uncomparable`."""
    try:
        return _dumps(_canon(tagged, 0, strict))
    except RecursionError:
        raise Uncomparable("value nested too deep") from None


def canonical_or_none(tagged: Any) -> str | None:
    try:
        return canonical(tagged)
    except Uncomparable:
        return None


def _truth(v: Any) -> bool:
    t = type(v)
    if v is None:
        return False
    if t in (bool, int, float, str, list):
        return bool(v)
    tag = _tag(v)
    if tag in ("$tuple", "$set", "$frozenset", "$dict"):
        return bool(_check_list(v[tag]))
    if tag == "$int":
        canonical(v)
        return int(v[tag], 16) != 0
    if tag == "$float":
        return True  # nan and infinities are true
    if tag in ("$bytes", "$bytearray"):
        return bool(v[tag])
    if tag == "$complex":
        pl = _check_list(v[tag])
        return _float_of(pl[0]) != 0 or _float_of(pl[1]) != 0
    canonical(v)  # raises for opaque / malformed
    raise Uncomparable("malformed value")


def _close(a: Any, b: Any, rel: float, abs_: float, depth: int) -> bool:
    """Tolerant equality: numbers with math.isclose, lists/tuples elementwise, the rest exactly."""
    if depth > _CMP_DEPTH:
        raise Uncomparable("value nested too deep")
    num = (int, float)
    a_num = type(a) in num or _tag(a) in ("$float", "$int")
    b_num = type(b) in num or _tag(b) in ("$float", "$int")
    if a_num and b_num and type(a) is not bool and type(b) is not bool:
        fa = _float_of(a) if _tag(a) != "$int" else float(int(a["$int"], 16))
        fb = _float_of(b) if _tag(b) != "$int" else float(int(b["$int"], 16))
        return math.isclose(fa, fb, rel_tol=rel, abs_tol=abs_)
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(_close(x, y, rel, abs_, depth + 1) for x, y in zip(a, b, strict=True))
    if _tag(a) == "$tuple" and _tag(b) == "$tuple":
        la, lb = _check_list(a["$tuple"]), _check_list(b["$tuple"])
        return len(la) == len(lb) and all(
            _close(x, y, rel, abs_, depth + 1) for x, y in zip(la, lb, strict=True)
        )
    return canonical(a) == canonical(b)


def compare_value(
    actual: Any, expected: Any, *, mode: str = "python", rel_tol: float = 0.0, abs_tol: float = 0.0
) -> tuple[bool, str | None]:
    """Compare a tagged returned value with a plain host value ``expected``."""
    try:
        if mode in ("truthy", "falsy"):
            truth = _truth(actual)
            if truth == (mode == "truthy"):
                return True, None
            return False, f"wrong answer: the value is {'true' if truth else 'false'}, expected {mode}"
        if mode == "lcb" and _tag(actual) == "$tuple":
            actual = _check_list(actual["$tuple"])
        want = encode(expected)
        if rel_tol or abs_tol:
            ok = _close(actual, want, rel_tol, abs_tol, 0)
        else:
            strict = mode == "strict"
            ok = canonical(actual, strict=strict) == canonical(want, strict=strict)
    except Uncomparable as e:
        return False, f"wrong answer: {e}"
    if ok:
        return True, None
    return False, f"wrong answer: got {_short(show_value(actual))}, expected {_short(repr(expected))}"


def show_value(tagged: Any) -> str:
    """A short human-readable rendering of a tagged value (for reasons and reports)."""
    try:
        return json.dumps(tagged, ensure_ascii=False)[:1000]
    except (TypeError, ValueError, RecursionError):
        return "<unprintable>"


# --------------------------------------------------------------------------- grading
_STATUS_REASON = {
    "timeout": "time limit exceeded",
    "memory_limit": "memory limit exceeded",
    "output_limit": "output limit exceeded",
    "skipped": "skipped",
}


def grade(
    test: TestCase,
    rec: dict | None,
    *,
    missing_status: str = "sandbox_error",
    missing_reason: str = "no result from the sandbox",
) -> TestResult:
    """Turn the harness's record for one test into a :class:`TestResult`."""
    if rec is None:
        return TestResult(passed=False, status=missing_status, reason=missing_reason)

    def text(key: str) -> str:
        v = rec.get(key)
        return v if isinstance(v, str) else ""

    def num(key: str, kind: type) -> Any:
        v = rec.get(key)
        return v if type(v) is kind or (kind is float and type(v) is int) else None

    status = rec.get("status")
    stdout = text("stdout")
    res = TestResult(
        passed=False,
        status="sandbox_error",
        stdout=stdout,
        stderr=text("stderr"),
        time_s=num("time", float),
        exit_code=num("exit", int),
        signal=num("signal", int),
    )
    if test.kind == "stdio":
        res.actual = stdout
    elif "value" in rec:
        res.value = rec["value"]
        res.actual = canonical_or_none(rec["value"])
    if status != "ok":
        res.status = (
            status
            if status in _STATUS_REASON or status in ("runtime_error", "compile_error", "sandbox_error")
            else "sandbox_error"
        )
        err = text("error")
        base = _STATUS_REASON.get(res.status, res.status.replace("_", " "))
        res.reason = err if err.startswith(base) else f"{base}: {err}" if err else base
        res.actual = None  # partial output of a failed run is in .stdout, not a comparable output
        return res
    if test.kind != "stdio" and "value" not in rec:
        res.status, res.reason = "sandbox_error", "the sandbox returned no value"
        return res
    if not test.has_expected:
        res.status, res.passed = "ran", False
        return res
    if test.kind == "stdio":
        ok, why = compare_stdio(stdout, test.expected, test.compare)
    else:
        ok, why = compare_value(
            rec["value"], test.expected, mode=test.compare, rel_tol=test.rel_tol, abs_tol=test.abs_tol
        )
    res.passed = ok
    res.status = "passed" if ok else "wrong_answer"
    res.reason = why
    return res


def same_output(a: TestResult, b: TestResult, kind: str = "stdio") -> bool:
    """Whether two programs produced the same output on one test.

    Stdio: the outputs match under LiveCodeBench's rule (either one taken as the expected);
    values: equal canonical forms. Tests that produced no output (an error, a timeout) match
    only when both ended with the same status.
    """
    if kind == "stdio":
        if a.status in ("passed", "wrong_answer", "ran") and b.status in ("passed", "wrong_answer", "ran"):
            return compare_stdio(a.actual or "", b.actual or "")[0]
        return a.status == b.status
    if a.actual is not None and b.actual is not None:
        return a.actual == b.actual
    return a.actual is None and b.actual is None and a.status == b.status


__all__ = [
    "NO_EXPECTED",
    "Uncomparable",
    "canonical",
    "compare_stdio",
    "compare_value",
    "grade",
    "same_output",
    "show_value",
    "stripped_lines",
]
