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

Description: every judge has one JSON-able description, :meth:`Judge.describe`,
``{"kind": KIND, "name": NAME, **params, "threshold": T}``, from which the judge of
that registered kind rebuilds an equal judge (:meth:`Judge.from_description`; the
plugin registry's ``judge_from_description`` looks the kind up). ``kind`` is the
judge's registry name (``never``, ``always``, ``topk``, ``prob``, ``linear``, or a
plugin's), ``name`` a display name. A :class:`LinearJudge` carries its weights
inline (``"weights": {block: [floats]}``, float32 values, so the round trip is
exact); :meth:`Judge.summary` is the description without them, for logs.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


#: keys of a description that only inform (never passed to a judge's constructor)
DESCRIPTION_INFO_KEYS = ("kind", "name", "threshold", "spec")


class Judge(ABC):
    """Decides which mismatching draft tokens may be accepted.

    Subclasses implement :meth:`p_important`; :meth:`accept` applies the threshold.
    Set ``needs_draft_hidden`` when the judge reads the ``dd`` block.

    A judge class registered with the plugin hook ``register_judges`` also sets
    ``kind`` (its registry name) and, when ``--judge`` can name it, ``spec_form``
    (``"never"`` without an argument, ``"topk:K"`` with one; :meth:`from_spec` builds
    it). :meth:`params` returns the constructor's keyword arguments as JSON-able
    values: the default :meth:`describe` and :meth:`from_description` need nothing else.
    """

    name: str = "judge"
    needs_draft_hidden: bool = False
    threshold: float = 0.5
    #: registry name (``register_judges``), the ``kind`` of :meth:`describe`
    kind: str = ""
    #: how a ``--judge`` string names this judge (``"never"``, ``"topk:K"``); None: not from a string
    spec_form: str | None = None

    @abstractmethod
    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        """``[n]`` probability that accepting each draft token changes the task's answer."""

    def accept(self, feats: MismatchFeatures) -> torch.Tensor:
        """``[n]`` bool: True where the mismatching draft token may be accepted."""
        return self.p_important(feats) < self.threshold

    @classmethod
    def from_spec(cls, arg: str | None) -> Judge:
        """The judge ``--judge KIND`` (``arg`` None) or ``--judge KIND:ARG`` names; ValueError for a bad ``arg``."""
        if arg is not None:
            raise ValueError(f"judge kind {cls.kind!r} takes no argument")
        return cls()

    def params(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this judge with ``type(self)(**params)``."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The JSON-able description that :meth:`from_description` (of the registered ``kind``) rebuilds."""
        return {"kind": self.kind, "name": self.name, **self.params(), "threshold": self.threshold}

    def summary(self) -> dict[str, Any]:
        """:meth:`describe` without bulky values (weights), for logs and command output."""
        return self.describe()

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Judge:
        """Rebuild a judge from :meth:`describe`'s output (``kind`` already matched by the caller)."""
        params = {k: v for k, v in description.items() if k not in DESCRIPTION_INFO_KEYS}
        judge = cls(**params)
        if "threshold" in description:
            judge.threshold = _threshold_of(description["threshold"])
        return judge


def _threshold_of(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)


class NeverAccept(Judge):
    """Lossless speculative decoding: every mismatch is important."""

    name = "never"
    kind = spec_form = "never"
    threshold = 0.0

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        return torch.ones(feats.draft_tokens.shape[0], device=feats.draft_tokens.device)


class AlwaysAccept(Judge):
    """Accepts every draft token: output = draft proposals + one target (bonus) token per cycle."""

    name = "always"
    kind = spec_form = "always"
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

    name = kind = "linear"  # from a judge artifact (``autojudge.judges.artifact``), not from a --judge string

    def __init__(
        self, weights: dict[str, torch.Tensor], bias: float, threshold: float, blocks: tuple[str, ...]
    ):
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

    def params(self) -> dict[str, Any]:
        return {
            "blocks": list(self.blocks),
            "bias": self.bias,
            "weights": {b: self.weights[b].detach().to("cpu", torch.float32).tolist() for b in self.blocks},
        }

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.describe().items() if k != "weights"}
        return {**out, "block_dims": {b: int(self.weights[b].numel()) for b in self.blocks}}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> LinearJudge:
        blocks, weights, bias = (description.get(key) for key in ("blocks", "weights", "bias"))
        if not isinstance(blocks, (list, tuple)) or not all(isinstance(b, str) for b in blocks):
            raise ValueError(f"'blocks' must be a list of feature block names, got {blocks!r}")
        if not isinstance(weights, Mapping):
            raise ValueError("'weights' must map each feature block to a list of numbers")
        if isinstance(bias, bool) or not isinstance(bias, numbers.Real) or not math.isfinite(bias):
            raise ValueError(f"'bias' must be a finite number, got {bias!r}")
        tensors = {}
        for b, w in weights.items():
            try:
                t = torch.tensor(w, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"weights[{b!r}] is not a list of numbers ({e})") from e
            if t.dim() != 1 or not bool(torch.isfinite(t).all()):
                raise ValueError(f"weights[{b!r}] must be a flat list of finite numbers")
            tensors[b] = t
        return cls(tensors, float(bias), _threshold_of(description.get("threshold")), tuple(blocks))


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
    kind, spec_form = "topk", "topk:K"
    threshold = 0.5

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)

    @classmethod
    def from_spec(cls, arg: str | None) -> TopKJudge:
        if arg is None:
            raise ValueError("topk needs K: topk:K")
        return cls(int(arg))

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        rank = draft_rank(feats.target_logits, feats.draft_tokens)
        return (rank >= self.k).float()

    def params(self) -> dict[str, Any]:
        return {"k": self.k}


class ProbThresholdJudge(Judge):
    """Accept a mismatching draft token iff the target gives it probability ``>= p_min``."""

    name = kind = "prob"
    spec_form = "prob:P"
    threshold = 0.5

    def __init__(self, p_min: float):
        if isinstance(p_min, bool) or not isinstance(p_min, numbers.Real) or not 0.0 <= p_min <= 1.0:
            raise ValueError(f"p_min must be in [0, 1], got {p_min}")
        self.p_min = float(p_min)

    @classmethod
    def from_spec(cls, arg: str | None) -> ProbThresholdJudge:
        if arg is None:
            raise ValueError("prob needs P: prob:P")
        return cls(float(arg))

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        return (feats.extras[:, 0] < self.p_min).float()

    def params(self) -> dict[str, Any]:
        return {"p_min": self.p_min}
