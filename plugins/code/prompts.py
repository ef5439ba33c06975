"""Chat prompts of the code tasks.

LiveCodeBench: the official generic prompt (``lcb_runner/prompts/code_generation.py`` of
LiveCodeBench/LiveCodeBench, ``format_prompt_generation`` for chat models: a system
message and ``get_generic_question_template_answer``), with its two variants: with starter
code (LeetCode, functional tests) and without (stdin/stdout problems).

HumanEval: the instruction EvalPlus uses for chat models, followed by the problem's
prompt (signature and docstring) in a Python fence. MBPP: the standard MBPP prompt
(Austin et al. 2021: the task text and its three test asserts, which name the function)
plus a request for a fenced block. The model is asked for a complete, self-contained
function; the code tasks run it after the problem's own prompt (see ``docs/tasks-code.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

from autojudge.core.task import Messages

__all__ = [
    "HUMANEVAL_INSTRUCTION",
    "LCB_FORMAT_WITH_STARTER_CODE",
    "LCB_FORMAT_WITHOUT_STARTER_CODE",
    "LCB_SYSTEM_MESSAGE",
    "MBPP_INSTRUCTION",
    "humaneval_messages",
    "lcb_messages",
    "lcb_user_prompt",
    "mbpp_messages",
]

LCB_SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests. You will NOT "
    "return anything except for the program."
)
LCB_FORMAT_WITH_STARTER_CODE = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters."
)
LCB_FORMAT_WITHOUT_STARTER_CODE = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on "
    "the sample inputs). Enclose your code within delimiters as follows."
)
HUMANEVAL_INSTRUCTION = "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
MBPP_INSTRUCTION = "You are an expert Python programmer, and here is your task:"


def lcb_user_prompt(question: str, starter_code: str | None) -> str:
    """LiveCodeBench's ``get_generic_question_template_answer`` (byte for byte)."""
    prompt = f"### Question:\n{question}\n\n"
    if starter_code:
        prompt += f"### Format: {LCB_FORMAT_WITH_STARTER_CODE}\n"
        prompt += f"```python\n{starter_code}\n```\n\n"
    else:
        prompt += f"### Format: {LCB_FORMAT_WITHOUT_STARTER_CODE}\n"
        prompt += "```python\n# YOUR CODE HERE\n```\n\n"
    prompt += "### Answer: (use the provided format with backticks)\n\n"
    return prompt


def lcb_messages(question: str, starter_code: str | None) -> Messages:
    """System message + generic question template, as LiveCodeBench sends to chat models."""
    return [
        {"role": "system", "content": LCB_SYSTEM_MESSAGE},
        {"role": "user", "content": lcb_user_prompt(question, starter_code)},
    ]


def humaneval_messages(prompt: str) -> Messages:
    """EvalPlus's chat instruction and the HumanEval prompt in a fence."""
    return [{"role": "user", "content": f"{HUMANEVAL_INSTRUCTION}\n```python\n{prompt.strip()}\n```\n"}]


def mbpp_messages(text: str, tests: Sequence[str]) -> Messages:
    """The standard MBPP prompt (task text + its test asserts) asking for one fenced block."""
    shown = "\n".join(t.strip() for t in tests)
    return [
        {
            "role": "user",
            "content": (
                f"{MBPP_INSTRUCTION} {text.strip()} Your code should pass these tests:\n\n{shown}\n\n"
                "Write the complete Python function in a single ```python code block."
            ),
        }
    ]
