"""Math answer equivalence: hand-written hard cases in both directions, the fast path, the pool and timeouts.

Cases live in ``tests/data/math_hard_cases.jsonl``: ``equivalent`` is the expected
symmetric equivalence; ``correct_gold_a`` is ``correct_answer(pred=b, reference=a)``
and ``correct_gold_b`` the reverse (math-verify's ``verify(gold, pred)`` is not
symmetric; the asymmetric rows are documented in docs/tasks-math.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autojudge.core.compare import math as checks
from autojudge.core.compare.math_verify import (
    correct_answer,
    equivalent_answers,
    fast_compare,
    normalize_numeric,
    parse_answer,
    verify_parsed,
)
from autojudge.core.task import Example
from autojudge.plugins.math.gsm8k import GSM8KTask
from autojudge.plugins.math.math500 import Math500Task

CASES_PATH = Path(__file__).parent / "data" / "math_hard_cases.jsonl"
CASES = [json.loads(line) for line in CASES_PATH.read_text("utf-8").splitlines() if line.strip()]
IDS = [f"{i}-{c['task']}-{c['note'][:30]}" for i, c in enumerate(CASES)]
EX = Example(id="x", question="")


@pytest.fixture(scope="module", autouse=True)
def _close_shared_pool():
    yield
    checks.close_check_pool()


def test_hard_cases_cover_both_tasks_and_asymmetries() -> None:
    assert len(CASES) >= 60
    assert {c["task"] for c in CASES} == {"gsm8k", "math500"}
    assert any(c["correct_gold_a"] != c["correct_gold_b"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equivalence_is_symmetric_and_as_expected(case: dict) -> None:
    numeric = case["task"] == "gsm8k"
    assert equivalent_answers(case["a"], case["b"], numeric) is case["equivalent"]
    assert equivalent_answers(case["b"], case["a"], numeric) is case["equivalent"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_correctness_in_each_gold_direction(case: dict) -> None:
    numeric = case["task"] == "gsm8k"
    assert correct_answer(case["b"], case["a"], numeric) is case["correct_gold_a"]
    assert correct_answer(case["a"], case["b"], numeric) is case["correct_gold_b"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_math_verify_alone_gives_the_same_answers(case: dict) -> None:
    """The fast path changes speed only: with it off, every case still holds."""
    numeric = case["task"] == "gsm8k"
    assert equivalent_answers(case["a"], case["b"], numeric, fast_path=False) is case["equivalent"]
    assert correct_answer(case["b"], case["a"], numeric, fast_path=False) is case["correct_gold_a"]


FAST = [
    ("18", "18.0"),
    ("18", "17"),
    ("-3", "3"),
    ("0.5", ".5"),
    ("2.50", "2.5"),
    ("7", "7"),
    ("100", "1000"),
]


@pytest.mark.parametrize("a,b", FAST)
def test_fast_path_agrees_with_math_verify(a: str, b: str) -> None:
    fast = fast_compare(a, b)
    assert fast is not None
    pa, pb = parse_answer(a), parse_answer(b)
    assert fast is (verify_parsed(pa, pb) or verify_parsed(pb, pa))


def test_fast_path_defers_when_unsure() -> None:
    assert fast_compare("0.1234567", "0.1234568") is None  # math-verify rounds to 6 places: equal
    assert equivalent_answers("0.1234567", "0.1234568") is True
    assert fast_compare("1/2", "0.5") is None
    assert fast_compare("x", "1") is None


@pytest.mark.parametrize(
    "raw,number",
    [
        ("\\$1,000.00", "1000.00"),
        ("18 eggs", "18"),
        ("50\\%", "50"),
        ("7 \\text{ hours}", "7"),
        ("\u22123", "-3"),
        ("about 12", "12"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("3 apples and 4 oranges", "3 apples and 4 oranges"),
        ("1e2", "100"),
        ("2.5e3", "2500"),
        ("1.5E+03 dollars", "1500"),
        ("-4e-2", "-0.04"),
        ("\\$1e3", "1000"),
        ("e^2", "e^2"),
        ("1e999", "1e999"),  # absurd exponents are left to math-verify
    ],
)
def test_normalize_numeric(raw: str, number: str) -> None:
    assert normalize_numeric(raw) == number


GSM8K_SCI = [
    # (model output, reference, correct): a GSM8K answer in scientific notation is that number
    (
        "She sells 16 - 3 - 4 = 9 eggs for $2 each, ... so in total it is $1e2$.\n\nThe final answer is \\boxed{1e2}.",
        "100",
        True,
    ),
    ("2.5 thousand written out is 2.5e3.\n#### 2.5e3", "2500", True),
    ("Each of the 12 boxes holds 100, so the answer is 1.2E+3 dollars.", "1200", True),
    ("3 trips of 100 km each give a total of 3e2", "300", True),
    ("So the total is \\boxed{1e3}.", "100", False),
]
MATH500_E = [
    # Euler's e keeps its meaning in MATH-500
    ("Differentiating, $f'(2) = e^2$. So the answer is $\\boxed{e^2}$.", "e^2", True),
    ("Hence the value is \\boxed{e^{2}}.", "e^2", True),
    ("The limit equals \\boxed{2e}.", "2e", True),
    ("So the answer is \\boxed{100}.", "e^2", False),
]


@pytest.mark.parametrize("response,reference,correct", GSM8K_SCI)
def test_gsm8k_outputs_in_scientific_notation(response: str, reference: str, correct: bool) -> None:
    task = GSM8KTask(fewshot=0)
    ex = Example(id="gsm8k-test-0", question="", reference=reference)
    answer = task.extract_answer(response)
    assert answer is not None, response
    assert task.is_correct(answer, ex) is correct
    assert task.equivalent(answer, reference, ex) is correct  # mining: the same answer as the plain number


@pytest.mark.parametrize("response,reference,correct", MATH500_E)
def test_math500_keeps_eulers_e(response: str, reference: str, correct: bool) -> None:
    task = Math500Task()
    ex = Example(id="math500-x-1", question="", reference=reference)
    assert task.is_correct(task.extract_answer(response), ex) is correct


def test_none_and_empty_answers_are_never_equivalent() -> None:
    task = GSM8KTask(fewshot=0)
    assert task.equivalent(None, None, EX) is False
    assert task.equivalent(None, "5", EX) is False
    assert task.equivalent("", "", EX) is False
    assert task.is_correct(None, Example(id="x", question="", reference="5")) is False


def test_pooled_checks_match_in_process_results() -> None:
    gsm, math = GSM8KTask(fewshot=0), Math500Task()
    for task, numeric in ((gsm, True), (math, False)):
        rows = [c for c in CASES if (c["task"] == "gsm8k") == numeric]
        outcomes = task.equivalent_outcomes([(c["a"], c["b"], EX) for c in rows])
        assert [o.value for o in outcomes] == [c["equivalent"] for c in rows]
        assert not any(o.timed_out or o.error for o in outcomes)
        assert task.equivalent_many([(c["b"], c["a"], EX) for c in rows]) == [c["equivalent"] for c in rows]
        correct = task.correct_outcomes(
            [(c["b"], Example(id="x", question="", reference=c["a"])) for c in rows]
        )
        assert [o.value for o in correct] == [c["correct_gold_a"] for c in rows]


class _SlowCheckTask(Math500Task):
    check_timeout = 1.0


@pytest.mark.slow
def test_a_check_that_hangs_times_out_as_not_equivalent_and_is_flagged() -> None:
    task = _SlowCheckTask()
    # SymPy spends ~30 s on 2^(2^30) in C code; signal.alarm could not stop it, the pool kills the worker
    out = task.equivalent_outcomes([("2^{2^{30}}", "3", EX), ("\\frac{1}{2}", "0.5", EX)])
    assert out[0].timed_out is True and out[0].value is False
    assert out[1].ok and out[1].value is True
    fut = task.submit_equivalent("\\sqrt{4}", "2")
    assert fut.result(timeout=60).value is True  # a fresh worker took over
    assert task.equivalent("2^{2^{30}}", "3", EX) is False


def test_checks_run_in_process_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    checks.close_check_pool()
    monkeypatch.setenv(checks.CHECK_WORKERS_ENV, "0")
    assert checks.get_check_pool() is None
    out = checks.check_equivalent([("\\frac{1}{2}", "0.5"), ("1", "2")], numeric=False, timeout=1.0)
    assert [o.value for o in out] == [True, False]
