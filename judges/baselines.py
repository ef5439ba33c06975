"""Baseline judges to compare AutoJudge with, and their offline scores on mined data.

All are :class:`autojudge.core.judge.Judge` subclasses and follow the engine's
rule (accept iff ``p_important < threshold``); the rule-based ones return hard
0/1 scores with ``threshold = 0.5`` so their decision is exact:

* :class:`NeverAccept` (re-exported): lossless speculative decoding.
* :class:`AlwaysAccept` (re-exported): accept every draft token.
* :class:`TopKJudge`: accept iff the draft token is among the target's top ``k``
  tokens (rank = number of tokens with a strictly larger target logit, so
  ties favour the draft token). At a mismatch the draft token is never the
  target's argmax (barring ties), so ``k = 1`` behaves like never-accept.
* :class:`ProbThresholdJudge`: accept iff the target's probability of the draft
  token is ``>= p_min``.

Offline scores (:func:`evaluate_baselines`) use the stored ``x[:, 0]``
(``p_draft``) for the probability baseline. Top-K needs the draft token's rank,
which the extras ``x`` (p_draft, entropy, margin) cannot give; it is scored only
when the mined shards carry the optional ``draft_rank`` tensor
(``docs/formats.md``), otherwise the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autojudge.core.judge import AlwaysAccept, NeverAccept, ProbThresholdJudge, TopKJudge, draft_rank
from autojudge.judges.calibrate import metrics_at, threshold_for_recall

__all__ = [
    "AlwaysAccept",
    "NeverAccept",
    "ProbThresholdJudge",
    "TopKJudge",
    "draft_rank",
    "evaluate_baselines",
]

DEFAULT_P_VALUES: tuple[float, ...] = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)
DEFAULT_K_VALUES: tuple[int, ...] = (2, 3, 5, 10)


def _row(name: str, labels: np.ndarray, p: np.ndarray, **params: Any) -> dict[str, Any]:
    m = metrics_at(labels, p, 0.5)
    return {
        "judge": name,
        **params,
        **{k: m[k] for k in ("recall", "precision", "accept_rate", "important_accepted")},
    }


def evaluate_baselines(
    labels: np.ndarray,
    p_draft: np.ndarray | None,
    ranks: np.ndarray | None = None,
    *,
    p_values: Sequence[float] = DEFAULT_P_VALUES,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    target_recall: float | None = 0.9,
) -> dict[str, Any]:
    """Offline recall/precision of the important class and accept rate of each baseline.

    Returns ``{"rows": [...], "notes": [...], "prob_at_target_recall": {...} | None}``:
    one row per judge setting; notes say what could not be computed and why.
    ``prob_at_target_recall`` is the most permissive probability cut whose recall
    still meets ``target_recall`` (for a like-for-like comparison with the judge).
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    rows = [_row("never", y, np.ones(y.size)), _row("always", y, np.zeros(y.size))]
    notes: list[str] = []
    at_recall = None
    if p_draft is None:
        notes.append("prob: not computable: the extras block 'x' was not loaded")
    else:
        pd = np.asarray(p_draft, dtype=np.float64).ravel()
        for p_min in p_values:
            rows.append(_row("prob", y, (pd < p_min).astype(np.float64), p_min=float(p_min)))
        if target_recall is not None and y.sum() > 0:
            score = 1.0 - pd  # accept iff score < t  <=>  p_draft > 1 - t
            t = threshold_for_recall(y, score, target_recall)
            at_recall = {"p_min_exclusive": 1.0 - t, **metrics_at(y, score, t)}
    if ranks is None:
        notes.append(
            "top_k: not computable: the mined shards lack the optional 'draft_rank' tensor "
            "(the extras x = p_draft, entropy, margin do not determine the rank)"
        )
    else:
        r = np.asarray(ranks).ravel()
        for k in k_values:
            rows.append(_row("top_k", y, (r >= k).astype(np.float64), k=int(k)))
    return {"rows": rows, "notes": notes, "prob_at_target_recall": at_recall}
