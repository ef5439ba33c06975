"""Drafters: where speculative decoding's proposals come from.

A drafter sees the whole current sequence (prompt + generated tokens) and
proposes up to ``k`` next tokens; the engine verifies them with the target.
Verification, the judge and the metrics work the same with every drafter.

* :class:`NullDrafter` proposes nothing: target-only autoregressive decoding.
* :class:`DraftModelDrafter` runs a small causal LM greedily with its own KV
  cache, rolled back after rejections. It can also return its final hidden
  states at the proposed tokens (judge feature block ``dd``).
* :class:`LookupDrafter` proposes the continuation of a reference token
  sequence after the longest suffix match (prompt-lookup / n-gram style).
  Mining uses it with the current response as reference: after a token swap
  the target usually re-joins the original wording, so most rollout tokens are
  verified in bulk instead of generated one by one.
* :class:`FallbackDrafter` asks a primary drafter and falls back to another
  when the primary proposes nothing (lookup first, then the draft model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from autojudge.core.runner import ModelRunner


@dataclass
class Proposal:
    """Up to ``k`` proposed tokens (``[m]`` long tensor on the target's device; ``m`` may be 0)."""

    tokens: torch.Tensor
    source: str = ""


class Drafter(ABC):
    """Proposes tokens. Stateful per sequence: :meth:`reset` before a new generation."""

    name: str = "drafter"
    #: whether :meth:`hidden_states` is available (judge feature block ``dd``)
    provides_hidden: bool = False

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget any state from a previous sequence."""

    @abstractmethod
    def propose(self, seq: Sequence[int], k: int) -> Proposal:
        """Propose up to ``k`` tokens to follow ``seq`` (prompt + generated so far)."""

    def accepted(self, length: int) -> None:  # noqa: B027 - optional hook
        """The sequence now has ``length`` tokens that are final (the rest of the proposal was rejected)."""

    def hidden_states(self, positions: torch.Tensor) -> torch.Tensor:
        """Final hidden states at the proposal's ``positions`` (0-based window indices)."""
        raise NotImplementedError(f"{self.name} drafter provides no hidden states")

    def hidden_needs_forward(self, position: int) -> bool:
        """Whether :meth:`hidden_states` at window ``position`` costs an extra draft forward.

        The engine then judges the positions before it first and asks for this one
        only when every earlier mismatch was accepted.
        """
        return False


class NullDrafter(Drafter):
    """Proposes nothing; the engine then runs plain target-only greedy decoding."""

    name = "none"

    def __init__(self, device: torch.device | str = "cpu"):
        self._empty = torch.empty(0, dtype=torch.long, device=device)

    def propose(self, seq: Sequence[int], k: int) -> Proposal:
        return Proposal(self._empty, "none")


class DraftModelDrafter(Drafter):
    """Greedy proposals from a draft model with a KV cache that follows the accepted sequence."""

    name = "draft-model"
    provides_hidden = True

    def __init__(self, model: torch.nn.Module, *, device: torch.device | None = None):
        self.runner = ModelRunner(model)
        self.device = device or self.runner.device
        self._hidden: list[torch.Tensor] = []  # hidden state at each proposed token, when computed
        self._tokens: torch.Tensor | None = None

    def reset(self) -> None:
        # the KV cache is kept: `propose` reuses its longest common prefix with the new sequence
        self._hidden, self._tokens = [], None

    @torch.inference_mode()
    def propose(self, seq: Sequence[int], k: int) -> Proposal:
        self._hidden = []
        if k <= 0:
            self._tokens = torch.empty(0, dtype=torch.long, device=self.device)
            return Proposal(self._tokens, self.name)
        runner = self.runner
        seq = list(seq)
        n = runner.reuse(seq)  # the cached prefix that still matches the sequence
        feed = torch.tensor(seq[n:], dtype=torch.long, device=runner.device)
        tokens = []
        for i in range(k):
            h = runner.extend(feed)
            if i > 0:
                self._hidden.append(h[-1])  # state at the position holding proposal i-1
            nxt = runner.logits(h[-1:]).argmax(-1)
            tokens.append(nxt)
            feed = nxt
        self._pending_last = feed  # last proposal, not yet fed to the draft model
        self._tokens = torch.cat(tokens).to(self.device)
        return Proposal(self._tokens, self.name)

    @torch.inference_mode()
    def hidden_states(self, positions: torch.Tensor) -> torch.Tensor:
        assert self._tokens is not None
        m = self._tokens.numel()
        if len(self._hidden) < m and int(positions.max()) >= len(self._hidden):
            # the last proposed token has not been fed yet: one extra draft step, kept in the cache
            h = self.runner.extend(self._pending_last)
            self._hidden.append(h[-1])
        return torch.stack([self._hidden[i] for i in positions.tolist()]).to(self.device)

    def hidden_needs_forward(self, position: int) -> bool:
        return position >= len(self._hidden)

    def accepted(self, length: int) -> None:
        self.runner.crop(length)


class LookupDrafter(Drafter):
    """Proposes the continuation of ``reference`` after the longest matching suffix of the sequence.

    The last ``n`` tokens of the sequence (``n`` from ``max_ngram`` down to
    ``min_ngram``) are searched in the reference; among matches, the first one
    at or after the current alignment point wins, else the last one before it.
    With ``positional=True`` and no n-gram match, it proposes the reference
    from the position the sequence would have reached had it kept following the
    reference one token for one token since :meth:`set_reference` (this is what
    re-aligns immediately after a one-token swap, before any n-gram can match).
    Proposes nothing otherwise. Costs no model calls.
    """

    name = "lookup"

    def __init__(
        self,
        reference: Sequence[int] = (),
        *,
        max_ngram: int = 3,
        min_ngram: int = 1,
        positional: bool = False,
        device: torch.device | str = "cpu",
    ):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        self.max_ngram, self.min_ngram, self.positional = max_ngram, min_ngram, positional
        self.device = device
        self.set_reference(reference)

    def set_reference(self, reference: Sequence[int], *, start: int = 0, seq_len: int | None = None) -> None:
        """Follow ``reference``; ``reference[start]`` is expected after a sequence of ``seq_len`` tokens."""
        self.reference = list(reference)
        self._anchor = start  # reference index where the last proposal continued
        self._start, self._seq_len = start, seq_len

    def reset(self) -> None:
        self._anchor = self._start

    def match(self, seq: Sequence[int]) -> tuple[int, int] | None:
        """``(end, n)``: the reference index to continue from and the n-gram length that matched
        (``0`` for a positional match), or ``None``."""
        ref = self.reference
        for n in range(min(self.max_ngram, len(seq)), self.min_ngram - 1, -1):
            suffix = list(seq[-n:])
            best_after, best_before = None, None
            for j in range(0, len(ref) - n):
                if ref[j : j + n] == suffix:
                    end = j + n
                    if end >= self._anchor:
                        best_after = end
                        break
                    best_before = end
            end = best_after if best_after is not None else best_before
            if end is not None and end < len(ref):
                return end, n
        if self.positional and self._seq_len is not None:
            end = self._start + len(seq) - self._seq_len
            if 0 <= end < len(ref):
                return end, 0
        return None

    def continuation(self, end: int, k: int) -> Proposal:
        """The reference from index ``end``, at most ``k`` tokens; moves the alignment point there."""
        self._anchor = end
        toks = self.reference[end : end + k]
        return Proposal(torch.tensor(toks, dtype=torch.long, device=self.device), self.name)

    def propose(self, seq: Sequence[int], k: int) -> Proposal:
        found = self.match(seq) if k > 0 and self.reference else None
        if found is None:
            return Proposal(torch.empty(0, dtype=torch.long, device=self.device), self.name)
        return self.continuation(found[0], k)


class FallbackDrafter(Drafter):
    """Uses ``primary``'s proposal when it has one, else ``fallback``'s (e.g. lookup, then draft model)."""

    name = "fallback"

    def __init__(self, primary: Drafter, fallback: Drafter):
        self.primary, self.fallback = primary, fallback

    def reset(self) -> None:
        self.primary.reset()
        self.fallback.reset()

    def propose(self, seq: Sequence[int], k: int) -> Proposal:
        p = self.primary.propose(seq, k)
        if p.tokens.numel() > 0:
            return p
        return self.fallback.propose(seq, k)

    def accepted(self, length: int) -> None:
        self.primary.accepted(length)
        self.fallback.accepted(length)


class RejoinDrafter(Drafter):
    """Mining rollouts: the current response's own continuation while the rollout follows it,
    the draft model while it does not.

    After a one-token swap the target usually re-joins the original wording, but
    not always. A lookup proposal the target rejects costs a whole verify pass
    (on a CPU, a 16-token verify costs several 1-token steps), so trust is
    adaptive:

    * *trusted* (right after the swap, and after every fully accepted lookup
      proposal): propose the reference from any match (n-gram or positional),
      ``lookup_k`` tokens; ``lookup_k`` doubles after each fully accepted proposal,
      up to ``max_k``;
    * a lookup proposal rejected before its end makes the lookup *untrusted*
      and resets ``lookup_k`` to ``min_k``: from then on the draft model proposes
      (``fallback_k`` tokens) until the last ``rejoin_ngram`` tokens of the
      sequence occur in the reference again, i.e. the rollout has re-joined it.

    Only *which* tokens are proposed changes: verification is lossless, so the
    rollout is exactly the target's greedy continuation whichever drafter ran.
    """

    name = "rejoin"

    def __init__(
        self,
        lookup: LookupDrafter,
        fallback: Drafter,
        *,
        fallback_k: int = 5,
        min_k: int = 8,
        max_k: int = 32,
        rejoin_ngram: int = 3,
    ):
        if not 1 <= min_k <= max_k:
            raise ValueError("need 1 <= min_k <= max_k")
        self.lookup, self.fallback = lookup, fallback
        self.fallback_k, self.min_k, self.max_k, self.rejoin_ngram = fallback_k, min_k, max_k, rejoin_ngram
        self.reset()

    def reset(self) -> None:
        self.lookup.reset()
        self.fallback.reset()
        self.trusted, self.lookup_k = True, self.min_k
        self._seq_len, self._source, self._proposed = 0, "", 0
        self.lookup_proposals = self.fallback_proposals = 0

    def propose(self, seq: Sequence[int], k: int) -> Proposal:
        self._seq_len = len(seq)
        found = self.lookup.match(seq) if k > 0 and self.lookup.reference else None
        if found is not None and (self.trusted or found[1] >= self.rejoin_ngram):
            p = self.lookup.continuation(found[0], min(k, self.lookup_k))
            self.lookup_proposals += 1
        else:
            p = self.fallback.propose(seq, min(k, self.fallback_k))
            self.fallback_proposals += 1
        self._source, self._proposed = p.source, p.tokens.numel()
        return p

    def accepted(self, length: int) -> None:
        self.fallback.accepted(length)
        if self._source != self.lookup.name:
            return
        if length - self._seq_len >= self._proposed:
            self.trusted, self.lookup_k = True, min(2 * self.lookup_k, self.max_k)
        else:
            self.trusted, self.lookup_k = False, self.min_k
