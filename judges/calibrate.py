"""Choosing the judge's threshold: offline curves on validation data and accuracy budgets.

Conventions (the engine's rule, ``autojudge.core.judge``): a mismatching draft
token is accepted iff ``p_important < threshold``. For a threshold ``t``:

* *recall* = fraction of the **important** mismatches that are rejected
  (``p >= t``), i.e. kept safe; 1.0 at ``t = 0``;
* *precision* = fraction of the rejected mismatches that are important
  (``nan`` when nothing is rejected);
* *accept rate* = fraction of all mismatches accepted (``p < t``).

Limits: these are per-mismatch figures on the mined data. Accepting a token
changes everything after it, so task accuracy at a threshold must be measured
by decoding (a later stage); :func:`pick_threshold_within_budget` turns such
measurements into a choice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Thresholds always reported in a table, besides the chosen one and validation quantiles.
DEFAULT_GRID: tuple[float, ...] = (
    0.0,
    0.01,
    0.02,
    0.05,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
)


def _check(labels: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ in length")
    if y.size == 0:
        raise ValueError("no examples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (1 = important)")
    return y, p


def _check_grouped(
    labels: np.ndarray, p: np.ndarray, prompt_ids: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_check` plus the rows' prompt ids (one per row)."""
    y, p = _check(labels, p)
    pids = np.asarray(prompt_ids, dtype=object).ravel()
    if pids.shape != y.shape:
        raise ValueError(f"prompt ids {pids.shape} and labels {y.shape} differ in length")
    return y, p, pids


def metrics_at(labels: np.ndarray, p_important: np.ndarray, threshold: float) -> dict[str, float]:
    """Recall/precision of the important class and accept rate at one threshold."""
    y, p = _check(labels, p_important)
    rejected = p >= threshold
    n_pos = int(y.sum())
    tp = int((rejected & (y == 1)).sum())
    n_rej = int(rejected.sum())
    return {
        "threshold": float(threshold),
        "recall": tp / n_pos if n_pos else float("nan"),
        "precision": tp / n_rej if n_rej else float("nan"),
        "accept_rate": 1.0 - n_rej / y.size,
        "important_accepted": n_pos - tp,
        "n": int(y.size),
    }


def threshold_table(
    labels: np.ndarray,
    p_important: np.ndarray,
    thresholds: Iterable[float] | None = None,
    *,
    quantiles: int = 20,
) -> list[dict[str, float]]:
    """Rows of :func:`metrics_at` for ascending thresholds.

    Default thresholds: :data:`DEFAULT_GRID` plus ``quantiles`` validation quantiles
    of ``p_important`` (rounded to 6 digits so the table stays readable).
    """
    y, p = _check(labels, p_important)
    if thresholds is None:
        qs = np.quantile(p, np.linspace(0, 1, quantiles + 1)) if quantiles > 0 else []
        thresholds = set(DEFAULT_GRID) | {round(float(q), 6) for q in qs}
    ts = sorted({float(t) for t in thresholds})
    return [metrics_at(y, p, t) for t in ts]


def threshold_for_recall(labels: np.ndarray, p_important: np.ndarray, target_recall: float = 0.9) -> float:
    """The largest threshold whose recall of important mismatches is >= ``target_recall``.

    Exact (no grid): with the important examples' probabilities sorted in
    descending order ``s``, recall(t) >= r iff at least ``k = ceil(r * P)`` of them
    satisfy ``p >= t``, so the answer is ``s[k-1]``. ``target_recall = 1`` keeps every
    validation important token; the result may be 0 (never accept).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    y, p = _check(labels, p_important)
    pos = np.sort(p[y == 1])[::-1]
    if pos.size == 0:
        raise ValueError("no important examples: cannot calibrate a recall target")
    k = math.ceil(target_recall * pos.size - 1e-9)
    return float(pos[max(k, 1) - 1])


def prompts_with_important_accepted(
    labels: np.ndarray, p_important: np.ndarray, prompt_ids: Sequence[Any], threshold: float
) -> float:
    """Share of prompts with at least one important mismatch accepted (``p < threshold``).

    The answer-level view of a threshold: by its label, an important mismatch changed the
    answer when the target finished after it, so a prompt counted here is one whose answer a
    judged decode would likely change. Every prompt counts in the denominator, also those with
    no important mismatch. Limit: labels come from one trajectory per prompt (the mined one),
    while a judged decode, once it accepts a token, may meet other mismatches.
    """
    y, p, pids = _check_grouped(labels, p_important, prompt_ids)
    leaking = {
        q
        for q, yy, pp in zip(pids.tolist(), y.tolist(), p.tolist(), strict=True)
        if yy == 1 and pp < threshold
    }
    return len(leaking) / len(set(pids.tolist()))


def threshold_for_prompt_budget(
    labels: np.ndarray, p_important: np.ndarray, prompt_ids: Sequence[Any], budget: float
) -> float:
    """The largest threshold at which at most ``budget`` of the prompts accept an important mismatch.

    Exact: with ``m_q`` the smallest probability among prompt ``q``'s important mismatches, a
    threshold ``t`` lets prompt ``q`` through iff ``m_q < t``; allowing ``L = floor(budget * Q)``
    of the ``Q`` prompts through gives ``t`` = the ``(L+1)``-th smallest ``m_q`` (ties may let
    fewer through), or ``inf`` (accept everything) when at most ``L`` prompts have an important
    mismatch at all. A per-answer calibration, as opposed to :func:`threshold_for_recall`'s
    per-mismatch one: with several mismatches accepted per answer, a 90% recall per mismatch
    lets far more than 10% of the answers through.
    """
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"budget must be in [0, 1], got {budget}")
    y, p, pids = _check_grouped(labels, p_important, prompt_ids)
    smallest: dict[Any, float] = {}
    for q, yy, pp in zip(pids.tolist(), y.tolist(), p.tolist(), strict=True):
        if yy == 1:
            smallest[q] = min(pp, smallest.get(q, math.inf))
    allowed = math.floor(budget * len(set(pids.tolist())) + 1e-9)
    m = sorted(smallest.values())
    return math.inf if allowed >= len(m) else float(m[allowed])


def pick_threshold_within_budget(
    accuracies: Mapping[float, float] | Sequence[tuple[float, float]],
    reference_accuracy: float,
    max_drop: float = 0.01,
    *,
    monotone: bool = False,
) -> float | None:
    """Most aggressive (largest) threshold whose accuracy is >= ``reference_accuracy - max_drop``.

    ``accuracies`` maps threshold -> measured task accuracy (same units as
    ``reference_accuracy`` and ``max_drop``; with accuracies in [0, 1], "one point"
    is ``0.01``). Typically the reference is target-only (or lossless SD)
    accuracy. With ``monotone=True`` the scan stops at the first threshold
    (ascending) that breaks the budget, so a lucky high threshold past a failing
    one is not chosen. Returns ``None`` when no threshold is within budget.
    A pure function: no I/O, no randomness.
    """
    items = list(accuracies.items()) if isinstance(accuracies, Mapping) else [tuple(x) for x in accuracies]
    if max_drop < 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    floor = reference_accuracy - max_drop
    best: float | None = None
    for t, acc in sorted((float(t), float(a)) for t, a in items):
        if math.isnan(t) or math.isnan(acc):
            raise ValueError("thresholds and accuracies must not be NaN")
        if acc >= floor - 1e-12:
            best = t
        elif monotone:
            break
    return best


def curve_summary(row: Mapping[str, Any]) -> str:
    """One-line human summary of a :func:`metrics_at` row."""
    return (
        f"threshold {row['threshold']:.4g}: recall {row['recall']:.3f}, "
        f"precision {row['precision']:.3f}, accept rate {row['accept_rate']:.3f}"
    )
