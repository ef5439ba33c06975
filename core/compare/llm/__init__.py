"""LLM-judge answer equivalence for tasks whose answers no parser or test can check.

Public API (everything a task plugin needs)::

    from autojudge.core.compare.llm import (
        LLMJudgedTask,            # Task base class: equivalence / correctness by the judge
        LLMEquivalenceChecker,    # the checker itself, for custom use
        JudgeConfig,              # spec + settings, from code or environment variables
        LocalChatJudge, OpenAIChatJudge, ChatBackend,   # backends (subclass ChatBackend for others)
        ReplyCache, Verdict, JudgeBackendError,
    )

Modules: :mod:`~autojudge.core.compare.llm.prompt` (the versioned prompt and the
reply parser), :mod:`~autojudge.core.compare.llm.backends`,
:mod:`~autojudge.core.compare.llm.cache`, :mod:`~autojudge.core.compare.llm.checker`,
:mod:`~autojudge.core.compare.llm.config`, :mod:`~autojudge.core.compare.llm.task`.
Nothing here imports torch or transformers until a local judge is first used.
See docs/tasks-qa.md.
"""

from autojudge.core.compare.llm.backends import (
    ChatBackend,
    ChatRequest,
    JudgeBackendError,
    LocalChatJudge,
    OpenAIChatJudge,
)
from autojudge.core.compare.llm.cache import ReplyCache, default_cache_path
from autojudge.core.compare.llm.checker import (
    JudgeResult,
    JudgeSettings,
    LLMEquivalenceChecker,
    aggregate_votes,
    normalize_answer,
)
from autojudge.core.compare.llm.config import JudgeConfig, JudgeConfigError, parse_judge_spec
from autojudge.core.compare.llm.prompt import PROMPT_VERSION, Verdict, build_messages, parse_verdict
from autojudge.core.compare.llm.task import LLMJudgedTask

__all__ = [
    "PROMPT_VERSION",
    "ChatBackend",
    "ChatRequest",
    "JudgeBackendError",
    "JudgeConfig",
    "JudgeConfigError",
    "JudgeResult",
    "JudgeSettings",
    "LLMEquivalenceChecker",
    "LLMJudgedTask",
    "LocalChatJudge",
    "OpenAIChatJudge",
    "ReplyCache",
    "Verdict",
    "aggregate_votes",
    "build_messages",
    "default_cache_path",
    "normalize_answer",
    "parse_judge_spec",
    "parse_verdict",
]
