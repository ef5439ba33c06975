"""Shipped judges: listed by `aj judges list`, used by name, refused for another model pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from judges_synthetic import DRAFT, TARGET

from autojudge.cli.main import build_cli
from autojudge.core.judge import LinearJudge
from autojudge.judges.artifact import JudgeArtifactError, save_judge
from autojudge.judges.shipped import find_shipped, shipped_judges
from autojudge.judges.spec import JudgeSpecError, check_judge_spec, load_judge_spec

cli = build_cli()


def _fp(rec: dict) -> dict:
    return {k: rec[k] for k in ("config_sha256", "vocab_sha256", "hidden_size")}


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "shipped"
    rng = np.random.default_rng(0)
    save_judge(
        root / "toy.safetensors",
        {"dt": rng.standard_normal(TARGET["hidden_size"]).astype(np.float32),
         "x": rng.standard_normal(3).astype(np.float32)},
        0.1, ("dt", "x"), threshold=0.3, draft=DRAFT, target=TARGET, task="toy-arith",
        extra={"metrics": {"val_auc": 0.81, "split": {"n_train": 80, "n_val": 20}}},
    )  # fmt: skip
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(root))
    return root


def test_listed_with_what_it_records(shipped: Path) -> None:
    (j,) = shipped_judges()
    assert (j.name, j.task, j.feature_set, j.threshold, j.auc, j.labels) == (
        "toy",
        "toy-arith",
        "dt+x",
        0.3,
        0.81,
        100,
    )
    res = CliRunner().invoke(cli, ["judges", "list", "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.splitlines()[0])
    assert row["name"] == "toy" and row["val_auc"] == 0.81 and row["target"] == TARGET["id"]
    res = CliRunner().invoke(cli, ["judges", "list"])
    assert res.exit_code == 0 and "toy-arith" in res.output and "0.810" in res.output


def test_used_by_name_for_its_pair(shipped: Path) -> None:
    assert check_judge_spec("toy")["task"] == "toy-arith"
    judge = load_judge_spec("toy", target=_fp(TARGET), draft=_fp(DRAFT))
    assert isinstance(judge, LinearJudge) and judge.threshold == pytest.approx(0.3)


def test_refused_for_another_pair(shipped: Path) -> None:
    other = {**_fp(TARGET), "config_sha256": "0" * 64}
    with pytest.raises(JudgeArtifactError, match="target model mismatch"):
        load_judge_spec("toy", target=other, draft=_fp(DRAFT))


def test_unknown_name_lists_the_shipped_ones(shipped: Path) -> None:
    with pytest.raises(JudgeSpecError, match=r"shipped judge \(toy;"):
        check_judge_spec("gsm9k")
    assert find_shipped("../toy") is None  # names are file stems, never paths


def test_a_file_path_wins_over_a_name(shipped: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("toy").write_text("not an artifact")
    with pytest.raises(JudgeArtifactError):
        check_judge_spec("toy")


def test_empty_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(tmp_path / "none"))
    assert shipped_judges() == []
    res = CliRunner().invoke(cli, ["judges", "list"])
    assert res.exit_code == 0 and "no shipped judges" in res.output


def test_the_package_ships_a_gsm8k_judge_for_the_default_pair(monkeypatch) -> None:
    """The artifact committed in judges/shipped/: trained on the default pair's mined GSM8K labels."""
    from autojudge.core import presets

    monkeypatch.delenv("AJ_SHIPPED_JUDGES", raising=False)
    by_name = {j.name: j for j in shipped_judges()}
    j = by_name["gsm8k"]
    assert j.task == "gsm8k" and j.labels is not None and j.labels >= 400
    assert (j.draft, j.target) == (presets.DEFAULT_DRAFT, presets.DEFAULT_TARGET)
    assert j.auc is not None and j.auc > 0.6  # held-out validation AUC recorded by aj train
    assert 0 < j.threshold < 1
    report = json.loads(j.path.with_suffix(".report.json").read_text())
    assert report["chosen"] == j.feature_set and report["split"]["held_out"] is True


def test_the_package_ships_a_code_judge_for_the_default_pair(monkeypatch) -> None:
    """The `code` artifact: trained on MBPP train labels judged by the sandbox, used for HumanEval and MBPP."""
    from autojudge.core import presets
    from autojudge.plugins.code.humaneval import HumanEvalTask
    from autojudge.plugins.code.mbpp import MBPPTask

    monkeypatch.delenv("AJ_SHIPPED_JUDGES", raising=False)
    j = {j.name: j for j in shipped_judges()}["code"]
    assert j.task == "mbpp" and j.labels is not None and j.labels >= 200
    assert (j.draft, j.target) == (presets.DEFAULT_DRAFT, presets.DEFAULT_TARGET)
    assert 0 < j.threshold < 1 and j.auc is not None
    assert not {i for i in j.meta["mined"]["prompt_ids"] if not i.startswith("mbpp-")}
    mbpp_train = {e.id for e in MBPPTask().load("train")}  # AJ_DATA_DIR: tests/conftest.py
    assert set(j.meta["mined"]["prompt_ids"]) <= mbpp_train  # never an evaluated split
    assert HumanEvalTask.shipped_judge == MBPPTask.shipped_judge == "code"
