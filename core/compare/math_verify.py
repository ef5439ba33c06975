"""Math answer equivalence and correctness with Hugging Face ``math-verify`` (on SymPy), in-process.

These functions run **without any timeout** (math-verify's own ``signal.alarm``
timeouts are disabled: they fail outside the main thread and cannot interrupt C
code). Call them through :mod:`autojudge.core.compare.math`, which runs them in a
:class:`autojudge.core.compare.pool.CheckPool` with a hard per-check timeout.

Rules:

* An answer (text from :func:`~autojudge.plugins.math.extract.extract_final_answer`)
  is parsed as ``\\boxed{answer}`` with math-verify's LaTeX and expression
  extractors; if that yields nothing, the bare text is parsed.
* ``numeric=True`` (GSM8K) first reduces an answer to a plain number where it can:
  drops ``$``/``\\$``, ``%``, ``\\text{...}`` units and trailing unit words, and
  thousands separators (``1,000`` -> ``1000``), and writes scientific notation out
  (``1e2`` -> ``100``, ``2.5E+3`` -> ``2500``; math-verify would read the ``e`` as
  Euler's number, which GSM8K answers never contain). GSM8K gold answers are plain
  numbers, so ``50%`` counts as ``50`` there. Without ``numeric`` (MATH-500),
  math-verify's own rules apply (it accepts ``50``, ``0.5`` and ``\\frac12`` for
  ``50\\%``; see docs/tasks-math.md).
* Fast path: two plain decimal literals are compared exactly with
  :class:`fractions.Fraction` when that decides (equal values, or two different
  integers); anything else goes to math-verify. It agrees with math-verify on
  those cases (tested) and skips SymPy.
* ``correct_answer(answer, reference)`` = ``verify(gold=reference, pred=answer)``.
* ``equivalent_answers(a, b)`` = ``verify(a, b) or verify(b, a)``: math-verify's
  ``verify(gold, pred)`` is not symmetric (e.g. gold ``x<2`` vs pred
  ``(-\\infty,2)`` holds only one way); two model answers have no gold role, so
  either direction suffices. Both directions run in one call (one timeout).
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any

__all__ = [
    "correct_answer",
    "equivalent_answers",
    "fast_compare",
    "normalize_numeric",
    "parse_answer",
    "prepare_answer",
    "verify_parsed",
    "warm_up",
]

_PLAIN_DECIMAL_RE = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_TRAILING_PERIOD_RE = re.compile(r"(?<=\d)\.$")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")
# a number in scientific notation standing alone (not inside a word or another number)
_SCIENTIFIC_RE = re.compile(r"(?<![\w.])(-?(?:\d+(?:\.\d+)?|\.\d+)[eE][+-]?\d+)(?![\w.])")
_MAX_EXPONENT = 100  # larger ones are left alone (a googol is not a grade-school answer)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm)\s*\{([^{}]*)\}")
_NUMBER_THEN_WORDS_RE = re.compile(r"(-?(?:\d+(?:\.\d+)?|\.\d+))\s*[A-Za-z][A-Za-z .'/-]*")
_WORDS_THEN_NUMBER_RE = re.compile(r"[A-Za-z][A-Za-z .']*?\s(-?(?:\d+(?:\.\d+)?|\.\d+))")


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeouts are off; they are off on purpose here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _expand_scientific(m: re.Match[str]) -> str:
    d = Decimal(m.group(1))
    if abs(d.as_tuple().exponent) > _MAX_EXPONENT:  # type: ignore[arg-type]
        return m.group(1)
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def normalize_numeric(answer: str) -> str:
    """Reduce a GSM8K-style answer to a plain number when possible (``$1,000.00`` -> ``1000.00``).

    Returns the input (trimmed) when it is not a number with decorations, e.g. ``\\frac{1}{2}``.
    """
    s = answer.strip().replace("\u2212", "-").replace("\\!", "").replace("\\,", "").replace("{,}", ",")
    s = _TEXT_RE.sub(r" \1", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _THOUSANDS_RE.sub("", s).strip()
    s = _SCIENTIFIC_RE.sub(_expand_scientific, s)
    if _PLAIN_DECIMAL_RE.fullmatch(s):
        return s
    m = _NUMBER_THEN_WORDS_RE.fullmatch(s) or _WORDS_THEN_NUMBER_RE.fullmatch(s)
    return m.group(1) if m else s


def fast_compare(a: str, b: str) -> bool | None:
    """Exact answer for two plain decimal literals when that is safe, else ``None`` (ask math-verify)."""
    a, b = a.strip(), b.strip()
    if not (_PLAIN_DECIMAL_RE.fullmatch(a) and _PLAIN_DECIMAL_RE.fullmatch(b)):
        return None
    fa, fb = Fraction(a), Fraction(b)
    if fa == fb:
        return True
    if fa.denominator == 1 and fb.denominator == 1 and max(abs(fa), abs(fb)) < 10**15:
        return False  # different integers; math-verify compares these exactly below 15 digits
    return None  # decimals: math-verify rounds to 6 places, let it decide


def _mv() -> Any:
    import math_verify

    return math_verify


@lru_cache(maxsize=8192)
def parse_answer(answer: str) -> tuple[Any, ...]:
    """math-verify's parse of ``\\boxed{answer}`` (or of the bare text), without its timeout; cached."""
    mv = _mv()
    parsed = mv.parse("\\boxed{" + answer + "}", parsing_timeout=None)
    if not parsed:
        parsed = mv.parse(answer, parsing_timeout=None)
    return tuple(parsed)


def verify_parsed(gold: tuple[Any, ...], pred: tuple[Any, ...]) -> bool:
    """math-verify's ``verify(gold, pred)`` without its timeout; False when either side is empty."""
    if not gold or not pred:
        return False
    return bool(_mv().verify(list(gold), list(pred), timeout_seconds=None))


def prepare_answer(answer: str, numeric: bool) -> str:
    """The text that is compared: :func:`normalize_numeric` for ``numeric`` tasks, else trimmed.

    A sentence-final period after a digit (``25.``) is dropped in both cases.
    """
    s = _TRAILING_PERIOD_RE.sub("", answer.strip())
    return normalize_numeric(s) if numeric else s


def equivalent_answers(a: str, b: str, numeric: bool = False, fast_path: bool = True) -> bool:
    """Whether two answers are the same: fast path, else math-verify in either direction."""
    a, b = prepare_answer(a, numeric), prepare_answer(b, numeric)
    if not a or not b:
        return False
    fast = fast_compare(a, b) if fast_path else None
    if fast is not None:
        return fast
    pa, pb = parse_answer(a), parse_answer(b)
    return verify_parsed(pa, pb) or verify_parsed(pb, pa)


def correct_answer(answer: str, reference: str, numeric: bool = False, fast_path: bool = True) -> bool:
    """Whether ``answer`` matches the gold ``reference``: ``verify(gold=reference, pred=answer)``."""
    answer, reference = prepare_answer(answer, numeric), prepare_answer(reference, numeric)
    if not answer or not reference:
        return False
    fast = fast_compare(reference, answer) if fast_path else None
    if fast is not None:
        return fast
    return verify_parsed(parse_answer(reference), parse_answer(answer))


def warm_up() -> None:
    """Import math-verify and run one parse + verify (CheckPool initializer: keeps that out of timeouts)."""
    equivalent_answers("\\frac{1}{2}", "0.5")
