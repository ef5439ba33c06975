"""How good a judge the mined data buys: grouped cross-validation per feature set, with intervals.

:func:`study_judges` answers, for each feature set (``dt``, ``dt+x``, ``dd+dt``, ``dd+dt+x``):

* **ROC-AUC** of the important class, from out-of-fold predictions of a cross-validation
  *grouped by prompt* (every prompt's rows in one fold; a judge never scores mismatches of
  a prompt it was trained on), with a 95% interval from a bootstrap over prompts;
* the **accept rate at 90% recall**: the share of mismatches a judge could accept while
  still flagging 90% of the important ones (threshold set on the same out-of-fold scores,
  so it is the rate a calibrated judge reaches, not a held-out one), with its interval;
* the **answer-level view** of a threshold: the share of prompts in which at least one
  important mismatch is accepted at that 90%-recall threshold (a prompt whose answer a judged
  decode would likely change), and the accept rate at the largest threshold that lets at most
  ``prompt_budget`` (2%) of the prompts through (:func:`~autojudge.judges.calibrate.threshold_for_prompt_budget`),
  both with intervals; and, where the rows record correctness (``MinedArrays.harmful``), the share
  of prompts with a *harmful* mismatch (its swap made a correct answer wrong) accepted at that
  threshold: the offline estimate of the accuracy the threshold costs. The pooled AUC mixes
  ranking mismatches within a prompt with telling prompts the target gets wrong (where most swaps
  change the answer, at no cost in accuracy) from those it gets right; this column does not;
* a **learning curve**: the same AUC when each training fold keeps only 10 / 25 / 50 / 100%
  of its prompts (test folds unchanged), so one can see whether more mining still pays.

Each fold trains like ``aj train`` (:func:`~autojudge.judges.train.fit_feature_set`: standardise,
L2 logistic regression, ``C`` chosen on an inner split by prompt of the training fold).

Limits: all requested blocks are held in memory; a fold whose training prompts hold a single
class (few prompts, or a small learning-curve fraction) gives no predictions and is reported
(``folds_skipped``), its rows left out of that AUC; the bootstrap resamples prompts, the unit
the labels are correlated within, so its interval is wider than a row bootstrap's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autojudge.judges.calibrate import (
    metrics_at,
    prompts_with_important_accepted,
    threshold_for_prompt_budget,
    threshold_for_recall,
)
from autojudge.judges.dataset import MinedData, parse_feature_set, split_by_prompt_with_both_classes
from autojudge.judges.train import TrainConfig, fit_feature_set

STUDY_FEATURE_SETS: tuple[str, ...] = ("dt", "dt+x", "dd+dt", "dd+dt+x")
CURVE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class StudyConfig:
    """Knobs of :func:`study_judges` (``train`` is how each fold is fitted)."""

    feature_sets: tuple[str, ...] = STUDY_FEATURE_SETS
    folds: int = 5
    bootstrap: int = 1000
    fractions: tuple[float, ...] = CURVE_FRACTIONS
    recall: float = 0.9
    prompt_budget: float = 0.02
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"learning-curve fractions must be in (0, 1], got {self.fractions}")
        if not 0 < self.recall <= 1:
            raise ValueError(f"recall must be in (0, 1], got {self.recall}")
        if not 0 <= self.prompt_budget <= 1:
            raise ValueError(f"prompt budget must be in [0, 1], got {self.prompt_budget}")


def grouped_folds(prompt_ids: np.ndarray, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``folds`` test folds; prompts shuffled with ``seed`` and dealt round-robin."""
    uniq = np.array(sorted(set(np.asarray(prompt_ids).tolist())), dtype=object)
    if len(uniq) < folds:
        raise ValueError(
            f"{len(uniq)} prompts cannot fill {folds} folds grouped by prompt: mine more or use fewer folds"
        )
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[j]: i % folds for i, j in enumerate(order)}
    assignment = np.fromiter((fold_of[p] for p in prompt_ids), dtype=np.int64, count=len(prompt_ids))
    return [np.flatnonzero(assignment == f) for f in range(folds)]


def out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    prompt_ids: np.ndarray,
    folds: Sequence[np.ndarray],
    config: TrainConfig,
    *,
    fraction: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """``(p_important, folds_skipped)``: each row's probability from the fold that left it out (NaN if none)."""
    p = np.full(len(y), np.nan)
    skipped = 0
    rng = np.random.default_rng(seed)
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        if fraction < 1:
            prompts = np.array(sorted(set(prompt_ids[train].tolist())), dtype=object)
            keep = rng.choice(len(prompts), size=max(2, int(round(fraction * len(prompts)))), replace=False)
            kept = set(prompts[keep].tolist())
            train = train[np.fromiter((q in kept for q in prompt_ids[train]), dtype=bool, count=len(train))]
        try:
            inner_train, inner_val, _ = split_by_prompt_with_both_classes(
                prompt_ids[train], y[train], config.val_fraction, config.seed
            )
        except ValueError:  # too few prompts (or one class) in this training fold
            skipped += 1
            continue
        fit = fit_feature_set(x[train][inner_train], y[train][inner_train], x[train][inner_val],
                              y[train][inner_val], config=config)  # fmt: skip
        p[test] = fit.model.predict_proba(fit.scaler.transform(x[test]))[:, 1]
    return p, skipped


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def _accept_at_recall(y: np.ndarray, p: np.ndarray, recall: float) -> float:
    if y.sum() == 0:
        return float("nan")
    return float(metrics_at(y, p, threshold_for_recall(y, p, recall))["accept_rate"])


def _answer_level(
    y: np.ndarray,
    p: np.ndarray,
    pids: np.ndarray,
    recall: float,
    budget: float,
    harmful: np.ndarray | None = None,
) -> dict[str, float]:
    """At the recall threshold, the prompts letting an important (and a harmful) mismatch through;
    the accept rate at the prompt budget. NaN where a figure is undefined (no important rows; no
    harmful row, or correctness not recorded)."""
    nan = float("nan")
    if y.sum() == 0:
        return {
            "prompts_leaking_at_recall": nan,
            "accept_at_prompt_budget": nan,
            "prompts_harmed_at_recall": nan,
        }
    t_recall = threshold_for_recall(y, p, recall)
    harmed = nan
    if harmful is not None and harmful.any():
        harmed = prompts_with_important_accepted(harmful.astype(np.int64), p, pids, t_recall)
    t_budget = threshold_for_prompt_budget(y, p, pids, budget)
    return {
        "prompts_leaking_at_recall": prompts_with_important_accepted(y, p, pids, t_recall),
        "accept_at_prompt_budget": float(metrics_at(y, p, t_budget)["accept_rate"]),
        "prompts_harmed_at_recall": harmed,
    }


def bootstrap_over_prompts(
    y: np.ndarray,
    p: np.ndarray,
    prompt_ids: np.ndarray,
    n: int,
    seed: int,
    recall: float,
    prompt_budget: float = 0.02,
    harmful: np.ndarray | None = None,
) -> dict[str, list[float] | None]:
    """95% percentile intervals of AUC, accept-at-recall and the answer-level figures, resampling prompts.

    A prompt drawn twice counts as two prompts (each draw gets its own id).
    """
    keys = (
        "auc_ci95",
        "accept_ci95",
        "prompts_leaking_ci95",
        "accept_at_prompt_budget_ci95",
        "prompts_harmed_ci95",
    )
    if n <= 0:
        return dict.fromkeys(keys)
    groups: dict[Any, list[int]] = {}
    for i, q in enumerate(prompt_ids.tolist()):
        groups.setdefault(q, []).append(i)
    rows = [np.array(v) for v in groups.values()]
    rng = np.random.default_rng(seed)
    series: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n):
        draws = rng.integers(0, len(rows), len(rows))
        idx = np.concatenate([rows[j] for j in draws])
        draw_ids = np.concatenate([np.full(len(rows[j]), i) for i, j in enumerate(draws)])
        yy, pp = y[idx], p[idx]
        if len(np.unique(yy)) < 2:
            continue
        answer = _answer_level(
            yy, pp, draw_ids, recall, prompt_budget, None if harmful is None else harmful[idx]
        )
        values = (_auc(yy, pp), _accept_at_recall(yy, pp, recall), answer["prompts_leaking_at_recall"],
                  answer["accept_at_prompt_budget"], answer["prompts_harmed_at_recall"])  # fmt: skip
        for k, v in zip(keys, values, strict=True):
            if not np.isnan(v):
                series[k].append(v)
    ci = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None  # noqa: E731
    return {k: ci(v) for k, v in series.items()}


def study_judges(data: MinedData, config: StudyConfig = StudyConfig()) -> dict[str, Any]:
    """The study of :mod:`autojudge.judges.study` on ``data`` (which must hold every block the sets need)."""
    t0 = time.perf_counter()
    y = np.asarray(data.labels).astype(np.int64)
    pids = np.asarray(data.prompt_ids)
    harm = data.harmful if data.harmful is not None else np.zeros(len(y), dtype=bool)  # all False: no figure
    folds = grouped_folds(pids, config.folds, config.seed)
    rows = []
    for name in config.feature_sets:
        blocks = parse_feature_set(name)
        x = data.matrix(blocks)
        curve: dict[str, float | None] = {}
        curve_skipped: dict[str, int] = {}
        row: dict[str, Any] = {"feature_set": "+".join(blocks), "dims": int(x.shape[1])}
        for frac in sorted(set(config.fractions) | {1.0}, reverse=True):
            p, skipped = out_of_fold(x, y, pids, folds, config.train, fraction=frac, seed=config.seed)
            ok = ~np.isnan(p)
            auc = _auc(y[ok], p[ok]) if ok.any() else float("nan")
            if frac in config.fractions:
                curve[f"{frac:g}"] = None if np.isnan(auc) else auc
                curve_skipped[f"{frac:g}"] = skipped
            if frac == 1.0:
                row.update(
                    auc=auc,
                    accept_at_recall=_accept_at_recall(y[ok], p[ok], config.recall),
                    **_answer_level(y[ok], p[ok], pids[ok], config.recall, config.prompt_budget, harm[ok]),
                    rows_scored=int(ok.sum()),
                    folds_skipped=skipped,
                    **bootstrap_over_prompts(
                        y[ok],
                        p[ok],
                        pids[ok],
                        config.bootstrap,
                        config.seed,
                        config.recall,
                        config.prompt_budget,
                        harm[ok],
                    ),
                )
        row["learning_curve"] = curve
        row["learning_curve_folds_skipped"] = curve_skipped  # folds without both classes to train on
        rows.append(row)
    n_prompts = len(set(pids.tolist()))
    return {
        "labels": int(len(y)),
        "important": int(y.sum()),
        "prompts": n_prompts,
        "excluded_truncated": int(getattr(data, "excluded_truncated", 0)),
        "folds": config.folds,
        "bootstrap": config.bootstrap,
        "recall": config.recall,
        "prompt_budget": config.prompt_budget,
        "fractions": list(config.fractions),
        "training_prompts_at_100": round(n_prompts * (config.folds - 1) / config.folds, 1),
        "feature_sets": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def study_markdown(study: dict[str, Any]) -> str:
    """The study as a Markdown table (one row per feature set) with a one-line header of the data."""

    def num(v: Any, fmt: str = ".3f") -> str:
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    def ci(v: Any, fmt: str = ".3f") -> str:
        return "-" if not v else f"[{format(v[0], fmt)}, {format(v[1], fmt)}]"

    recall = f"{study['recall']:.0%}"
    fracs = [f"{f:g}" for f in study["fractions"]]
    head = (
        f"{study['labels']} labels ({study['important']} important) from {study['prompts']} prompts"
        f" ({study['excluded_truncated']} truncated labels excluded); {study['folds']}-fold cross-validation"
        f" grouped by prompt, {study['bootstrap']} bootstrap resamples of prompts.\n\n"
    )
    budget = f"{study.get('prompt_budget', 0.02):.0%}"
    cols = ["feature set", "dims", "ROC-AUC", "95% CI", f"accept rate at {recall} recall", "95% CI"]
    cols += [f"prompts with an important mismatch accepted, at {recall} recall", "95% CI"]
    cols += [f"prompts with a harmful mismatch accepted, at {recall} recall", "95% CI"]
    cols += [f"accept rate, <= {budget} of prompts with an important one", "95% CI"]
    cols += [f"AUC, {float(f):.0%} of prompts" for f in fracs]
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|",
    ]
    for r in study["feature_sets"]:
        cells = [f"`{r['feature_set']}`", str(r["dims"]), num(r["auc"]), ci(r["auc_ci95"]),
                 num(r["accept_at_recall"]), ci(r["accept_ci95"]),
                 num(r.get("prompts_leaking_at_recall")), ci(r.get("prompts_leaking_ci95")),
                 num(r.get("prompts_harmed_at_recall")), ci(r.get("prompts_harmed_ci95")),
                 num(r.get("accept_at_prompt_budget")), ci(r.get("accept_at_prompt_budget_ci95"))]  # fmt: skip
        for f in fracs:  # a point from fewer folds (training prompts of one class) says so
            skipped = r.get("learning_curve_folds_skipped", {}).get(f, 0)
            cell = num(r["learning_curve"].get(f))
            cells.append(f"{cell} ({study['folds'] - skipped}/{study['folds']} folds)" if skipped else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"
