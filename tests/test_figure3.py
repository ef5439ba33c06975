"""bench/figure3.py's comparison of the judge with Top-K, on hand-made summaries (no models)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("figure3", Path(__file__).parents[1] / "bench" / "figure3.py")
fig3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fig3)


def _mode(name: str, kind: str, acc: float, tpc: float, **extra) -> dict:
    return {"name": name, "kind": kind, "accuracy": acc, "mean_acceptance_length": tpc, **extra}


def _summary() -> dict:
    modes = [
        _mode("ar", "ar", 0.60, 1.0),
        _mode("sd", "sd", 0.60, 10.0, accuracy_delta_points=0.0),
        _mode("judge@0.1", "judge", 0.59, 11.0, threshold=0.1, accuracy_delta_points=-1.0),
        _mode("judge@0.3", "judge", 0.50, 13.0, threshold=0.3, accuracy_delta_points=-10.0),
        _mode("judge@0.9", "judge", 0.20, 17.0, threshold=0.9, accuracy_delta_points=-40.0),
        _mode("topk:4", "topk", 0.30, 16.0, top_k=4),  # listed first: the line sorts by tokens/cycle
        _mode("topk:2", "topk", 0.40, 14.0, top_k=2),
    ]
    return {"settings": {"k": 16}, "modes": {m["name"]: m for m in modes}}


def test_the_topk_line_interpolates_between_sd_and_the_topk_points_and_never_extrapolates():
    pts = [(16.0, 0.30), (10.0, 0.60), (14.0, 0.40)]
    assert fig3.topk_line_accuracy(pts, 10.0) == pytest.approx(0.60)
    assert fig3.topk_line_accuracy(pts, 12.0) == pytest.approx(0.50)
    assert fig3.topk_line_accuracy(pts, 15.0) == pytest.approx(0.35)
    assert fig3.topk_line_accuracy(pts, 9.9) is None and fig3.topk_line_accuracy(pts, 16.1) is None
    assert fig3.topk_line_accuracy([], 12.0) is None


def test_goal_reports_each_judge_point_against_the_topk_line():
    g = fig3.goal(_summary(), max_drop=1.0)
    assert g["best_within_budget"] == "judge@0.1" and g["ratio_vs_sd"] == pytest.approx(1.1)
    by = {v["judge"]: v for v in g["versus_topk"]}
    # 11 tokens/cycle: the line sd (10, 60%) -> topk:2 (14, 40%) is at 55%, the judge at 59%
    assert by["judge@0.1"]["margin_vs_topk_line_points"] == pytest.approx(4.0)
    # 13 tokens/cycle: line at 45%, judge at 50%
    assert by["judge@0.3"]["margin_vs_topk_line_points"] == pytest.approx(5.0)
    # beyond Top-K's last point: no line to compare with
    assert by["judge@0.9"]["margin_vs_topk_line_points"] is None
    # at equal accuracy: topk:4 is at least as accurate as judge@0.9 and gets fewer tokens per cycle
    assert by["judge@0.9"]["topk"] == "topk:4" and by["judge@0.9"]["judge_ahead"] is True
    assert by["judge@0.1"]["topk"] is None


def test_a_judge_below_the_line_gets_a_negative_margin():
    s = _summary()
    s["modes"]["judge@0.1"]["accuracy"] = 0.50  # at 11 tokens/cycle the line is at 55%
    by = {v["judge"]: v for v in fig3.goal(s)["versus_topk"]}
    assert by["judge@0.1"]["margin_vs_topk_line_points"] == pytest.approx(-5.0)
