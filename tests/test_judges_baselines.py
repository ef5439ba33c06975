"""Baseline judges (decisions on MismatchFeatures) and their offline scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autojudge.core.judge import Judge, MismatchFeatures, compute_extras
from autojudge.judges.baselines import (
    AlwaysAccept,
    NeverAccept,
    ProbThresholdJudge,
    TopKJudge,
    draft_rank,
    evaluate_baselines,
)


def _feats(logits: torch.Tensor, draft: list[int]) -> MismatchFeatures:
    n = logits.shape[0]
    return MismatchFeatures(
        draft_tokens=torch.tensor(draft),
        target_tokens=logits.argmax(-1),
        target_logits=logits,
        target_hidden=torch.zeros(n, 4),
    )


LOGITS = torch.tensor(
    [
        [5.0, 4.0, 3.0, 2.0, 1.0],
        [5.0, 4.0, 3.0, 2.0, 1.0],
        [5.0, 4.0, 3.0, 2.0, 1.0],
        [1.0, 1.0, 0.0, 0.0, 0.0],  # tie for the argmax
    ]
)


def test_all_are_judges() -> None:
    for j in (NeverAccept(), AlwaysAccept(), TopKJudge(2), ProbThresholdJudge(0.1)):
        assert isinstance(j, Judge) and not j.needs_draft_hidden


def test_draft_rank() -> None:
    assert draft_rank(LOGITS, torch.tensor([1, 2, 4, 1])).tolist() == [1, 2, 4, 0]
    assert draft_rank(LOGITS, torch.tensor([0, 0, 0, 0])).dtype == torch.int32


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, [False, False, False, True]),
        (2, [True, False, False, True]),
        (3, [True, True, False, True]),
        (5, [True, True, True, True]),
    ],
)
def test_top_k(k: int, expected: list[bool]) -> None:
    feats = _feats(LOGITS, [1, 2, 4, 1])
    assert TopKJudge(k).accept(feats).tolist() == expected
    with pytest.raises(ValueError):
        TopKJudge(0)


def test_prob_threshold_is_exact_at_the_boundary() -> None:
    feats = _feats(LOGITS, [1, 2, 4, 1])
    p = compute_extras(LOGITS, torch.tensor([1, 2, 4, 1]))[:, 0]
    for p_min in (0.0, float(p[1]), 0.2, 0.5, 1.0):
        assert ProbThresholdJudge(p_min).accept(feats).tolist() == (p >= p_min).tolist()
    with pytest.raises(ValueError):
        ProbThresholdJudge(1.5)


def test_never_and_always() -> None:
    feats = _feats(LOGITS, [1, 2, 4, 1])
    assert not NeverAccept().accept(feats).any()
    assert AlwaysAccept().accept(feats).all()


def test_evaluate_baselines_with_ranks() -> None:
    y = np.array([1, 1, 0, 0, 0, 1])
    p_draft = np.array([0.01, 0.3, 0.4, 0.2, 0.05, 0.6])
    ranks = np.array([5, 1, 1, 2, 3, 1])
    out = evaluate_baselines(y, p_draft, ranks, p_values=(0.25,), k_values=(2,), target_recall=2 / 3)
    rows = {(r["judge"], r.get("p_min", r.get("k"))): r for r in out["rows"]}
    assert rows[("never", None)]["accept_rate"] == 0.0 and rows[("never", None)]["recall"] == 1.0
    assert rows[("always", None)]["accept_rate"] == 1.0 and rows[("always", None)]["recall"] == 0.0
    prob = rows[("prob", 0.25)]  # accepts 0.3, 0.4, 0.6 -> important accepted: 2 of 3
    assert prob["accept_rate"] == 0.5 and prob["recall"] == pytest.approx(1 / 3)
    top2 = rows[("top_k", 2)]  # accepts ranks 1: rows 1, 2, 5
    assert top2["accept_rate"] == 0.5 and top2["recall"] == pytest.approx(1 / 3)
    at = out["prob_at_target_recall"]
    assert at["recall"] >= 2 / 3 and out["notes"] == []


def test_evaluate_baselines_without_ranks_says_so() -> None:
    out = evaluate_baselines(np.array([1, 0]), np.array([0.1, 0.5]), None)
    assert not any(r["judge"] == "top_k" for r in out["rows"])
    assert any("draft_rank" in n for n in out["notes"])
    out = evaluate_baselines(np.array([1, 0]), None, None)
    assert any(n.startswith("prob: not computable") for n in out["notes"])
