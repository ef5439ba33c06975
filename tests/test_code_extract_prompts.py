"""Code tasks: code extraction from responses, and the prompts (LiveCodeBench's both variants, HumanEval, MBPP)."""

from __future__ import annotations

import pytest

from autojudge.plugins.code.extract import extract_code, fenced_blocks
from autojudge.plugins.code.prompts import (
    LCB_SYSTEM_MESSAGE,
    humaneval_messages,
    lcb_messages,
    lcb_user_prompt,
    mbpp_messages,
)

SOLUTION = "def add(a, b):\n    return a + b"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (f"Here you go:\n```python\n{SOLUTION}\n```\nDone.", SOLUTION),
        (f"```\n{SOLUTION}\n```", SOLUTION),  # untagged fence
        (f"```Python\n{SOLUTION}\n```", SOLUTION),  # case-insensitive tag
        (f"~~~py\n{SOLUTION}\n~~~", SOLUTION),  # tilde fence
        # the LAST python block wins
        (f"```python\ndef add(a, b):\n    return 0\n```\nBetter:\n```python\n{SOLUTION}\n```", SOLUTION),
        # a later block in another language is not code
        (f"```python\n{SOLUTION}\n```\nOutput:\n```text\n3\n```", SOLUTION),
        # a block indented inside a list item is dedented
        ("1. Code:\n\n   ```python\n   def add(a, b):\n       return a + b\n   ```\n", SOLUTION),
        # a four-backtick fence may contain a triple-backtick line
        ("````python\ns = '''\n```\n'''\nprint(s)\n````", "s = '''\n```\n'''\nprint(s)"),
        # cut off inside the last block: its content, as it is
        ("Sure.\n```python\ndef add(a, b):\n    return a +", "def add(a, b):\n    return a +"),
        # no fence but plainly code
        (f"{SOLUTION}\n", SOLUTION),
        (
            "import sys\nprint(sum(map(int, sys.stdin.read().split())))",
            "import sys\nprint(sum(map(int, sys.stdin.read().split())))",
        ),
    ],
)
def test_extracts_the_code(response, expected):
    assert extract_code(response) == expected


@pytest.mark.parametrize(
    "response",
    [
        "",
        "   \n",
        None,
        "I cannot solve this problem.",
        "hello",  # parses as an expression, but is not a program
        "```bash\npip install numpy\n```",  # only another language
        "```python\n\n```",  # empty block
        "The answer is 42.",
    ],
)
def test_no_code_is_none(response):
    assert extract_code(response) is None


def test_fenced_blocks_reports_tags_and_closure():
    blocks = fenced_blocks("```python\na = 1\n```\ntext\n```cpp\nint x;\n```\n```\nb = 2")
    assert blocks == [("python", "a = 1", True), ("cpp", "int x;", True), ("", "b = 2", False)]


def test_lcb_prompt_without_starter_code_is_the_official_stdin_variant():
    msgs = lcb_messages("Print A + B.", "")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == LCB_SYSTEM_MESSAGE
    assert LCB_SYSTEM_MESSAGE.endswith("You will NOT return anything except for the program.")
    assert msgs[1]["content"] == (
        "### Question:\nPrint A + B.\n\n"
        "### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
        "test on the sample inputs). Enclose your code within delimiters as follows.\n"
        "```python\n# YOUR CODE HERE\n```\n\n"
        "### Answer: (use the provided format with backticks)\n\n"
    )


def test_lcb_prompt_with_starter_code_is_the_official_functional_variant():
    starter = "class Solution:\n    def f(self, x: int) -> int:\n        "
    assert lcb_user_prompt("Return x.", starter) == (
        "### Question:\nReturn x.\n\n"
        "### Format: You will use the following starter code to write the solution to the problem and enclose "
        "your code within delimiters.\n"
        f"```python\n{starter}\n```\n\n"
        "### Answer: (use the provided format with backticks)\n\n"
    )
    assert lcb_user_prompt("Return x.", None) == lcb_user_prompt("Return x.", "")
    assert "YOUR CODE HERE" not in lcb_user_prompt("Return x.", starter)


def test_humaneval_and_mbpp_prompts_ask_for_a_fenced_function():
    he = humaneval_messages('def f(x):\n    """Return x."""\n')
    assert len(he) == 1 and he[0]["role"] == "user"
    assert (
        "markdown code block" in he[0]["content"]
        and '```python\ndef f(x):\n    """Return x."""\n```' in he[0]["content"]
    )
    mb = mbpp_messages("Write a function to add.", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"])
    text = mb[0]["content"]
    assert text.startswith(
        "You are an expert Python programmer, and here is your task: Write a function to add."
    )
    assert "assert add(1, 2) == 3\nassert add(0, 0) == 0" in text and "```python" in text
