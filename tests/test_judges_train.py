"""Mined-data reading, the split by prompt, training, calibration and ``aj train``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from judges_synthetic import DRAFT, TARGET, make_rows, write_mined_dir, write_shard

from autojudge.core.judge import MismatchFeatures
from autojudge.core.mining.store import MinedDataError
from autojudge.judges.artifact import load_judge
from autojudge.judges.calibrate import (
    metrics_at,
    pick_threshold_within_budget,
    threshold_for_recall,
    threshold_table,
)
from autojudge.judges.dataset import (
    FEATURE_SETS,
    expand_feature_sets,
    load_mined,
    parse_feature_set,
    split_by_prompt,
    split_by_prompt_with_both_classes,
)
from autojudge.judges.train import TrainConfig, fold_standardization, report_path_for, train_judges

FAST = TrainConfig(c_grid=(0.01, 0.1, 1.0), max_iter=200)


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mined_dir(tmp_path_factory.mktemp("mined"), n_prompts=80, with_rank=True)


@pytest.fixture(scope="module")
def trained(mined: Path):
    return train_judges(load_mined(mined), FEATURE_SETS, FAST)


# --- reading mined data -------------------------------------------------------------------------


def test_load_mined(mined: Path) -> None:
    data = load_mined(mined)
    assert data.features["dt"].shape == (data.n, TARGET["hidden_size"])
    assert data.features["dd"].shape == (data.n, DRAFT["hidden_size"])
    assert data.features["x"].shape == (data.n, 3) and data.labels.dtype == np.int8
    assert data.draft_rank is not None and data.draft_rank.shape == (data.n,)
    assert len(set(data.prompt_ids.tolist())) == 80 and len(data.shards) == 4
    assert data.matrix(("dd", "dt")).shape == (data.n, DRAFT["hidden_size"] + TARGET["hidden_size"])
    only_dt = load_mined(mined, ("dt",))
    assert set(only_dt.features) == {"dt"}


def test_load_mined_without_rank(tmp_path: Path) -> None:
    assert load_mined(write_mined_dir(tmp_path, n_prompts=10)).draft_rank is None


def _break_missing_jsonl(d: Path) -> None:  # an interrupted write: tensors, no rows, no completion marker
    (d / "shards" / "shard-000001.jsonl").unlink()
    (d / "prompts" / "000001.json").unlink()


def _break_missing_tensors(d: Path) -> None:
    (d / "shards" / "shard-000001.safetensors").unlink()


def _break_truncated(d: Path) -> None:
    p = d / "shards" / "shard-000000.safetensors"
    p.write_bytes(p.read_bytes()[:-40])


def _break_header(d: Path) -> None:
    p = d / "shards" / "shard-000000.safetensors"
    raw = bytearray(p.read_bytes())
    raw[9] ^= 0x55
    p.write_bytes(bytes(raw))


def _break_meta_format(d: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    meta["format"] = "autojudge-mined/99"
    (d / "meta.json").write_text(json.dumps(meta))


def _break_meta_hidden(d: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    meta["target"]["hidden_size"] += 1
    (d / "meta.json").write_text(json.dumps(meta))


def _break_row_count(d: Path) -> None:
    p = d / "shards" / "shard-000000.jsonl"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1]))


def _break_label(d: Path) -> None:
    p = d / "shards" / "shard-000000.jsonl"
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    rows[0]["label"] = 1 - rows[0]["label"]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _break_missing_block(d: Path) -> None:
    t = make_rows(3, TARGET["hidden_size"], DRAFT["hidden_size"], np.random.default_rng(0))
    del t["dd"]
    rows = [{"prompt_id": "z", "position": i, "label": int(t["label"][i])} for i in range(3)]
    write_shard(d, 7, t, rows)


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (lambda d: (d / "meta.json").unlink(), "meta.json: missing"),
        (lambda d: (d / "meta.json").write_text("{"), "unreadable JSON"),
        (_break_meta_format, "not supported"),
        (_break_meta_hidden, "expected"),
        (_break_missing_jsonl, "not finished"),
        (_break_missing_tensors, "shard is damaged"),
        (_break_truncated, "corrupt"),
        (_break_header, "corrupt"),
        (_break_row_count, "JSONL rows"),
        (_break_label, "disagree"),
        (_break_missing_block, r"missing tensor\(s\) \['dd'\]"),
    ],
)
def test_load_mined_errors(tmp_path: Path, breaker, message: str) -> None:
    d = write_mined_dir(tmp_path / "m", n_prompts=30, prompts_per_shard=10)
    breaker(d)
    with pytest.raises(MinedDataError, match=message):
        load_mined(d)


def test_skip_incomplete(tmp_path: Path) -> None:
    d = write_mined_dir(tmp_path / "m", n_prompts=30, prompts_per_shard=10)
    _break_missing_jsonl(d)
    data = load_mined(d, skip_incomplete=True)
    assert data.shards == ["shard-000000", "shard-000002"]


def test_no_shards(tmp_path: Path) -> None:
    d = write_mined_dir(tmp_path / "m", n_prompts=10)
    for p in (d / "shards").iterdir():
        p.unlink()
    with pytest.raises(MinedDataError, match="no complete shards"):
        load_mined(d)


def test_feature_set_parsing() -> None:
    assert parse_feature_set("dd+dt+x") == ("dd", "dt", "x")
    assert expand_feature_sets("all") == list(FEATURE_SETS)
    assert expand_feature_sets("dt, dd+dt,dt") == ["dt", "dd+dt"]
    for bad in ("tt", "dt+dt", "", "dt+foo"):
        with pytest.raises(ValueError):
            parse_feature_set(bad)


# --- split by prompt ----------------------------------------------------------------------------


def test_split_by_prompt_never_splits_a_prompt() -> None:
    rng = np.random.default_rng(0)
    pids = np.array([f"p{i}" for i in rng.integers(0, 37, 2000)], dtype=object)
    for seed in range(5):
        tr, va = split_by_prompt(pids, 0.25, seed)
        assert len(tr) + len(va) == len(pids) and not set(tr) & set(va)
        assert not set(pids[tr].tolist()) & set(pids[va].tolist())
        assert len(set(pids[va].tolist())) == round(0.25 * len(set(pids.tolist())))
    assert np.array_equal(split_by_prompt(pids, 0.25, 3)[1], split_by_prompt(pids, 0.25, 3)[1])
    with pytest.raises(ValueError):
        split_by_prompt(np.array(["a", "a"], dtype=object))


def test_split_with_both_classes_retries_seeds_and_says_when_impossible() -> None:
    # 4 prompts; only p0 and p1 have important mismatches: a random 50% split often isolates them
    pids = np.array(["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"], dtype=object)
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0])
    plain = [split_by_prompt(pids, 0.5, s) for s in range(8)]
    assert any(len(set(labels[va].tolist())) < 2 or len(set(labels[tr].tolist())) < 2 for tr, va in plain)
    for seed in range(8):
        tr, va, used = split_by_prompt_with_both_classes(pids, labels, 0.5, seed)
        assert used >= seed and set(labels[tr].tolist()) == set(labels[va].tolist()) == {0, 1}
        assert not set(pids[tr].tolist()) & set(pids[va].tolist())
        assert np.array_equal(va, split_by_prompt(pids, 0.5, used)[1])
    with pytest.raises(ValueError, match="mine more prompts"):  # every important mismatch in one prompt
        split_by_prompt_with_both_classes(pids, np.array([1, 1, 0, 0, 0, 0, 0, 0]), 0.5)
    with pytest.raises(ValueError, match="single class"):
        split_by_prompt_with_both_classes(pids, np.zeros(8, dtype=int), 0.5)


def test_training_split_is_grouped(mined: Path, trained) -> None:
    data = load_mined(mined, ("x",))
    tr, va, seed = split_by_prompt_with_both_classes(
        data.prompt_ids, data.labels, FAST.val_fraction, FAST.seed
    )
    assert not set(data.prompt_ids[tr].tolist()) & set(data.prompt_ids[va].tolist())
    s = trained.split
    assert s["seed"] == seed
    assert (s["n_train"], s["n_val"]) == (len(tr), len(va))
    assert s["prompts_train"] + s["prompts_val"] == 80
    assert np.array_equal(trained.y_val, data.labels[va])


# --- training -----------------------------------------------------------------------------------


def test_auc_per_feature_set(trained) -> None:
    auc = {k: r.val_auc for k, r in trained.results.items()}
    assert set(auc) == set(FEATURE_SETS)
    assert auc["dd+dt"] > auc["dt"] + 0.02  # the synthetic signal lives in both blocks
    assert all(0.6 < a <= 1.0 for a in auc.values())
    assert trained.chosen == max(auc, key=auc.get)
    for r in trained.results.values():
        assert r.best_c in FAST.c_grid and set(r.auc_by_c) == set(FAST.c_grid)
    assert trained.at_threshold["recall"] >= 0.9


def test_choose_and_errors(mined: Path) -> None:
    data = load_mined(mined)
    res = train_judges(data, ["dt", "dd+dt"], FAST, choose="dt")
    assert res.chosen == "dt" and not res.judge().needs_draft_hidden
    with pytest.raises(ValueError, match="not among"):
        train_judges(data, ["dt"], FAST, choose="dd+dt")
    with pytest.raises(ValueError):
        TrainConfig(class_weight="weird")


def test_class_weight_balanced(mined: Path) -> None:
    cfg = TrainConfig(c_grid=(0.1,), class_weight="balanced")
    res = train_judges(load_mined(mined), ["dt+x"], cfg)
    assert res.results["dt+x"].model.class_weight == "balanced"
    assert res.report()["config"]["class_weight"] == "balanced"


def test_fold_standardization_matches_pipeline() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3, 5, (50, 7))
    mean, scale = x.mean(0), x.std(0) + 0.1
    coef, intercept = rng.standard_normal(7), 0.3
    w, b = fold_standardization(coef, intercept, mean, scale)
    np.testing.assert_allclose(x @ w + b, ((x - mean) / scale) @ coef + intercept, rtol=1e-10, atol=1e-10)


def _features(data, rows) -> MismatchFeatures:
    n = len(rows)
    return MismatchFeatures(
        draft_tokens=torch.zeros(n, dtype=torch.long),
        target_tokens=torch.ones(n, dtype=torch.long),
        target_logits=torch.zeros(n, 4),
        target_hidden=torch.from_numpy(data.features["dt"][rows]),
        draft_hidden=torch.from_numpy(data.features["dd"][rows]),
        _extras=torch.from_numpy(data.features["x"][rows]),
    )


@pytest.mark.parametrize("feature_set", ["dd+dt+x", "dt"])
def test_fused_judge_from_artifact_equals_sklearn(
    mined: Path, trained, tmp_path: Path, feature_set: str
) -> None:
    data = load_mined(mined)
    res = trained if trained.chosen == feature_set else train_judges(data, [feature_set], FAST)
    artifact, report = res.save(tmp_path / "judge.safetensors")
    assert report == report_path_for(artifact) == tmp_path / "judge.report.json"
    judge, meta = load_judge(artifact, target_fingerprint=TARGET, draft_fingerprint=DRAFT)
    fit = res.results[feature_set]
    rows = np.arange(data.n)
    x = data.matrix(parse_feature_set(feature_set), rows)
    expected = fit.model.predict_proba(fit.scaler.transform(x))[:, 1]
    got = judge.p_important(_features(data, rows)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert judge.threshold == pytest.approx(res.threshold)
    assert np.array_equal(judge.accept(_features(data, rows)).numpy(), got < res.threshold)
    assert meta["feature_set"] == feature_set and meta["metrics"]["val_auc"] == pytest.approx(fit.val_auc)
    assert meta["threshold"] == res.threshold and meta["threshold_table"]
    rep = json.loads(report.read_text())
    assert rep["chosen"] == feature_set and feature_set in rep["feature_sets"]


def test_report_json_is_strict(trained, tmp_path: Path) -> None:
    _, report = trained.save(tmp_path / "j.safetensors")
    rep = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert rep["baselines"]["rows"][0]["judge"] == "never"
    assert rep["feature_sets"]["dt"]["at_target_recall"]["recall"] >= 0.9


# --- calibration --------------------------------------------------------------------------------


def test_metrics_at_edges() -> None:
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.1, 0.4, 0.5, 0.0])
    m0 = metrics_at(y, p, 0.0)
    assert m0["accept_rate"] == 0.0 and m0["recall"] == 1.0 and m0["precision"] == pytest.approx(0.4)
    m1 = metrics_at(y, p, 1.01)
    assert m1["accept_rate"] == 1.0 and m1["recall"] == 0.0 and math.isnan(m1["precision"])
    m = metrics_at(y, p, 0.45)  # accept 0.1, 0.4, 0.0; reject 0.9, 0.5
    assert m["accept_rate"] == pytest.approx(0.6) and m["recall"] == 0.5 and m["precision"] == 0.5


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_recall_is_the_largest(target: float) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    t = threshold_for_recall(y, p, target)
    assert metrics_at(y, p, t)["recall"] >= target
    above = p[p > t]
    if above.size:
        assert metrics_at(y, p, above.min())["recall"] < target


def test_threshold_for_recall_errors() -> None:
    with pytest.raises(ValueError):
        threshold_for_recall(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError):
        threshold_for_recall(np.ones(3), np.zeros(3), 0.0)


def test_threshold_table_monotone() -> None:
    rng = np.random.default_rng(0)
    y, p = (rng.random(200) < 0.4).astype(int), rng.random(200)
    table = threshold_table(y, p)
    ts = [r["threshold"] for r in table]
    assert ts == sorted(ts) and ts[0] == 0.0 and 1.0 in ts
    acc = [r["accept_rate"] for r in table]
    rec = [r["recall"] for r in table]
    assert acc == sorted(acc) and rec == sorted(rec, reverse=True)


def test_pick_threshold_within_budget() -> None:
    evals = {0.0: 0.80, 0.05: 0.805, 0.1: 0.795, 0.2: 0.78, 0.3: 0.792, 0.5: 0.70}
    assert pick_threshold_within_budget(evals, 0.80, 0.01) == 0.3
    assert pick_threshold_within_budget(evals, 0.80, 0.01, monotone=True) == 0.1
    assert pick_threshold_within_budget(evals, 0.80, 0.0) == 0.05
    assert pick_threshold_within_budget(evals, 0.90, 0.01) is None
    assert pick_threshold_within_budget(list(evals.items()), 0.80, 0.2) == 0.5
    assert pick_threshold_within_budget({0.1: 79.0, 0.2: 78.9}, 80.0, 1.0) == 0.1  # percent units
    assert pick_threshold_within_budget({}, 0.8) is None
    with pytest.raises(ValueError):
        pick_threshold_within_budget({0.1: float("nan")}, 0.8)
    with pytest.raises(ValueError):
        pick_threshold_within_budget(evals, 0.8, -0.01)


# --- the command --------------------------------------------------------------------------------


def test_aj_train_command(mined: Path, tmp_path: Path) -> None:
    from autojudge.cli.commands import all_commands
    from autojudge.cli.train_cmd import train

    assert "train" in {c.name for c in all_commands()}
    out = tmp_path / "judge.safetensors"
    args = [
        "--data",
        str(mined),
        "--out",
        str(out),
        "--features",
        "dt,dd+dt",
        "--c-grid",
        "0.01,1",
        "--recall",
        "0.85",
    ]
    result = CliRunner().invoke(train, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "val AUC" in result.output and "chosen" in result.output and "baselines" in result.output
    judge, meta = load_judge(out)
    assert meta["feature_set"] in {"dt", "dd+dt"} and meta["metrics"]["target_recall"] == 0.85
    assert (tmp_path / "judge.report.json").is_file()


def test_aj_train_bad_data(tmp_path: Path) -> None:
    from autojudge.cli.train_cmd import train

    d = write_mined_dir(tmp_path / "m", n_prompts=10)
    (d / "meta.json").write_text("[]")
    result = CliRunner().invoke(train, ["--data", str(d), "--out", str(tmp_path / "j.safetensors")])
    assert result.exit_code == 1 and "expected a JSON object" in result.output
    result = CliRunner().invoke(train, ["--data", str(d), "--out", "j.safetensors", "--features", "zz"])
    assert result.exit_code == 2 and "unknown feature block" in result.output


@pytest.mark.parametrize("patience", [None, 1])
def test_patience_walks_a_prefix_of_the_grid(mined: Path, patience: int | None) -> None:
    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    cfg = TrainConfig(c_grid=grid, patience=patience, max_iter=100)
    fit = train_judges(load_mined(mined, ("dt", "x")), ["dt"], cfg).results["dt"]
    tried = list(fit.auc_by_c)
    assert tried == list(grid[: len(tried)])
    if patience is None:
        assert len(tried) == len(grid)
    elif len(tried) < len(grid):
        assert fit.auc_by_c[tried[-1]] <= max(fit.auc_by_c[c] for c in tried[:-1])
    assert fit.val_auc == max(fit.auc_by_c.values()) and fit.best_c == min(
        c for c, a in fit.auc_by_c.items() if a == fit.val_auc
    )


def test_too_few_prompts_train_in_sample_only_when_asked(tmp_path: Path) -> None:
    data = load_mined(
        write_mined_dir(tmp_path / "m", n_prompts=2, rows_per_prompt=(8, 8), signal=3.0), ("dt", "x")
    )
    data.labels[:] = (data.prompt_ids == "p0").astype(data.labels.dtype)  # every important row in one prompt
    with pytest.raises(ValueError, match="mine more prompts"):
        train_judges(data, ("dt",), FAST)
    r = train_judges(data, ("dt",), TrainConfig(max_iter=200, in_sample_fallback=True))
    assert r.split["held_out"] is False and "in-sample" in r.split["note"] and r.split["n_val"] == data.n
    assert r.config.c_grid == (TrainConfig().in_sample_c,) and r.at_threshold["recall"] >= 0.9
    data.labels[:] = 0
    with pytest.raises(ValueError, match="single class"):  # nothing to learn, even in-sample
        train_judges(data, ("dt",), TrainConfig(in_sample_fallback=True))
