"""Chat prompts for the math tasks: zero-shot ``\\boxed{}`` and Wei et al.'s 8-shot GSM8K chain of thought.

Zero-shot (the default) is one user turn: the problem, then the instruction
:data:`ZERO_SHOT_INSTRUCTION` (the wording Qwen2.5 math evaluations use).

Few-shot (``fewshot=n``, 1 <= n <= 8) prepends the first ``n`` exemplars of
``gsm8k_fewshot.json`` as alternating user/assistant turns; each assistant turn
ends with ``The answer is N.`` (which the extractor understands) and the final
user turn is the bare question, as in the original prompt: the model is expected
to imitate the exemplars, not to box its answer.
``AJ_MATH_FEWSHOT=8`` selects the 8-shot mode for tasks built without an
explicit ``fewshot`` argument.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources

from autojudge.core.task import Messages

__all__ = [
    "FEWSHOT_ENV",
    "MAX_FEWSHOT",
    "ZERO_SHOT_INSTRUCTION",
    "build_math_messages",
    "fewshot_exemplars",
    "fewshot_from_env",
]

FEWSHOT_ENV = "AJ_MATH_FEWSHOT"
MAX_FEWSHOT = 8
ZERO_SHOT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@lru_cache(maxsize=1)
def fewshot_exemplars() -> tuple[dict[str, str], ...]:
    """The 8 GSM8K exemplars (``question``, ``rationale``, ``answer``) shipped with the package."""
    text = resources.files("autojudge.plugins.math").joinpath("gsm8k_fewshot.json").read_text("utf-8")
    rows = json.loads(text)["exemplars"]
    if len(rows) != MAX_FEWSHOT:
        raise ValueError(f"gsm8k_fewshot.json holds {len(rows)} exemplars, expected {MAX_FEWSHOT}")
    return tuple(rows)


def fewshot_from_env(default: int = 0) -> int:
    """Number of shots from ``AJ_MATH_FEWSHOT`` (``default`` when unset); validated."""
    raw = os.environ.get(FEWSHOT_ENV, "").strip()
    return check_fewshot(int(raw) if raw else default)


def check_fewshot(n: int) -> int:
    if not 0 <= n <= MAX_FEWSHOT:
        raise ValueError(f"few-shot count must be between 0 and {MAX_FEWSHOT}, got {n}")
    return n


def build_math_messages(question: str, fewshot: int = 0) -> Messages:
    """Chat messages asking ``question`` with ``fewshot`` exemplars before it."""
    if check_fewshot(fewshot) == 0:
        return [{"role": "user", "content": f"{question.strip()}\n\n{ZERO_SHOT_INSTRUCTION}"}]
    messages: Messages = []
    for ex in fewshot_exemplars()[:fewshot]:
        messages.append({"role": "user", "content": ex["question"]})
        messages.append({"role": "assistant", "content": f"{ex['rationale']} The answer is {ex['answer']}."})
    messages.append({"role": "user", "content": question.strip()})
    return messages
