"""Training the AutoJudge classifier: standardisation + L2 logistic regression per feature set.

For each feature set (``dt``, ``dt+x``, ``dd+dt``, ``dd+dt+x``, or any ``+``-joined
blocks) on one split **by prompt** (:func:`autojudge.judges.dataset.split_by_prompt`):

1. fit ``StandardScaler`` on the training rows;
2. for each ``C`` of a small grid, smallest first, fit ``LogisticRegression(solver="lbfgs")``
   (warm-started from the previous ``C``) and score ROC-AUC of the important class on
   the validation rows; keep the best ``C`` (the smallest one on ties); stop early after
   ``patience`` values without improvement (``TrainConfig.patience``, default 2);
3. fold the scaler into the weights: ``w' = w / scale``, ``b' = b - sum(w * mean / scale)``.

The saved judge uses the chosen feature set (default: best validation AUC) and a
threshold calibrated on validation for a target recall of important mismatches
(:mod:`autojudge.judges.calibrate`).

Limits: the final model is the one fitted on the training rows only (validation
stays held out for the threshold), so it sees ``1 - val_fraction`` of the data.
The whole design matrix is held in memory (float32). lbfgs on unscaled data
would be slow; standardisation is what keeps ``max_iter`` small.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from autojudge.core.judge import LinearJudge
from autojudge.judges.baselines import evaluate_baselines
from autojudge.judges.calibrate import metrics_at, threshold_for_recall, threshold_table
from autojudge.judges.dataset import MinedData, parse_feature_set, split_by_prompt_with_both_classes

DEFAULT_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
RECALL_TARGETS: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of :func:`train_judges`. ``class_weight`` is ``None`` or ``"balanced"``.

    ``patience``: the grid is walked from the smallest ``C`` up (each fit warm-started
    from the previous one) and stops after ``patience`` consecutive values without a
    better validation AUC; ``None`` fits every ``C``. Large ``C`` fits are the slow
    ones and, on hidden states, the overfitting ones.
    """

    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    val_fraction: float = 0.2
    seed: int = 0
    class_weight: str | None = None
    max_iter: int = 300
    tol: float = 1e-4
    target_recall: float = 0.9
    patience: int | None = 2
    #: when no prompt-grouped split holds both classes on both sides (too few prompts), train on
    #: every row with ``C = in_sample_c`` and calibrate on the same rows, flagged ``held_out: false``
    #: (optimistic: there is no held-out AUC). ``False``: raise instead.
    in_sample_fallback: bool = False
    in_sample_c: float = 1e-2

    def __post_init__(self) -> None:
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ValueError(f"c_grid must be positive values, got {self.c_grid}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be >= 1 or None (try the whole grid)")


def fold_standardization(
    coef: np.ndarray, intercept: float, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, float]:
    """``(w / scale, b - sum(w * mean / scale))`` computed in float64: one affine map on raw features."""
    coef = np.asarray(coef, dtype=np.float64).ravel()
    scale = np.asarray(scale, dtype=np.float64).ravel()
    mean = np.asarray(mean, dtype=np.float64).ravel()
    w = coef / scale
    return w, float(intercept - np.dot(w, mean))


@dataclass
class FeatureSetResult:
    """One feature set's fit: the chosen ``C``, validation scores and the folded weights."""

    feature_set: str
    blocks: tuple[str, ...]
    block_dims: dict[str, int]
    best_c: float
    val_auc: float
    train_auc: float
    auc_by_c: dict[float, float]
    fit_seconds: float
    n_iter: int
    converged: bool
    weight: np.ndarray  # folded, float64, concatenated in block order
    bias: float
    p_val: np.ndarray = field(repr=False)
    scaler: Any = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)

    def block_weights(self) -> dict[str, np.ndarray]:
        """Folded weights split per block (float32)."""
        out, start = {}, 0
        for b in self.blocks:
            d = self.block_dims[b]
            out[b] = self.weight[start : start + d].astype(np.float32)
            start += d
        return out

    def linear_judge(self, threshold: float) -> LinearJudge:
        import torch

        ws = {b: torch.from_numpy(w) for b, w in self.block_weights().items()}
        return LinearJudge(ws, self.bias, threshold, self.blocks)

    @property
    def best_c_at_edge(self) -> bool:
        """True when the best ``C`` is the smallest or largest tried: widen the grid."""
        return len(self.auc_by_c) > 1 and self.best_c in (min(self.auc_by_c), max(self.auc_by_c))

    def summary(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "dims": sum(self.block_dims.values()),
            "best_c": self.best_c,
            "val_auc": self.val_auc,
            "train_auc": self.train_auc,
            "auc_by_c": {str(c): a for c, a in self.auc_by_c.items()},
            "best_c_at_grid_edge": self.best_c_at_edge,
            "fit_seconds": round(self.fit_seconds, 3),
            "n_iter": self.n_iter,
            "converged": self.converged,
        }


def fit_feature_set(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    config: TrainConfig = TrainConfig(),
    feature_set: str = "custom",
    blocks: Sequence[str] = (),
    block_dims: dict[str, int] | None = None,
) -> FeatureSetResult:
    """Standardise, fit one logistic regression per ``C`` and keep the best by validation AUC.

    Works on any matrices; ``blocks``/``block_dims`` (the column layout) are only needed
    to split the folded weights per block and build a :class:`LinearJudge`.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    for name, y in (("training", y_train), ("validation", y_val)):
        if len(np.unique(y)) < 2:
            raise ValueError(
                f"the {name} rows hold a single class; need both important and unimportant mismatches"
            )
    t0 = time.perf_counter()
    scaler = StandardScaler().fit(x_train)
    xs_train = scaler.transform(x_train)
    xs_val = scaler.transform(x_val)
    best = None
    auc_by_c: dict[float, float] = {}
    stale = 0
    clf = LogisticRegression(
        solver="lbfgs",
        max_iter=config.max_iter,
        tol=config.tol,
        class_weight=config.class_weight,
        warm_start=True,
    )
    for c in sorted(config.c_grid):
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xs_train, y_train)
        auc = float(roc_auc_score(y_val, clf.decision_function(xs_val)))
        auc_by_c[c] = auc
        if best is None or auc > best[0]:
            best, stale = (auc, c, copy.deepcopy(clf)), 0
        else:
            stale += 1
            if config.patience is not None and stale >= config.patience:
                break
    assert best is not None
    auc, c, clf = best
    n_iter = int(np.max(clf.n_iter_))
    weight, bias = fold_standardization(clf.coef_[0], float(clf.intercept_[0]), scaler.mean_, scaler.scale_)
    p_val = clf.predict_proba(xs_val)[:, 1]
    train_auc = float(roc_auc_score(y_train, clf.decision_function(xs_train)))
    dims = dict(block_dims or {"features": x_train.shape[1]})
    return FeatureSetResult(
        feature_set=feature_set,
        blocks=tuple(blocks) or tuple(dims),
        block_dims=dims,
        best_c=c,
        val_auc=auc,
        train_auc=train_auc,
        auc_by_c=auc_by_c,
        fit_seconds=time.perf_counter() - t0,
        n_iter=n_iter,
        converged=n_iter < config.max_iter,
        weight=weight,
        bias=bias,
        p_val=p_val,
        scaler=scaler,
        model=clf,
    )


@dataclass(frozen=True)
class JudgeBrief:
    """The saved judge of a :class:`TrainResult` in brief; :meth:`as_dict` is its JSON record, in field order."""

    chosen: str  # the feature set, e.g. "dd+dt"
    threshold: float  # calibrated on validation for ``TrainConfig.target_recall``
    val_auc: float
    train_auc: float
    n_labels: int | None
    split: dict[str, Any]
    at_threshold: dict[str, float]

    @property
    def in_sample_note(self) -> str | None:
        """Why the validation metrics are in-sample (too few prompts for a held-out split); None when held out."""
        return None if self.split["held_out"] else self.split["note"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def single_class_reason(labels: np.ndarray) -> str | None:
    """Why no judge can be trained on ``labels``: they hold one class only. None when both occur."""
    classes = set(np.unique(labels).tolist())
    if len(classes) >= 2:
        return None
    kind = "important" if classes == {1} else "unimportant"
    return f"all {len(labels)} mined mismatches are {kind}: a judge needs both classes"


@dataclass
class TrainResult:
    """Everything :func:`train_judges` learned: per-set fits, the chosen one and its calibration."""

    meta: dict[str, Any]
    config: TrainConfig
    results: dict[str, FeatureSetResult]
    chosen: str
    threshold: float
    at_threshold: dict[str, float]
    table: list[dict[str, float]]
    baselines: dict[str, Any]
    split: dict[str, Any]
    seconds: float
    y_val: np.ndarray = field(repr=False)
    n_labels: int | None = None  # labelled mismatches trained on (all rows, training + validation)
    #: the prompts the labels came from (recorded in the artifact, so ``aj run --judge`` validates elsewhere)
    prompt_ids: list[str] = field(default_factory=list)

    @property
    def best(self) -> FeatureSetResult:
        return self.results[self.chosen]

    def brief(self) -> JudgeBrief:
        """The chosen judge in brief: what ``aj run`` records (state.json, summary.json ``training``)."""
        b = self.best
        return JudgeBrief(chosen=self.chosen, threshold=self.threshold, val_auc=b.val_auc, train_auc=b.train_auc,
                          n_labels=self.n_labels, split=self.split, at_threshold=self.at_threshold)  # fmt: skip

    def judge(self) -> LinearJudge:
        return self.best.linear_judge(self.threshold)

    def recall_curve(self, targets: Sequence[float] = RECALL_TARGETS) -> list[dict[str, float]]:
        """For each recall target: the largest threshold meeting it on validation and its metrics."""
        p = self.best.p_val
        return [
            {"target_recall": r, **metrics_at(self.y_val, p, threshold_for_recall(self.y_val, p, r))}
            for r in targets
        ]

    def report(self) -> dict[str, Any]:
        """JSON-able summary (what ``aj train`` writes to ``*.report.json``)."""
        from autojudge.core import __version__

        per_set = {}
        for name, r in self.results.items():
            row = r.summary()
            try:
                t = threshold_for_recall(self.y_val, r.p_val, self.config.target_recall)
                row["at_target_recall"] = metrics_at(self.y_val, r.p_val, t)
            except ValueError:
                row["at_target_recall"] = None
            per_set[name] = row
        return {
            "task": self.meta.get("task"),
            "draft": self.meta.get("draft"),
            "target": self.meta.get("target"),
            "library_version": __version__,
            "config": {
                "c_grid": list(self.config.c_grid),
                "val_fraction": self.config.val_fraction,
                "seed": self.config.seed,
                "class_weight": self.config.class_weight,
                "max_iter": self.config.max_iter,
                "target_recall": self.config.target_recall,
                "patience": self.config.patience,
            },
            "split": self.split,
            "feature_sets": per_set,
            "chosen": self.chosen,
            "threshold": self.threshold,
            "at_threshold": self.at_threshold,
            "recall_curve": self.recall_curve(),
            "threshold_table": self.table,
            "baselines": self.baselines,
            "seconds": round(self.seconds, 3),
        }

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write the judge artifact and ``<stem>.report.json`` beside it; returns both paths."""
        import json

        from autojudge.judges.artifact import jsonable, save_judge

        best = self.best
        report = jsonable(self.report())
        metrics = {
            "val_auc": best.val_auc,
            "train_auc": best.train_auc,
            "best_c": best.best_c,
            "at_threshold": self.at_threshold,
            "target_recall": self.config.target_recall,
            "split": self.split,
            "auc_by_feature_set": {k: r.val_auc for k, r in self.results.items()},
        }
        out = save_judge(
            path,
            best.block_weights(),
            best.bias,
            best.blocks,
            threshold=self.threshold,
            draft=self.meta["draft"],
            target=self.meta["target"],
            task=self.meta.get("task"),
            extra={
                "threshold_table": self.table,
                "metrics": metrics,
                "training": report["config"],
                "mined": {
                    "split": self.meta.get("split"),
                    "settings": self.meta.get("settings"),
                    "prompt_ids": self.prompt_ids,
                },  # fmt: skip
            },
        )
        report_path = report_path_for(out)
        tmp = report_path.with_name(report_path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(report_path)
        return out, report_path


def report_path_for(artifact: str | Path) -> Path:
    """``judge.safetensors`` -> ``judge.report.json`` (beside the artifact)."""
    p = Path(artifact)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + ".report.json")


def train_judges(
    data: MinedData,
    feature_sets: Sequence[str] = ("dd+dt",),
    config: TrainConfig = TrainConfig(),
    *,
    choose: str | None = None,
) -> TrainResult:
    """Train every feature set on the same prompt-grouped split and calibrate the chosen one.

    ``choose`` names the set to save (it must be among ``feature_sets``); by default
    the one with the best validation ROC-AUC. Baselines (never accept, probability
    threshold, Top-K when ``draft_rank`` was mined) are evaluated on the same
    validation rows.
    """
    t0 = time.perf_counter()
    names = ["+".join(parse_feature_set(s)) for s in feature_sets]
    if not names:
        raise ValueError("no feature sets to train")
    if choose is not None:
        choose = "+".join(parse_feature_set(choose))
        if choose not in names:
            raise ValueError(f"--choose {choose!r} is not among the trained feature sets {names}")
    held_out, note = True, None
    try:
        train_idx, val_idx, split_seed = split_by_prompt_with_both_classes(
            data.prompt_ids, data.labels, config.val_fraction, config.seed
        )
    except ValueError as e:
        if not config.in_sample_fallback or len(np.unique(data.labels)) < 2:
            raise
        train_idx = val_idx = np.arange(data.n)
        split_seed, held_out = None, False
        note = (
            f"{e}; trained and calibrated in-sample on all rows with C={config.in_sample_c} (no held-out AUC)"
        )
        config = replace(config, c_grid=(config.in_sample_c,))
    y_train, y_val = data.labels[train_idx].astype(np.int64), data.labels[val_idx].astype(np.int64)
    results: dict[str, FeatureSetResult] = {}
    for name in names:
        blocks = parse_feature_set(name)
        dims = {b: data.block_dim(b) for b in blocks}
        results[name] = fit_feature_set(
            data.matrix(blocks, train_idx),
            y_train,
            data.matrix(blocks, val_idx),
            y_val,
            config=config,
            feature_set=name,
            blocks=blocks,
            block_dims=dims,
        )
    chosen = choose or max(names, key=lambda n: results[n].val_auc)
    p_val = results[chosen].p_val
    threshold = threshold_for_recall(y_val, p_val, config.target_recall)
    table = threshold_table(y_val, p_val, set(threshold_table_points(y_val, p_val)) | {threshold})
    baselines = evaluate_baselines(
        y_val,
        data.features["x"][val_idx, 0] if "x" in data.features else None,
        None if data.draft_rank is None else data.draft_rank[val_idx],
        target_recall=config.target_recall,
    )
    split = {
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "prompts_train": len(set(data.prompt_ids[train_idx].tolist())),
        "prompts_val": len(set(data.prompt_ids[val_idx].tolist())),
        "important_rate_train": float(y_train.mean()),
        "important_rate_val": float(y_val.mean()),
        "seed": split_seed,  # the first seed from config.seed on whose split both sides hold both classes
        "held_out": held_out,  # False: too few prompts, validation metrics are in-sample (see note)
        "note": note,
    }
    return TrainResult(
        meta=data.meta,
        config=config,
        results=results,
        chosen=chosen,
        threshold=threshold,
        at_threshold=metrics_at(y_val, p_val, threshold),
        table=table,
        baselines=baselines,
        split=split,
        seconds=time.perf_counter() - t0,
        y_val=y_val,
        n_labels=data.n,
        prompt_ids=sorted({str(x) for x in data.prompt_ids.tolist()}),
    )


def threshold_table_points(y: np.ndarray, p: np.ndarray) -> list[float]:
    """Default table thresholds: the fixed grid, 20 validation quantiles and the recall targets 0.8-0.99."""
    from autojudge.judges.calibrate import DEFAULT_GRID

    pts = set(DEFAULT_GRID)
    pts |= {round(float(q), 6) for q in np.quantile(p, np.linspace(0, 1, 21))}
    for r in RECALL_TARGETS:
        pts.add(threshold_for_recall(y, p, r))
    return sorted(pts)
