"""The answer-comparison backends behind one interface (autojudge.core.compare.Comparer).

Cheap checks only (no sandbox, no model): each built-in comparer is registered by
``autojudge.plugins.comparers``, satisfies the protocol, pickles before use, and gives
the same outcomes as the task that uses it.
"""

from __future__ import annotations

import pickle

from autojudge.core.compare import Comparer
from autojudge.core.compare.llm import ChatBackend, LLMComparer, LLMEquivalenceChecker
from autojudge.core.compare.math import MathVerifyComparer
from autojudge.core.compare.program_results import SandboxTestsComparer
from autojudge.core.task import CheckOutcome, Example

EX = Example("e1", "What is half of one?", reference="1/2")


def builtin_registrations() -> list:
    from autojudge.plugins import comparers

    got: list = []
    comparers.register_comparers(got.append)
    return got


def test_the_builtins_are_registered_under_their_names():
    got = builtin_registrations()
    assert [c.name for c in got] == ["math-verify", "sandbox-tests", "llm"]
    assert got == [MathVerifyComparer, SandboxTestsComparer, LLMComparer]


def test_math_verify_comparer_matches_the_math_task(monkeypatch):
    monkeypatch.setenv("AJ_CHECK_WORKERS", "0")  # in-process: no pool to start
    from autojudge.plugins.math.gsm8k import GSM8KTask

    comparer = MathVerifyComparer(numeric=True, timeout=5.0)
    assert isinstance(comparer, Comparer)
    pairs = [("0.5", "1/2", EX), ("18", "18.00", EX), ("18", "20", EX), (None, "1", EX)]
    out = pickle.loads(pickle.dumps(comparer)).compare_many(pairs)
    assert all(isinstance(o, CheckOutcome) and o.ok for o in out)
    assert [o.value for o in out] == [o.value for o in GSM8KTask().equivalent_outcomes(pairs)]
    assert [o.value for o in out][1:] == [True, False, False]


def test_sandbox_tests_comparer_decides_trivial_pairs_without_running_anything():
    def no_program(code, example):
        raise AssertionError("nothing should run")

    comparer = SandboxTestsComparer(no_program)
    assert isinstance(comparer, Comparer)
    same = "def f(x):\n    return x\n"
    reformatted = "def f(x):\n\n    return x   # same AST\n"
    out = comparer.compare_many([(same, reformatted, EX), (same, None, EX), ("", "", EX)])
    assert [o.value for o in out] == [True, False, False] and all(o.ok for o in out)


class _LastWord(ChatBackend):
    comparer_id = "scripted:last-word"

    def complete(self, requests):
        out = []
        for r in requests:
            user = r.message_dicts()[-1]["content"]
            a = user.split("Response A:\n", 1)[1].split("\n", 1)[0].split()[-1]
            b = user.split("Response B:\n", 1)[1].split("\n", 1)[0].split()[-1]
            out.append(f"A: {a}\nB: {b}\nSame: {'Yes' if a == b else 'No'}")
        return out


def test_llm_comparer_asks_the_example_question_and_pickles_without_its_checker():
    comparer = LLMComparer(LLMEquivalenceChecker(_LastWord()))
    assert isinstance(comparer, Comparer)
    out = comparer.compare_many(
        [("It is Ottawa", "Surely Ottawa", EX), ("Ottawa", "Toronto", EX), (None, "x", EX)]
    )
    assert [o.value for o in out] == [True, False, False]

    lazy = LLMComparer("openai:http://127.0.0.1:9/v1#m")  # built from a spec: nothing contacted yet
    assert lazy.config is not None and lazy._checker is None
    assert lazy.checker().comparer_id == "openai:m"
    assert pickle.loads(pickle.dumps(lazy))._checker is None  # a copy builds its own checker
