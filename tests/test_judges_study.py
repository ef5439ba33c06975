"""The judge study (aj judges study): grouped cross-validation, prompt bootstrap, learning curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from judges_synthetic import write_mined_dir
from test_judges_train import FAST  # the small C grid of the training tests

from autojudge.cli.main import build_cli
from autojudge.judges.dataset import load_mined
from autojudge.judges.study import (
    StudyConfig,
    bootstrap_over_prompts,
    grouped_folds,
    study_judges,
    study_markdown,
)


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mined_dir(tmp_path_factory.mktemp("mined"), n_prompts=80)


def test_folds_are_grouped_by_prompt_and_cover_every_row() -> None:
    pids = np.array([f"p{i // 3}" for i in range(60)], dtype=object)
    folds = grouped_folds(pids, 5, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(60))
    seen: dict[str, int] = {}
    for f, rows in enumerate(folds):
        for q in set(pids[rows].tolist()):
            assert seen.setdefault(q, f) == f, f"prompt {q} in two folds"
    with pytest.raises(ValueError, match="cannot fill"):
        grouped_folds(pids[:6], 5)


def test_study_ranks_the_feature_sets_by_their_signal(mined: Path) -> None:
    data = load_mined(mined, ("dt", "dd", "x"))
    study = study_judges(data, StudyConfig(folds=4, bootstrap=100, train=FAST, fractions=(0.25, 1.0)))
    by = {r["feature_set"]: r for r in study["feature_sets"]}
    assert set(by) == {"dt", "dt+x", "dd+dt", "dd+dt+x"}
    # the synthetic labels depend on dt, dd and p_draft: each block helps
    assert by["dd+dt+x"]["auc"] > by["dt"]["auc"] + 0.05
    assert by["dd+dt+x"]["auc"] > 0.7
    for r in by.values():
        lo, hi = r["auc_ci95"]
        assert lo < r["auc"] < hi and hi - lo < 0.3
        assert r["rows_scored"] == study["labels"] and r["folds_skipped"] == 0
        assert 0 < r["accept_at_recall"] < 1
        # more prompts, better judge (a quarter of 60 training prompts is far from the full fit)
        assert r["learning_curve"]["0.25"] < r["learning_curve"]["1"]
        assert r["learning_curve"]["1"] == r["auc"]
    md = study_markdown(study)
    assert md.count("\n| `") == 4 and "accept rate at 90% recall" in md


def test_the_accept_rate_is_the_share_accepted_while_flagging_the_recall() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    groups = np.array([f"p{i}" for i in range(10)], dtype=object)
    b = bootstrap_over_prompts(y, p, groups, 200, seed=0, recall=0.75)
    assert b["auc_ci95"][0] <= b["auc_ci95"][1]
    from autojudge.judges.study import _accept_at_recall

    # 75% recall needs threshold 0.7: rejected 0.9, 0.8, 0.7 -> 7 of 10 accepted
    assert _accept_at_recall(y, p, 0.75) == pytest.approx(0.7)


def test_aj_judges_study_cli(mined: Path, tmp_path: Path) -> None:
    out = tmp_path / "study.json"
    res = CliRunner().invoke(
        build_cli(),
        [
            "judges",
            "study",
            str(mined),
            "--feature-sets",
            "dt,dd+dt",
            "--folds",
            "3",
            "--bootstrap",
            "50",
            "--fractions",
            "0.5,1",
            "--out",
            str(out),
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    assert "| `dd+dt` |" in res.output
    study = json.loads(out.read_text())
    assert [r["feature_set"] for r in study["feature_sets"]] == ["dt", "dd+dt"]
    bad = CliRunner().invoke(build_cli(), ["judges", "study", str(tmp_path)])
    assert bad.exit_code != 0 and "meta.json" in bad.output


def test_answer_level_calibration_counts_prompts_not_mismatches() -> None:
    from autojudge.judges.calibrate import prompts_with_important_accepted, threshold_for_prompt_budget

    # four prompts; a, b, c have important mismatches whose smallest p is 0.3, 0.5, 0.7; d has none
    pids = np.array(["a", "a", "a", "b", "b", "c", "c", "d", "d", "d"], dtype=object)
    y = np.array([1, 1, 0, 1, 0, 1, 1, 0, 0, 0])
    p = np.array([0.3, 0.9, 0.1, 0.5, 0.2, 0.8, 0.7, 0.1, 0.2, 0.4])
    assert prompts_with_important_accepted(y, p, pids, 0.3) == 0.0  # accepts p < 0.3 only
    assert prompts_with_important_accepted(y, p, pids, 0.31) == 0.25  # prompt a lets one through
    assert prompts_with_important_accepted(y, p, pids, 0.75) == 0.75  # a, b, c: two of c's count once
    assert threshold_for_prompt_budget(y, p, pids, 0.0) == 0.3  # nothing through
    assert threshold_for_prompt_budget(y, p, pids, 0.25) == 0.5  # one prompt of four (a) through
    assert threshold_for_prompt_budget(y, p, pids, 0.5) == 0.7
    assert threshold_for_prompt_budget(y, p, pids, 0.75) == float("inf")  # a, b, c all may pass: accept all
    for budget in (0.0, 0.25, 0.5):
        t = threshold_for_prompt_budget(y, p, pids, budget)
        assert prompts_with_important_accepted(y, p, pids, t) <= budget
    # per mismatch, an 80% recall (threshold 0.5: rejects 0.9, 0.8, 0.7 and 0.5) lets prompt a through
    from autojudge.judges.calibrate import threshold_for_recall

    assert prompts_with_important_accepted(y, p, pids, threshold_for_recall(y, p, 0.8)) == 0.25
    with pytest.raises(ValueError, match="budget"):
        threshold_for_prompt_budget(y, p, pids, 1.5)
    # harmful = the important swaps that broke a correct answer: here only prompt c's (b's answer was wrong)
    from autojudge.judges.study import _answer_level

    harmful = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    at = _answer_level(y, p, pids, 0.8, 0.25, harmful)  # recall 0.8: threshold 0.5
    assert at["prompts_leaking_at_recall"] == 0.25 and at["prompts_harmed_at_recall"] == 0.0
    assert _answer_level(y, p, pids, 0.2, 0.25, harmful)["prompts_harmed_at_recall"] == 0.25  # threshold 0.9
    assert np.isnan(_answer_level(y, p, pids, 0.2, 0.25, None)["prompts_harmed_at_recall"])


def test_study_reports_the_answer_level_figures(mined: Path) -> None:
    data = load_mined(mined, ("dt",))
    study = study_judges(
        data, StudyConfig(feature_sets=("dt",), folds=4, bootstrap=50, train=FAST, fractions=(1.0,))
    )
    r = study["feature_sets"][0]
    assert 0 < r["prompts_leaking_at_recall"] <= 1
    assert 0 <= r["accept_at_prompt_budget"] <= r["accept_at_recall"]  # a per-answer budget is stricter here
    lo, hi = r["prompts_leaking_ci95"]
    assert lo <= r["prompts_leaking_at_recall"] <= hi
    assert study["prompt_budget"] == 0.02
    # the synthetic rows: every original answer correct, every important swap breaks it
    assert data.harmful is not None and (data.harmful == data.labels.astype(bool)).all()
    assert r["prompts_harmed_at_recall"] == r["prompts_leaking_at_recall"]
    assert "of prompts with an important one" in study_markdown(study)
