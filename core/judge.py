"""The judge interface used by the decoding engine at draft/target mismatches.

At each verification cycle the engine compares the k draft tokens with the
target's greedy choices. From the first mismatch on, it builds one
:class:`MismatchFeatures` batch for the window positions that still need a
decision and asks the judge which mismatching draft tokens are *unimportant*
(safe to accept). Everything stays on the model's device; the engine performs
the only host synchronisation of the cycle after the judge has answered.

Feature blocks (names shared with mining, training and the judge artifact):

* ``dt``: target final-layer hidden state (after the final norm) at the
  position that holds the draft token. Free at verification time.
* ``dd``: the draft model's final hidden state at the position holding the
  draft token. Costs a draft forward of the last draft token when the mismatch
  is at the window's end.
* ``x``: cheap extras from the target's logits predicting that position:
  probability of the draft token, entropy (nats), top-1 minus top-2 probability.

Rule: a judge returns ``p_important``; a mismatching draft token is accepted iff
``p_important < threshold``. Threshold 0 therefore never accepts and reproduces
lossless greedy speculative decoding exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

FEATURE_BLOCKS = ("dd", "dt", "x")
EXTRAS = ("p_draft", "entropy", "margin")


def compute_extras(logits: torch.Tensor, draft_tokens: torch.Tensor) -> torch.Tensor:
    """``[n, 3]`` float32 extras (p_draft, entropy, margin) from target logits ``[n, V]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    p_draft = p.gather(-1, draft_tokens.view(-1, 1)).squeeze(-1)
    entropy = -(p * logp).sum(-1)
    top2 = p.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    return torch.stack([p_draft, entropy, margin], dim=-1)


@dataclass
class MismatchFeatures:
    """Features for ``n`` window positions of one verification cycle (all tensors on the model device).

    ``target_logits[i]`` is the target's distribution for the position of
    ``draft_tokens[i]``; ``target_tokens[i]`` its argmax. Hidden states are taken
    at the position that *holds* the draft token.
    """

    draft_tokens: torch.Tensor  # [n] long
    target_tokens: torch.Tensor  # [n] long
    target_logits: torch.Tensor  # [n, V]
    target_hidden: torch.Tensor  # [n, H_target]
    draft_hidden: torch.Tensor | None = None  # [n, H_draft], present when the judge needs it
    _extras: torch.Tensor | None = field(default=None, repr=False)

    @property
    def extras(self) -> torch.Tensor:
        """``[n, 3]`` float32 (p_draft, entropy, margin), computed once on first use."""
        if self._extras is None:
            self._extras = compute_extras(self.target_logits, self.draft_tokens)
        return self._extras

    def block(self, name: str) -> torch.Tensor:
        if name == "dt":
            return self.target_hidden
        if name == "dd":
            if self.draft_hidden is None:
                raise ValueError("this judge needs draft hidden states ('dd') but none were computed")
            return self.draft_hidden
        if name == "x":
            return self.extras
        raise ValueError(f"unknown feature block {name!r}; known: {FEATURE_BLOCKS}")


class Judge(ABC):
    """Decides which mismatching draft tokens may be accepted.

    Subclasses implement :meth:`p_important`; :meth:`accept` applies the threshold.
    Set ``needs_draft_hidden`` when the judge reads the ``dd`` block.
    """

    name: str = "judge"
    needs_draft_hidden: bool = False
    threshold: float = 0.5

    @abstractmethod
    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        """``[n]`` probability that accepting each draft token changes the task's answer."""

    def accept(self, feats: MismatchFeatures) -> torch.Tensor:
        """``[n]`` bool: True where the mismatching draft token may be accepted."""
        return self.p_important(feats) < self.threshold

    def describe(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}


class NeverAccept(Judge):
    """Lossless speculative decoding: every mismatch is important."""

    name = "never"
    threshold = 0.0

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        return torch.ones(feats.draft_tokens.shape[0], device=feats.draft_tokens.device)


class AlwaysAccept(Judge):
    """Accepts every draft token: output = draft proposals + one target (bonus) token per cycle."""

    name = "always"
    threshold = 1.0

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        return torch.zeros(feats.draft_tokens.shape[0], device=feats.draft_tokens.device)


class LinearJudge(Judge):
    """The trained AutoJudge classifier in its fused inference form.

    ``p_important = sigmoid(sum_b features[b] @ weights[b] + bias)`` with
    standardisation already folded into the weights (``w' = w / scale``,
    ``b' = b - sum(w * mean / scale)``). One dot product per feature block, on
    the features' device; no host synchronisation.
    """

    name = "linear"

    def __init__(self, weights: dict[str, torch.Tensor], bias: float, threshold: float, blocks: tuple[str, ...]):
        unknown = [b for b in blocks if b not in FEATURE_BLOCKS]
        if unknown:
            raise ValueError(f"unknown feature blocks {unknown}; known: {FEATURE_BLOCKS}")
        if set(weights) != set(blocks):
            raise ValueError(f"weights for {sorted(weights)} do not match feature blocks {list(blocks)}")
        self.blocks = tuple(blocks)
        self.weights = {b: weights[b].float() for b in blocks}
        self.bias = float(bias)
        self.threshold = float(threshold)
        self.needs_draft_hidden = "dd" in self.blocks
        self._device: torch.device | None = None

    def to(self, device: torch.device | str) -> LinearJudge:
        self.weights = {b: w.to(device) for b, w in self.weights.items()}
        self._device = torch.device(device)
        return self

    def logits(self, feats: MismatchFeatures) -> torch.Tensor:
        z = None
        for b in self.blocks:
            x = feats.block(b).float()
            w = self.weights[b]
            if w.device != x.device:
                w = self.weights[b] = w.to(x.device)
            term = x @ w
            z = term if z is None else z + term
        return z + self.bias

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        return torch.sigmoid(self.logits(feats))

    def describe(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "blocks": list(self.blocks)}


def draft_rank(target_logits: torch.Tensor, draft_tokens: torch.Tensor) -> torch.Tensor:
    """``[n]`` int32: how many vocabulary tokens have a strictly larger target logit than the draft token.

    0 means the draft token is (tied for) the target's argmax. This is what the
    optional mined tensor ``draft_rank`` stores.
    """
    logits = target_logits.float()
    own = logits.gather(-1, draft_tokens.view(-1, 1).long())
    return (logits > own).sum(-1).to(torch.int32)


class TopKJudge(Judge):
    """Accept a mismatching draft token iff it is in the target's top ``k`` (by logit)."""

    name = "top_k"
    threshold = 0.5

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        rank = draft_rank(feats.target_logits, feats.draft_tokens)
        return (rank >= self.k).float()

    def describe(self) -> dict:
        return {**super().describe(), "k": self.k}


class ProbThresholdJudge(Judge):
    """Accept a mismatching draft token iff the target gives it probability ``>= p_min``."""

    name = "prob"
    threshold = 0.5

    def __init__(self, p_min: float):
        if not 0.0 <= p_min <= 1.0:
            raise ValueError(f"p_min must be in [0, 1], got {p_min}")
        self.p_min = float(p_min)

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        return (feats.extras[:, 0] < self.p_min).float()

    def describe(self) -> dict:
        return {**super().describe(), "p_min": self.p_min}
