"""On-disk cache of the LLM comparer's replies: one SQLite file, so re-mining or resuming never pays twice.

Key: ``sha256`` of a canonical JSON list of (comparing model id, prompt version,
the exact chat messages, max tokens, temperature, seed) — the messages hold the
question and the two responses in the order they were shown, so (a, b) and
(b, a) are different entries, and so are samples of one pair. Value: the raw
reply text (plus the model id, prompt version and time, for inspection). The
verdict is parsed again on every read, so a parser fix applies to cached
replies without asking the model again. Only replies are stored: failures are
never cached.

Location: ``AJ_LLMJUDGE_CACHE`` (a file path, or ``off`` to disable), else
``<autojudge cache>/llmjudge/replies.sqlite3`` (:func:`autojudge.core.paths.cache_dir`). The variable,
the path, the key prefix ``autojudge-llmjudge/1`` and the table's ``judge`` column keep the
names of earlier versions, so existing caches stay valid.

Crash safety and concurrency: every insert is its own SQLite transaction (WAL
journal), so a killed process leaves either the whole entry or nothing, and
several processes (mining shards) can share one file. Entries are plain text
and JSON; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autojudge.core.paths import cache_dir

__all__ = ["CACHE_ENV", "ReplyCache", "default_cache_path", "reply_key"]

CACHE_ENV = "AJ_LLMJUDGE_CACHE"
_OFF = {"off", "none", "0", "false", "no", ""}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path | None:
    """The cache file from ``AJ_LLMJUDGE_CACHE`` (``None`` when it says ``off``) or the default."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return cache_dir("llmjudge", "replies.sqlite3")


def reply_key(
    comparer_id: str,
    prompt_version: str,
    messages: Iterable[Any],
    *,
    max_tokens: int,
    temperature: float,
    seed: int | None,
) -> str:
    """The cache key of one comparer request (hex sha256)."""
    canon = json.dumps(
        [
            "autojudge-llmjudge/1",
            comparer_id,
            prompt_version,
            list(messages),
            int(max_tokens),
            float(temperature),
            seed,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class ReplyCache:
    """Comparer replies by key in a SQLite file (created on first use, with its folder)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __getstate__(self) -> dict[str, Any]:  # worker processes open their own connection
        return {"path": self.path, "hits": 0, "misses": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """Cached replies of those ``keys`` that have one."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._lock:
            conn = self._connect()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, reply in conn.execute(
                    f"SELECT key, reply FROM replies WHERE key IN ({marks})", chunk
                ):
                    found[key] = reply
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, reply: str, *, comparer_id: str, prompt_version: str) -> None:
        """Store one reply (an existing entry for ``key`` is kept: first reply wins)."""
        if not isinstance(reply, str):
            raise TypeError(f"only reply strings are cached, got {type(reply).__name__}")
        with self._lock:
            self._connect().execute(
                "INSERT OR IGNORE INTO replies (key, judge, prompt_version, reply, created) VALUES (?, ?, ?, ?, ?)",
                (key, comparer_id, prompt_version, reply, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
