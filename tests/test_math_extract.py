"""Answer extraction for the math tasks: every supported answer style, and None when there is none."""

from __future__ import annotations

import pytest

from autojudge.plugins.math.extract import (
    extract_final_answer,
    find_last_boxed,
    gsm8k_reference,
    strip_answer,
)

CASES = [
    # boxed, nested braces, fbox
    ("So the answer is \\boxed{18}.", "18"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("We get $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("Thus \\fbox{42} is it.", "42"),
    ("\\boxed {7}", "7"),
    ("\\boxed 5", "5"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("First \\boxed{3}, but correcting: \\boxed{4}", "4"),
    ("Answer \\boxed{12} then a truncated \\boxed{\\frac{1", "12"),
    ("\\boxed{\\$1,000}", "\\$1,000"),
    ("\\[\\boxed{x = 5}\\]", "x = 5"),
    # final answer phrases
    ("Some work.\nThe final answer is 18.", "18"),
    ("The final answer is $18$. I hope it is correct.", "18"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("**Final answer:** 250", "250"),
    ("The final answer is: 1,000 dollars.", "1,000 dollars"),
    ("The final answer is \\( 7 \\).", "7"),
    # GSM8K style
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("... so $1,200.\n#### 1,200", "1,200"),
    # few-shot style
    ("There are 15 trees originally. So 21 - 15 = 6. The answer is 6.", "6"),
    ("So he has 35 - 2 = 33 golf balls. The answer is 33 golf balls.", "33 golf balls"),
    ("Answer: -4", "-4"),
    # bare trailing number
    ("She has 9 eggs and sells them for $2 each, so 9 * 2 = 18", "18"),
    ("The total is 3/4", "3/4"),
    ("Total: $1,234.50.", "1,234.50"),
    ("x = -2.5", "-2.5"),
    ("so it is\n\n42\n", "42"),
    # nothing to extract
    ("", None),
    ("   \n", None),
    ("I am not sure how to solve this problem.", None),
    ("She has 9 eggs left and sells them at the market", None),
    ("\\boxed{}", None),
    ("The answer is", None),
    ("Truncated \\boxed{\\frac{1}{2", None),
]


@pytest.mark.parametrize("response,expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_extract_final_answer(response: str, expected: str | None) -> None:
    assert extract_final_answer(response) == expected


def test_find_last_boxed_handles_escaped_braces_and_depth() -> None:
    assert find_last_boxed("\\boxed{\\{a\\} \\cup \\{b\\}}") == "\\{a\\} \\cup \\{b\\}"
    assert find_last_boxed("\\boxed{a{b{c}}d}") == "a{b{c}}d"
    assert find_last_boxed("no box here") is None


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("$18$", "18"),
        ("**42**", "42"),
        ("\\( x \\)", "x"),
        ("$$3$$", "3"),
        ("$18", "18"),
        ("7.", "7"),
        ("3.5", "3.5"),
    ],
)
def test_strip_answer(raw: str, clean: str) -> None:
    assert strip_answer(raw) == clean


def test_gsm8k_reference() -> None:
    assert gsm8k_reference("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_reference("...\n#### 1,200") == "1200"
    assert gsm8k_reference("...\n#### -5") == "-5"
    with pytest.raises(ValueError, match="####"):
        gsm8k_reference("no marker")
