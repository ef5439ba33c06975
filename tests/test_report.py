"""The run report: summary.json (strict JSON), report.md table, and readable PNG plots."""

from __future__ import annotations

import json

import pytest

from autojudge.core.run.evaluate import ModeSpec
from autojudge.core.run.report import PLOTS, markdown_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _agg(mode: ModeSpec, acc: float, tpc: float, tps: float, judge_acc: int = 0) -> dict:
    return {
        **mode.describe(), "n": 4, "correct": round(acc * 4), "accuracy": acc, "mean_acceptance_length": tpc,
        "draft_acceptance_rate": (tpc - 1) / 4, "tokens_per_s": tps, "speedup_vs_ar": tps / 5.0,
        "speedup_vs_sd": tps / 6.0, "num_judge_accepted": judge_acc, "accuracy_delta_points": 100 * (acc - 0.75),
    }  # fmt: skip


def summary() -> dict:
    modes = [
        (ModeSpec("ar"), 0.75, 1.0, 5.0),
        (ModeSpec("sd"), 0.75, 2.0, 6.0),
        (ModeSpec("judge", threshold=0.1), 0.75, 2.5, 6.5),
        (ModeSpec("judge", threshold=0.3), 0.5, 3.2, 7.0),
        (ModeSpec("topk", top_k=2), 0.5, 2.4, 6.2),
        (ModeSpec("topk", top_k=8), 0.25, 3.0, 6.9),
    ]
    return {
        "task": "toy-arith", "draft": {"id": "d"}, "target": {"id": "t"}, "dtype": "float32",
        "settings": {"mine_limit": 3, "k": 5, "max_new_tokens": 32, "target_recall": 0.9},
        "eval_split": "test", "eval_prompt_ids": ["a", "b", "c", "d"],
        "recommended_threshold": 0.1, "recommended_mode": "judge@0.1", "calibrated_threshold": 0.3,
        "validation": {"prompt_ids": ["x", "y"], "reference_accuracy": 0.5, "max_accuracy_drop_points": 1.0,
                       "within_budget": True, "candidates": [{"threshold": 0.1, "accuracy": 0.5,
                                                              "delta_points": 0.0, "within_budget": True}]},
        "training": {"chosen": "dd+dt", "val_auc": float("nan")},
        "mining": {"prompts": 3, "labels": 40, "important": 7},
        "modes": {m.name: _agg(m, a, t, s, judge_acc=3) for m, a, t, s in modes},
        "mode_order": [m.name for m, *_ in modes],
        "samples": {m.name: f"eval/{m.file_stem}.jsonl" for m, *_ in modes},
        "stages": {"mine": {"seconds": 1.0, "finished": "now"}},
    }  # fmt: skip


def test_report_files(tmp_path):
    s = summary()
    out = write_report(tmp_path, s)
    loaded = json.loads((tmp_path / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert loaded["training"]["val_auc"] is None  # NaN -> null
    assert loaded["plots"] == {p.split(".")[0]: f"plots/{p}" for p in PLOTS}
    md = (tmp_path / "report.md").read_text()
    for name in s["mode_order"]:
        assert f"| {name} |" in md or f"**{name}** (recommended)" in md
    assert (
        "recommended threshold 0.1" in md
        and "mined 3 prompts of the mining split (40 labelled mismatches, 7 important)" in md
    )
    import matplotlib.image as mpimg

    for p in PLOTS:
        data = (tmp_path / "plots" / p).read_bytes()
        assert data.startswith(PNG_MAGIC)
        img = mpimg.imread(tmp_path / "plots" / p)
        assert img.shape[0] > 200 and img.shape[1] > 400
    assert set(out) == {"tradeoff", "speed", "markdown", "summary"}


def test_markdown_table_has_one_row_per_mode_with_deltas():
    table = markdown_table(summary()).splitlines()
    assert len(table) == 2 + 6
    row = next(r for r in table if r.startswith("| judge@0.3 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert (
        cells[1] == "T = 0.3" and cells[2].startswith("50.0") and cells[3] == "-25.0" and cells[6] == "3.20"
    )
