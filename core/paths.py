"""Where autojudge keeps files of its own: the user cache directory.

``AJ_CACHE_DIR`` overrides the platform default (``~/.cache/autojudge`` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "AJ_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """``$AJ_CACHE_DIR/<parts>`` (or the platform user cache dir); not created here."""
    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("autojudge", appauthor=False))
    return root.joinpath(*parts)
