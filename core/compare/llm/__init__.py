"""LLM answer comparison, for tasks whose answers no parser or test can check.

A chat model (a local one, or one behind an OpenAI-compatible endpoint) is
asked whether two responses give the same final answer; replies are cached
on disk. Public API (everything a task plugin needs)::

    from autojudge.core.compare.llm import (
        LLMComparedTask,          # Task base class: equivalence / correctness by the LLM comparer
        LLMComparer,              # the Comparer ("llm") for use outside a task
        LLMEquivalenceChecker,    # the checker itself, for custom use
        ComparerConfig,           # spec + settings, from code or environment variables
        LocalChatComparer, OpenAIChatComparer, ChatBackend,   # backends (subclass ChatBackend for others)
        ReplyCache, Verdict, ComparerBackendError,
    )

Modules: :mod:`~autojudge.core.compare.llm.prompt` (the versioned prompt and the
reply parser), :mod:`~autojudge.core.compare.llm.backends`,
:mod:`~autojudge.core.compare.llm.cache`, :mod:`~autojudge.core.compare.llm.checker`,
:mod:`~autojudge.core.compare.llm.config`, :mod:`~autojudge.core.compare.llm.comparer`,
:mod:`~autojudge.core.compare.llm.task`.
Nothing here imports torch or transformers until a local model is first used.
See docs/tasks-qa.md.
"""

from autojudge.core.compare.llm.backends import (
    ChatBackend,
    ChatRequest,
    ComparerBackendError,
    LocalChatComparer,
    OpenAIChatComparer,
)
from autojudge.core.compare.llm.cache import ReplyCache, default_cache_path
from autojudge.core.compare.llm.checker import (
    ComparerSettings,
    ComparisonResult,
    LLMEquivalenceChecker,
    aggregate_votes,
    normalize_answer,
)
from autojudge.core.compare.llm.comparer import LLMComparer
from autojudge.core.compare.llm.config import ComparerConfig, ComparerConfigError, parse_comparer_spec
from autojudge.core.compare.llm.prompt import (
    PROMPT_VERSION,
    VOTE_RULES,
    Verdict,
    build_messages,
    parse_verdict,
    parse_vote,
)
from autojudge.core.compare.llm.task import LLMComparedTask

__all__ = [
    "PROMPT_VERSION",
    "VOTE_RULES",
    "ChatBackend",
    "ChatRequest",
    "ComparerBackendError",
    "ComparerConfig",
    "ComparerConfigError",
    "ComparerSettings",
    "ComparisonResult",
    "LLMComparedTask",
    "LLMComparer",
    "LLMEquivalenceChecker",
    "LocalChatComparer",
    "OpenAIChatComparer",
    "ReplyCache",
    "Verdict",
    "aggregate_votes",
    "build_messages",
    "default_cache_path",
    "normalize_answer",
    "parse_comparer_spec",
    "parse_verdict",
    "parse_vote",
]
