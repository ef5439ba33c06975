"""One HumanEval problem end to end with a real model (marked ``integration``; CI runs it).

Qwen2.5-Coder-0.5B-Instruct (the default draft) answers ``HumanEval/0`` through the task's prompt;
its answer must be extracted as a program that defines the entry point, and be graded in the sandbox:
the known-correct greedy answer passes every assert there, and a sandbox that returns only errors
makes it not correct (and not equivalent to anything).
"""

from __future__ import annotations

import pytest

from autojudge.core.compare import sandboxed
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.models import load_model
from autojudge.plugins.manager import get_task
from autojudge.sandbox import ProgramResult, TestResult

pytestmark = [pytest.mark.integration, pytest.mark.slow]


WRONG = "def has_close_elements(numbers, threshold):\n    return False\n"
OTHER_CORRECT = (
    "def has_close_elements(numbers, threshold):\n"
    "    s = sorted(numbers)\n"
    "    return any(b - a < threshold for a, b in zip(s, s[1:]))\n"
)


def test_qwen_coder_answers_humaneval_0_with_extractable_code(monkeypatch):
    task = get_task("code")  # humaneval
    ex = task.load("test", limit=1)[0]
    model = load_model("qwen2.5-coder-0.5b-instruct", dtype="bfloat16")
    engine = SpeculativeEngine(model.model, None, model.tokenizer)
    res = engine.generate(
        task.render_prompt(ex, model.tokenizer),
        mode="ar",
        max_new_tokens=200,
        stop_sequences=task.stop_sequences,
    )
    code = task.extract_answer(res.text)
    assert code is not None and "def has_close_elements" in code, res.text
    # graded in the sandbox: the greedy answer is a known-correct double loop over the pairs, and
    # every one of the problem's asserts must really run and pass
    (result,) = task.run([(code, ex)])
    assert result.error is None, result.error
    assert len(result.results) == len(task.suite(ex).tests) > 0
    assert [r.status for r in result.results] == ["passed"] * len(result.results), result.results
    assert task.is_correct(code, ex) is True
    assert task.is_correct(WRONG, ex) is False  # right for the asserts expecting False only
    # equivalence runs both programs: another correct program (a different AST) is equivalent, a wrong one not
    assert task.equivalent(code, OTHER_CORRECT, ex)
    assert not task.equivalent(code, WRONG, ex)

    # a sandbox that returns only errors: nothing graded correct or equivalent, and it was asked
    calls: list[int] = []

    class Broken:
        def run_many(self, programs, **kw):
            calls.append(len(programs))
            return [
                ProgramResult(
                    [TestResult(False, "sandbox_error", "the harness exited (code -9)") for _ in prog.tests],
                    backend="broken",
                    error="the harness exited (code -9)",
                )
                for prog in programs
            ]

    monkeypatch.setattr(sandboxed, "get_code_sandbox", lambda backend=None: Broken())
    sandboxed.cache_clear()  # the real results above are cached
    try:
        outcome = task.correct_outcomes([(code, ex)])[0]
        assert outcome.value is False and "sandbox error" in (outcome.error or "")
        assert task.is_correct(code, ex) is False
        assert not task.equivalent(code, OTHER_CORRECT, ex)
        assert calls  # the sandbox was asked (and retried once), nothing was decided without it
    finally:
        sandboxed.cache_clear()
