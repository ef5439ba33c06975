"""Chat backends that run the comparing model: a local transformers model or an OpenAI-compatible endpoint.

A backend turns a batch of :class:`ChatRequest` into reply strings, in order.
``comparer_id`` names the model (and what changes its replies) for cache keys.

* :class:`LocalChatComparer` loads any chat model :func:`autojudge.core.models.load_model`
  accepts (a preset, a local HF directory, a ``.gguf``) on first use, never in
  ``__init__``, so objects holding one can be sent to worker processes before
  use (the loaded model is dropped when the object is copied). Greedy requests
  run in batches (left padding); sampled ones one at a time under their own
  seed, so a sample is reproducible and cacheable. Memory: one more copy of the
  model per process that uses it (Qwen2.5-Coder-1.5B in bfloat16: ~3.1 GB).
* :class:`OpenAIChatComparer` POSTs to ``{base_url}/chat/completions`` with the
  standard library (``urllib``), ``concurrency`` requests at a time. Timeouts,
  connection errors, HTTP 408/429/5xx and malformed replies (not JSON, no
  ``choices[0].message.content`` string) are retried ``max_retries`` times with
  exponential backoff (``backoff * 2**attempt`` seconds, capped at
  ``max_backoff``, or the server's ``Retry-After``), then raise
  :class:`ComparerBackendError`. Other 4xx statuses (bad key, unknown model) raise
  at once. The API key is read from the environment variable named by
  ``api_key_env`` when a request is made; it is never stored or logged.

Nothing here ever turns a failure into a reply: callers get replies or an exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

__all__ = [
    "ChatBackend",
    "ChatRequest",
    "ComparerBackendError",
    "LocalChatComparer",
    "OpenAIChatComparer",
]

Messages = list[dict[str, str]]


class ComparerBackendError(RuntimeError):
    """The comparing model produced no usable reply (after retries, where they apply).

    ``partial`` maps request indices (in the failed batch) to the replies that did
    arrive, so callers can keep them (the checker caches them before re-raising).
    """

    def __init__(self, message: str, *, partial: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.partial: dict[int, str] = dict(partial or {})


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion: greedy when ``temperature`` is 0, else sampled with ``seed``."""

    messages: tuple[tuple[tuple[str, str], ...], ...]
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None

    @classmethod
    def make(
        cls, messages: Messages, *, max_tokens: int = 64, temperature: float = 0.0, seed: int | None = None
    ):
        frozen = tuple(tuple(sorted(m.items())) for m in messages)
        return cls(frozen, max_tokens=max_tokens, temperature=temperature, seed=seed)

    def message_dicts(self) -> Messages:
        return [dict(m) for m in self.messages]


class ChatBackend(ABC):
    """Runs chat completions for the LLM comparer. Subclass it to plug in another serving stack."""

    @property
    @abstractmethod
    def comparer_id(self) -> str:
        """Identity of the comparing model for cache keys: change it whenever replies could change."""

    @abstractmethod
    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        """Reply text for each request, in order; raise :class:`ComparerBackendError` on failure."""

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (no secrets)."""
        return {"comparer_id": self.comparer_id, "backend": type(self).__name__}


# -- local transformers model ---------------------------------------------------------------------------


def _local_fingerprint(spec: str) -> str:
    """A short hash of what determines a local model's weights, computed without loading it."""
    from autojudge.core import presets

    if spec in presets.PRESETS:
        return presets.PRESETS[spec].sha256[:12]
    path = Path(spec).expanduser()
    h = hashlib.sha256()
    if path.is_dir():
        for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
            f = path / name
            if f.is_file():
                h.update(name.encode() + b"\0" + f.read_bytes())
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.gguf")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    elif path.is_file():
        st = path.stat()
        h.update(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode())
    else:  # a hub id: its name is all there is
        h.update(spec.encode())
    return h.hexdigest()[:12]


class LocalChatComparer(ChatBackend):
    """A chat model run with transformers in this process, loaded on first use.

    ``spec``: a preset name, local HF directory or ``.gguf`` file (see
    :func:`autojudge.core.models.load_model`); ``model``/``tokenizer`` may be
    passed to reuse an already loaded model (then ``spec`` is only its name).
    ``batch_size`` bounds greedy batches. Threads: ``torch.set_num_threads`` is
    the caller's choice, as everywhere in autojudge.
    """

    def __init__(
        self,
        spec: str,
        *,
        dtype: str = "bfloat16",
        device: str = "cpu",
        batch_size: int = 8,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec, self.dtype, self.device, self.batch_size = spec, str(dtype), device, batch_size
        self._model, self._tokenizer = model, tokenizer
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # copies (e.g. to worker processes) reload lazily
        state = dict(self.__dict__)
        state.update(_model=None, _tokenizer=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def comparer_id(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _local_fingerprint(self.spec)
        return f"local:{self.spec}@{self.dtype}#{self._fingerprint}"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> tuple[Any, Any]:
        """Load the model and tokenizer (once); returns them."""
        with self._lock:
            if self._model is None:
                from autojudge.core.models import load_model

                lm = load_model(self.spec, dtype=self.dtype, device=self.device)
                self._model, self._tokenizer = lm.model, lm.tokenizer
            return self._model, self._tokenizer

    def unload(self) -> None:
        self._model = self._tokenizer = None

    def render(self, messages: Messages) -> str:
        _, tok = self.load()
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        out: dict[int, str] = {}
        try:
            greedy = [i for i, r in enumerate(requests) if r.temperature <= 0]
            for start in range(0, len(greedy), self.batch_size):
                idx = greedy[start : start + self.batch_size]
                for i, text in zip(idx, self._generate([requests[i] for i in idx], None), strict=True):
                    out[i] = text
            for i, r in enumerate(requests):
                if r.temperature > 0:
                    out[i] = self._generate([r], r.seed if r.seed is not None else 0)[0]
        except ComparerBackendError:
            raise
        except Exception as e:
            raise ComparerBackendError(
                f"local comparer model {self.spec!r} failed: {type(e).__name__}: {e}", partial=out
            ) from e
        return [out[i] for i in range(len(requests))]

    def _generate(self, batch: Sequence[ChatRequest], seed: int | None) -> list[str]:
        import torch
        from transformers import GenerationConfig

        model, tok = self.load()
        texts = [self.render(r.message_dicts()) for r in batch]
        side, pad = tok.padding_side, tok.pad_token
        tok.padding_side = "left"
        if pad is None:  # batches need one; the tokenizer may be shared, so restore it afterwards
            tok.pad_token = tok.eos_token
        try:
            pad_id = tok.pad_token_id
            enc = tok(texts, return_tensors="pt", padding=len(texts) > 1, add_special_tokens=False)
        finally:
            tok.padding_side = side
            if pad is None:
                tok.pad_token = None
        enc = {k: v.to(model.device) for k, v in enc.items()}
        sample = seed is not None
        cfg = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in batch),
            do_sample=sample,
            temperature=batch[0].temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_id,
            eos_token_id=tok.eos_token_id,
        )
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if sample:
                torch.manual_seed(seed)
            gen = model.generate(**enc, generation_config=cfg)
        new = gen[:, enc["input_ids"].shape[1] :]
        return [
            tok.decode(row[: r.max_tokens], skip_special_tokens=True).strip()
            for row, r in zip(new, batch, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spec": self.spec, "dtype": self.dtype, "device": self.device}


# -- OpenAI-compatible HTTP endpoint ---------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatComparer(ChatBackend):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (``vllm serve``, ...).

    ``base_url`` is the API root including ``/v1`` (``http://127.0.0.1:8000/v1``);
    ``model`` the served model name; ``api_key_env`` the *name* of the environment
    variable holding the key (``None``: no ``Authorization`` header). ``timeout`` is
    per request in seconds. The cache identity is ``openai:<model>``: the URL is
    not part of it, so moving a server keeps its cache; serve different weights
    under different names.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model name is empty")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or concurrency < 1:
            raise ValueError("need timeout > 0, max_retries >= 0, backoff >= 0, concurrency >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env or None
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff, self.max_backoff, self.concurrency = (
            float(backoff),
            float(max_backoff),
            int(concurrency),
        )
        self.sleep = time.sleep  # replaceable in tests (never pickled: a builtin)

    @property
    def comparer_id(self) -> str:
        return f"openai:{self.model}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise ComparerBackendError(
                    f"the comparer endpoint {self.base_url} needs an API key in ${self.api_key_env}, "
                    "which is unset or empty"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.message_dicts(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": 1,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    def _post_once(self, data: bytes, headers: dict[str, str]) -> str:
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (user-configured URL)
                raw = resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()[:300].decode("utf-8", "replace") if e.fp is not None else ""
            retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            if e.code in (408, 429) or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {body}", retry_after) from e
            raise ComparerBackendError(
                f"comparer endpoint {self.url} refused the request (HTTP {e.code}, not retried): {body}"
            ) from e
        except TimeoutError as e:
            raise _Retryable(f"timed out after {self.timeout:g} s") from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retryable(f"timed out after {self.timeout:g} s") from e
            raise _Retryable(f"connection failed: {e.reason}") from e
        except (HTTPException, ConnectionError, OSError) as e:
            raise _Retryable(f"connection failed: {type(e).__name__}: {e}") from e
        return _reply_content(raw)

    def complete_one(self, request: ChatRequest) -> str:
        """One request with retries; raises :class:`ComparerBackendError` when every attempt failed."""
        headers = self._headers()
        data = json.dumps(self.payload(request)).encode("utf-8")
        errors: list[str] = []
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(data, headers)
            except _Retryable as e:
                errors.append(f"attempt {attempt + 1}: {e}")
                if attempt == self.max_retries:
                    break
                if e.retry_after is not None:  # the server said when
                    delay = e.retry_after
                else:  # exponential, with jitter so parallel requests do not retry in lockstep
                    delay = self.backoff * 2**attempt * (0.5 + random.random() / 2)
                self.sleep(min(delay, self.max_backoff))
        raise ComparerBackendError(
            f"comparer endpoint {self.url} (model {self.model!r}) failed {len(errors)} times; "
            f"giving up. Errors: " + "; ".join(errors)
        )

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        if not requests:
            return []
        self._headers()  # a missing key fails once, before any request
        results: dict[int, str] = {}
        failures: list[tuple[int, ComparerBackendError]] = []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as ex:
            futures = {ex.submit(self.complete_one, r): i for i, r in enumerate(requests)}
            for fut, i in futures.items():
                try:
                    results[i] = fut.result()
                except ComparerBackendError as e:
                    failures.append((i, e))
        if failures:
            first = failures[0][1]
            raise ComparerBackendError(
                f"{len(failures)} of {len(requests)} judge requests failed; first: {first}", partial=results
            ) from first
        return [results[i] for i in range(len(requests))]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
        }


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: use our own backoff
        return None


def _reply_content(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat completion body, or :class:`_Retryable` when malformed."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Retryable(f"malformed reply (not JSON): {raw[:200]!r}") from e
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise _Retryable(f"malformed reply (no choices[0].message.content): {str(body)[:200]}") from e
    if not isinstance(content, str):
        raise _Retryable(f"malformed reply (content is {type(content).__name__}, not a string)")
    return content
