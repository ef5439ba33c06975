"""Built-in drafters, registered through the public ``register_drafters`` hook.

* ``draft-model``: greedy proposals of a small causal LM
  (``get_drafter("draft-model", model, device=...)``);
* ``lookup``: the continuation of a reference token sequence after the longest suffix
  match, no model calls (``get_drafter("lookup", reference, max_ngram=3)``);
* ``none``: proposes nothing (target-only decoding).

Combinators (``FallbackDrafter``, mining's ``RejoinDrafter``) wrap other drafters and
are not registered.
"""

from __future__ import annotations

from typing import Any

from autojudge.core.drafters import DraftModelDrafter, LookupDrafter, NullDrafter
from autojudge.plugins.hookspecs import hookimpl


@hookimpl
def register_drafters(register: Any) -> None:
    for cls in (DraftModelDrafter, LookupDrafter, NullDrafter):
        register(cls)
