"""Configuring an LLM comparer from a spec string and environment variables.

A comparer spec names the backend:

* ``local:<preset-or-path>`` — a chat model run in-process with transformers
  (:class:`~autojudge.core.compare.llm.backends.LocalChatComparer`): a preset name
  (``aj models list``), a local Hugging Face directory or a ``.gguf`` file;
* ``openai:<base-url>#<model>`` — an OpenAI-compatible endpoint
  (:class:`~autojudge.core.compare.llm.backends.OpenAIChatComparer`), e.g.
  ``openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct`` for ``vllm serve``.

:meth:`ComparerConfig.from_env` reads one task's settings from variables sharing a
prefix (the ``qa`` task uses ``AJ_QA_JUDGE``; a plugin picks its own). The variable names
(and ``AJ_LLMJUDGE_CACHE``) keep the ``JUDGE`` of earlier versions, for compatibility:

==========================  ==========================================================  ==========
variable                    meaning                                                     default
==========================  ==========================================================  ==========
``<P>``                     the comparer spec                                           the task's
``<P>_API_KEY_ENV``         name of the variable holding the endpoint's API key         none
``<P>_BOTH_ORDERS``         ask (a, b) and (b, a); equivalent only if both say Yes      ``1``
``<P>_SAMPLES``             votes per order (needs ``<P>_TEMPERATURE`` > 0 when > 1)    ``1``
``<P>_TEMPERATURE``         sampling temperature (0 = greedy)                           ``0``
``<P>_MAX_TOKENS``          reply length limit                                          ``64``
``<P>_DTYPE``               local models: ``float32`` / ``bfloat16``                    ``float32``
``<P>_DEVICE``              local models: torch device                                  ``cpu``
``<P>_TIMEOUT``             endpoint: seconds per request                               ``60``
``<P>_RETRIES``             endpoint: retries after the first attempt                   ``4``
``<P>_CONCURRENCY``         endpoint: requests in flight                                ``4``
``AJ_LLMJUDGE_CACHE``       reply cache file, or ``off``                                see cache
==========================  ==========================================================  ==========

Local comparers default to float32: their requests are a few hundred prompt tokens
and a few dozen generated ones, and on AVX2 CPUs without bfloat16 units the
prompt pass of Qwen2.5-Coder-1.5B ran ~4x faster in float32 than in bfloat16
(measured: 16 s vs 65 s per request, 1 thread).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from autojudge.core.compare.llm.backends import ChatBackend, LocalChatComparer, OpenAIChatComparer
from autojudge.core.compare.llm.cache import ReplyCache, default_cache_path
from autojudge.core.compare.llm.checker import ComparerSettings, LLMEquivalenceChecker

__all__ = ["ComparerConfig", "ComparerConfigError", "parse_comparer_spec"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ComparerConfigError(ValueError):
    """A comparer spec or setting is malformed; the message says what is accepted."""


def _cache_setting() -> str | None:
    path = default_cache_path()
    return None if path is None else str(path)


def parse_comparer_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``("local", {"model": ...})`` or ``("openai", {"base_url": ..., "model": ...})``."""
    kind, sep, rest = spec.strip().partition(":")
    rest = rest.strip()
    if sep and kind == "local" and rest:
        return "local", {"model": rest}
    if sep and kind == "openai":
        url, hsep, model = rest.rpartition("#")
        if hsep and url.startswith(("http://", "https://")) and model.strip():
            return "openai", {"base_url": url.strip(), "model": model.strip()}
    raise ComparerConfigError(
        f"bad judge spec {spec!r}: use 'local:<preset-or-path>' (e.g. local:qwen2.5-coder-1.5b-instruct) "
        "or 'openai:<base-url>#<model>' (e.g. openai:http://127.0.0.1:8000/v1#my-model)"
    )


@dataclass(frozen=True)
class ComparerConfig:
    """Everything that builds a checker. Plain data: safe to copy to worker processes."""

    spec: str
    api_key_env: str | None = None
    both_orders: bool = True
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 64
    dtype: str = "float32"
    device: str = "cpu"
    timeout: float = 60.0
    retries: int = 4
    concurrency: int = 4
    #: reply cache: a file path, "default" (``AJ_LLMJUDGE_CACHE`` or the cache dir, read when built) or None (off)
    cache: str | None = "default"

    def __post_init__(self) -> None:
        parse_comparer_spec(self.spec)
        self.settings()  # validates samples / temperature / max_tokens

    @classmethod
    def from_env(
        cls, prefix: str, default_spec: str, environ: dict[str, str] | None = None
    ) -> ComparerConfig:
        """Read ``<prefix>`` and ``<prefix>_*`` (see the module docstring); unset ones take defaults."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            v = env.get(f"{prefix}_{name}" if name else prefix)
            return v.strip() if v is not None and v.strip() else None

        def num(name: str, typ: type, default: Any) -> Any:
            raw = get(name)
            if raw is None:
                return default
            try:
                return typ(raw)
            except ValueError:
                raise ComparerConfigError(f"{prefix}_{name}={raw!r} is not a valid {typ.__name__}") from None

        both = get("BOTH_ORDERS")
        if both is not None and both.lower() not in _TRUE | _FALSE:
            raise ComparerConfigError(f"{prefix}_BOTH_ORDERS={both!r}: use 1 or 0")
        try:
            return cls(
                spec=get("") or default_spec,
                api_key_env=get("API_KEY_ENV"),
                both_orders=True if both is None else both.lower() in _TRUE,
                samples=num("SAMPLES", int, 1),
                temperature=num("TEMPERATURE", float, 0.0),
                max_tokens=num("MAX_TOKENS", int, 64),
                dtype=get("DTYPE") or "float32",
                device=get("DEVICE") or "cpu",
                timeout=num("TIMEOUT", float, 60.0),
                retries=num("RETRIES", int, 4),
                concurrency=num("CONCURRENCY", int, 4),
                cache=_cache_setting(),
            )
        except ComparerConfigError:
            raise
        except ValueError as e:
            raise ComparerConfigError(f"bad comparer settings in {prefix}_*: {e}") from None

    def settings(self) -> ComparerSettings:
        try:
            return ComparerSettings(
                both_orders=self.both_orders,
                samples=self.samples,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except ValueError as e:
            raise ComparerConfigError(str(e)) from None

    def build_backend(self) -> ChatBackend:
        kind, parts = parse_comparer_spec(self.spec)
        if kind == "local":
            return LocalChatComparer(parts["model"], dtype=self.dtype, device=self.device)
        return OpenAIChatComparer(
            parts["base_url"],
            parts["model"],
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            max_retries=self.retries,
            concurrency=self.concurrency,
        )

    def build_cache(self) -> ReplyCache | None:
        if self.cache is None:
            return None
        path = default_cache_path() if self.cache == "default" else self.cache
        return ReplyCache(path) if path is not None else None

    def build_checker(self) -> LLMEquivalenceChecker:
        """A checker for this configuration (the backend loads its model only when first asked)."""
        return LLMEquivalenceChecker(self.build_backend(), self.settings(), cache=self.build_cache())

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings (the API key's variable name, never its value)."""
        from autojudge.core.compare.llm.prompt import PROMPT_VERSION, VOTE_RULES

        d = asdict(self)
        kind, _ = parse_comparer_spec(self.spec)
        if kind == "local":  # endpoint-only settings mean nothing here
            for k in ("api_key_env", "timeout", "retries", "concurrency"):
                d.pop(k)
        else:
            for k in ("dtype", "device"):
                d.pop(k)
        d.pop("cache")
        d["prompt_version"] = PROMPT_VERSION
        d["vote_rules"] = VOTE_RULES
        return d
