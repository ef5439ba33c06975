"""`aj run` end to end on tiny float32 models and the toy task: artifacts, consistency, caching, resume.

The real-model test (SmolLM2-135M target, a layer-dropped copy as draft) is marked ``integration``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_char_tokenizer, make_tiny_model, noisy_copy, save_tiny_pair

from autojudge.core.engine import SpeculativeEngine
from autojudge.core.mining.store import MinedStore
from autojudge.core.models import LoadedModel, ModelPair
from autojudge.core.run.evaluate import aggregate_rows, read_rows
from autojudge.core.run.pipeline import STAGES, Pipeline, PipelineError, RunConfig, run_pipeline
from autojudge.core.run.report import PLOTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETTINGS = dict(task="toy-arith", mine_limit=8, val_limit=3, eval_limit=3, max_new_tokens=32, k=4, progress=False,
                thresholds=(0.1, 0.3), val_thresholds=(0.3,), top_k=(2, 8), max_mismatches=None,
                eval_batch=1)  # fmt: skip


@pytest.fixture(scope="module")
def pair() -> ModelPair:
    tok = make_char_tokenizer()
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    mk = lambda name, m: LoadedModel(name, m, tok, None, torch.float32, torch.device("cpu"))  # noqa: E731
    return ModelPair(draft=mk("tiny-draft", draft), target=mk("tiny-target", target), tokenizer=tok)


@pytest.fixture(scope="module")
def base_run(pair, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run_pipeline(RunConfig(out=out, **SETTINGS), pair=pair)
    return out


def rerun(pair, out: Path, **changes) -> tuple[dict, dict[str, bool], list[str]]:
    """Run again; returns the summary, which stages ran, and the modes the engine decoded."""
    calls: list[str] = []
    orig = SpeculativeEngine.generate

    def counting(self, prompt, **kw):
        calls.append(kw.get("mode", "sd"))
        return orig(self, prompt, **kw)

    p = Pipeline(RunConfig(out=out, **{**SETTINGS, **changes}), pair=pair)
    SpeculativeEngine.generate = counting
    try:
        summary = p.run()
    finally:
        SpeculativeEngine.generate = orig
    return summary, p.ran, calls


def test_every_artifact_is_written_and_consistent(base_run):
    s = json.loads((base_run / "summary.json").read_text())
    assert s["task"] == "toy-arith" and s["mode_order"][:2] == ["ar", "sd"]
    assert {"judge", "topk"} <= {a["kind"] for a in s["modes"].values()}
    assert s["recommended_mode"] in s["modes"] and "judge@0.1" in s["modes"] and "topk:8" in s["modes"]
    cal = f"judge@{s['calibrated_threshold']:.4g}"
    assert cal in s["modes"]
    for name in s["mode_order"]:
        rows = read_rows(base_run / s["samples"][name])
        assert [r["prompt_id"] for r in rows] == s["eval_prompt_ids"] and len(rows) == SETTINGS["eval_limit"]
        again = aggregate_rows(rows)
        a = s["modes"][name]
        assert a["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
        for key in (
            "accuracy",
            "mean_acceptance_length",
            "tokens_per_s",
            "num_judge_accepted",
            "acceptance_histogram",
        ):
            assert a[key] == pytest.approx(again[key]), key
        assert a["accuracy_delta_points"] == pytest.approx(
            100 * (a["accuracy"] - s["modes"]["ar"]["accuracy"])
        )
        assert a["speedup_vs_ar"] == pytest.approx(a["tokens_per_s"] / s["modes"]["ar"]["tokens_per_s"])
    assert s["modes"]["ar"]["mean_acceptance_length"] == pytest.approx(1.0)
    # float32: lossless SD reproduces target-only exactly
    ar, sd = (read_rows(base_run / s["samples"][m]) for m in ("ar", "sd"))
    assert [r["output"] for r in ar] == [r["output"] for r in sd]
    for p in PLOTS:
        assert (base_run / "plots" / p).read_bytes().startswith(PNG_MAGIC)
    md = (base_run / "report.md").read_text()
    assert all(name in md for name in s["mode_order"])
    assert (base_run / "judge.safetensors").is_file() and (base_run / "judge.report.json").is_file()
    state = json.loads((base_run / "state.json").read_text())
    assert all(state["stages"][st]["status"] == "done" for st in STAGES)
    assert set(s["stages"]) == set(STAGES[:-1]) and all(v["seconds"] >= 0 for v in s["stages"].values())


def test_threshold_is_chosen_on_validation_prompts_only(base_run):
    s = json.loads((base_run / "summary.json").read_text())
    sel = json.loads((base_run / "validation" / "selection.json").read_text())
    mined_ids = {r["prompt_id"] for r in MinedStore(base_run / "mined").prompt_rows()}
    val_ids = set(sel["prompt_ids"])
    assert len(mined_ids) == SETTINGS["mine_limit"] and len(val_ids) == SETTINGS["val_limit"]
    assert sel["split"] == "train" and not val_ids & mined_ids
    assert val_ids == {f"train-{i}" for i in range(8, 11)}  # the prompts right after the mined ones
    assert not val_ids & set(s["eval_prompt_ids"]) and all(
        i.startswith("test-") for i in s["eval_prompt_ids"]
    )
    # the recommendation is recomputable from the validation rows alone
    ref = aggregate_rows(read_rows(base_run / "validation" / "ar.jsonl"))["accuracy"]
    accs = {c["threshold"]: c["accuracy"] for c in sel["candidates"]}
    for t, acc in accs.items():
        stem = f"judge_{t:.4g}"
        assert aggregate_rows(read_rows(base_run / "validation" / f"{stem}.jsonl"))["accuracy"] == acc
    ok = [t for t, a in accs.items() if a >= ref - SETTINGS.get("max_accuracy_drop", 1.0) / 100]
    assert s["recommended_threshold"] == (max(ok) if ok else 0.0)
    assert not (base_run / "validation" / "sd.jsonl").exists()


def test_second_run_skips_every_stage(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    before = (out / "summary.json").read_text()
    summary, ran, calls = rerun(pair, out)
    assert ran == dict.fromkeys(STAGES, False) and calls == []
    assert (out / "summary.json").read_text() == before


def test_eval_batch_is_not_in_the_cache_key_and_gives_the_same_rows(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    summary, ran, calls = rerun(pair, out, eval_batch=4)  # cached rows stay valid: nothing decoded
    assert ran == dict.fromkeys(STAGES, False) and calls == []
    shutil.rmtree(out / "eval")  # decode the evaluation again, batched (BatchedEngine, not .generate)
    summary, ran, calls = rerun(pair, out, eval_batch=4)
    assert ran["evaluate"] and calls == []

    def untimed(r):
        return {k: v for k, v in r.items() if k not in ("sitting", "batch", "metrics")}

    def counts(r):
        return {k: v for k, v in r["metrics"].items() if not k.endswith("_time") and k != "tokens_per_s"}

    for f in sorted((base_run / "eval").glob("*.jsonl")):
        old, new = (
            read_rows(f),
            sorted(read_rows(out / "eval" / f.name), key=lambda r: r["index"]),
        )  # finishing order
        assert [untimed(r) for r in new] == [untimed(r) for r in old], f.name
        assert [counts(r) for r in new] == [counts(r) for r in old], f.name
        assert {r["batch"]["size"] for r in new} == {3}
    assert "throughput" in (out / "report.md").read_text()


def test_changing_thresholds_reruns_only_evaluation_and_report(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    summary, ran, calls = rerun(pair, out, thresholds=(0.1, 0.3, 0.6))
    assert ran == {"mine": False, "train": False, "select": False, "evaluate": True, "report": True}
    assert calls == ["judge"] * SETTINGS["eval_limit"]  # only the new mode is decoded
    assert "judge@0.6" in summary["modes"]


def test_changing_the_accuracy_budget_reruns_selection_without_new_decoding(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    summary, ran, calls = rerun(pair, out, max_accuracy_drop=50.0)
    assert ran == {"mine": False, "train": False, "select": True, "evaluate": True, "report": True}
    assert calls == []  # every candidate and every eval mode was decoded before
    assert summary["validation"]["max_accuracy_drop_points"] == 50.0


def test_resume_recomputes_only_deleted_rows(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    sd = out / "eval" / "sd.jsonl"
    lines = sd.read_text().splitlines()
    sd.write_text(lines[0] + "\n")
    summary, ran, calls = rerun(pair, out, resume=True)
    assert ran == {"mine": False, "train": False, "select": False, "evaluate": True, "report": True}
    assert calls == ["sd", "sd"]
    assert sd.read_text().splitlines()[1:] != [] and len(read_rows(sd)) == 3


def test_more_eval_problems_with_resume_decode_only_the_new_ones(pair, base_run, tmp_path):
    """Figure 3 grows across sessions: --eval-limit 3 -> 5 with --resume decodes 2 problems per mode, and a
    smaller limit reports only its problems (the other rows stay on disk)."""
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    n_modes = len(json.loads((base_run / "summary.json").read_text())["mode_order"])
    summary, ran, calls = rerun(pair, out, eval_limit=5, resume=True)
    assert ran == {"mine": False, "train": False, "select": False, "evaluate": True, "report": True}
    assert len(calls) == 2 * n_modes
    assert all(m["n"] == 5 for m in summary["modes"].values())
    for f in sorted((base_run / "eval").glob("*.jsonl")):
        assert read_rows(out / "eval" / f.name)[:3] == read_rows(f), f.name  # the first 3 rows untouched
    summary, ran, calls = rerun(pair, out, eval_limit=2)
    assert calls == [] and all(m["n"] == 2 for m in summary["modes"].values())
    assert len(read_rows(out / "eval" / "ar.jsonl")) == 5


def test_an_interrupted_stage_needs_resume(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    state = json.loads((out / "state.json").read_text())
    state["stages"]["evaluate"]["status"] = "running"
    (out / "state.json").write_text(json.dumps(state))
    with pytest.raises(PipelineError, match="--resume"):
        rerun(pair, out)
    _, ran, calls = rerun(pair, out, resume=True)
    assert ran["evaluate"] and calls == []  # every row was already there


def test_mined_data_is_never_silently_reused_for_a_smaller_limit(pair, base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    with pytest.raises(PipelineError, match="beyond --mine-limit"):
        rerun(pair, out, mine_limit=5)


def test_run_on_sharded_mining_merged_elsewhere(pair, base_run, tmp_path):
    """`aj mine --shard` x2 + `aj mine-merge`, then `aj run --mined DIR`: same judge as mining in the run."""
    from autojudge.core.mining.run import mine_task
    from autojudge.core.mining.steps import MiningConfig
    from autojudge.core.mining.store import merge_stores
    from autojudge.plugins.toy import ToyArithmeticTask

    task, cfg = (
        ToyArithmeticTask(),
        MiningConfig(max_new_tokens=SETTINGS["max_new_tokens"], draft_k=SETTINGS["k"]),
    )
    for i in range(2):
        mine_task(
            task,
            pair,
            tmp_path / f"s{i}",
            limit=SETTINGS["mine_limit"],
            config=cfg,
            shard=(i, 2),
            progress=False,
        )
    merged = merge_stores([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    before = {p.name: p.read_bytes() for p in sorted((merged.root / "shards").iterdir())}
    out = tmp_path / "run"
    summary, ran, _ = rerun(pair, out, mined=merged.root)
    assert not (out / "mined").exists()  # nothing mined in the run directory
    assert {p.name: p.read_bytes() for p in sorted((merged.root / "shards").iterdir())} == before  # read only
    # the labels mining inside the run found, and a judge trained on them
    key = lambda rows: sorted((r["prompt_id"], r["position"], r["label"]) for r in rows)  # noqa: E731
    assert key(merged.label_rows()) == key(MinedStore(base_run / "mined").label_rows())
    assert (
        summary["mining"]["labels"] == json.loads((base_run / "summary.json").read_text())["mining"]["labels"]
    )
    # the judge trains on every label but the truncated ones (rollouts cut by the budget)
    assert (out / "judge.safetensors").is_file()
    assert summary["training"]["n_labels"] == summary["mining"]["labels"] - summary["mining"]["truncated"]
    assert summary["training"]["excluded_truncated"] == summary["mining"]["truncated"]
    val_ids = json.loads((out / "validation" / "selection.json").read_text())["prompt_ids"]
    mined_ids = {r["prompt_id"] for r in merged.prompt_rows()}
    assert len(val_ids) == SETTINGS["val_limit"] and not mined_ids & set(val_ids)
    # unchanged external data: everything cached; a shard alone or another task is refused
    assert not any(rerun(pair, out, mined=merged.root)[1].values())
    with pytest.raises(PipelineError, match="one shard"):
        rerun(pair, tmp_path / "run2", mined=tmp_path / "s0")
    small = LoadedModel(
        "small-draft",
        make_tiny_model("qwen2", hidden=32),
        pair.tokenizer,
        None,
        torch.float32,
        torch.device("cpu"),
    )
    other = ModelPair(draft=small, target=pair.target, tokenizer=pair.tokenizer)
    with pytest.raises(PipelineError, match="draft model"):
        Pipeline(RunConfig(out=tmp_path / "run3", mined=merged.root, **SETTINGS), pair=other).run()


@pytest.mark.slow
def test_aj_run_subprocess_on_saved_tiny_models(tmp_path):
    """`aj run --draft DIR --target DIR --task toy-arith` as a user would type it; a second call skips all."""
    save_tiny_pair(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "autojudge.cli.main", "run", "--task", "toy-arith",
        "--draft", str(tmp_path / "draft"), "--target", str(tmp_path / "target"), "--dtype", "float32",
        "--mine-limit", "8", "--val-limit", "2", "--eval-limit", "2", "--max-new-tokens", "32",
        "--thresholds", "0.2", "--top-k", "4", "--out", str(tmp_path / "out"), "--no-progress",
        # random tiny models rarely stop: nearly every rollout hits the budget, and training would leave it out
        "--keep-truncated",
    ]  # fmt: skip
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| ar |" in first.stdout and "recommended threshold" in first.stdout
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"ar", "sd", "judge@0.2", "topk:4"} <= set(s["modes"])
    assert s["draft"]["id"] == str(tmp_path / "draft")
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("skipped") == len(STAGES), second.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_real_pair_smollm2_with_layer_dropped_draft(tmp_path):
    """SmolLM2-135M target (bf16), its first 24 of 30 layers as draft, 2-3 prompts per stage, 48 new tokens.

    Mining uses 3 prompts (capped at 8 labels each) so both label classes occur. Deterministic
    (greedy); a few minutes on a 2-core CPU, more when the machine is shared.
    """
    from autojudge.core import presets
    from autojudge.core.models import layer_dropped_copy, load_model

    lm = load_model(presets.SMOLLM2)
    draft = layer_dropped_copy(lm.model, list(range(24)))
    draft.save_pretrained(tmp_path / "draft")
    lm.tokenizer.save_pretrained(tmp_path / "draft")
    del lm, draft
    out = tmp_path / "run"
    cfg = RunConfig(
        task="toy-arith", out=out, draft=str(tmp_path / "draft"), target=presets.SMOLLM2, mine_limit=3,
        val_limit=2, eval_limit=2, max_new_tokens=48, max_mismatches=8, k=3, thresholds=(0.2,), val_thresholds=(),
        top_k=(4,), progress=False,
    )  # fmt: skip
    s = run_pipeline(cfg)
    assert s["target"]["hidden_size"] == 576 and s["modes"]["ar"]["n"] == 2
    assert s["modes"]["ar"]["mean_acceptance_length"] == 1.0
    assert s["modes"]["sd"]["mean_acceptance_length"] > 1.0
    assert {"ar", "sd", "judge@0.2", "topk:4", s["recommended_mode"]} <= set(s["modes"])
    for name in s["mode_order"]:
        rows = read_rows(out / s["samples"][name])
        assert s["modes"][name]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    for p in PLOTS:
        assert (out / "plots" / p).read_bytes().startswith(PNG_MAGIC)


def test_no_judge_when_mining_finds_nothing_to_learn(pair, tmp_path):
    """Draft == target: no mismatch is mined; the run still evaluates and reports, and says why."""
    same = ModelPair(draft=pair.target, target=pair.target, tokenizer=pair.tokenizer)
    out = tmp_path / "run"
    s = run_pipeline(
        RunConfig(out=out, **{**SETTINGS, "mine_limit": 2, "val_limit": 1, "eval_limit": 1}), pair=same
    )
    assert s["mining"]["labels"] == 0 and s["calibrated_threshold"] is None
    assert s["recommended_mode"] == "sd" and s["recommended_threshold"] == 0.0
    assert set(s["modes"]) == {"ar", "sd", "topk:2", "topk:8"}  # no judge mode without a judge
    assert not (out / "judge.safetensors").exists()
    assert "no draft/target mismatch" in json.loads((out / "judge.none.json").read_text())["reason"]
    assert "**no judge**" in (out / "report.md").read_text()
    assert not list((out / "validation").glob("*.jsonl"))  # nothing to choose: validation not decoded
    for p in PLOTS:
        assert (out / "plots" / p).read_bytes().startswith(PNG_MAGIC)
    # cached like any other run
    p = Pipeline(
        RunConfig(out=out, **{**SETTINGS, "mine_limit": 2, "val_limit": 1, "eval_limit": 1}), pair=same
    )
    p.run()
    assert not any(p.ran.values())


# -- issue 17: failed stages, checks before the models, sittings ------------------------------------------


def test_a_failed_stage_is_recorded_and_a_plain_rerun_starts_it_again(pair, base_run, tmp_path, monkeypatch):
    """A stage that raised is `failed` (with the error), not `running`: a re-run needs no --resume.

    Mining keeps the prompts it finished before failing and mines each other prompt once.
    """
    out = tmp_path / "run"
    orig = MinedStore.write_prompt
    written: list[int] = []

    def fails_after_three(self, result):
        if len(written) == 3:
            raise OSError("disk full")
        written.append(result.index)
        orig(self, result)

    monkeypatch.setattr(MinedStore, "write_prompt", fails_after_three)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline(RunConfig(out=out, **SETTINGS), pair=pair)
    rec = json.loads((out / "state.json").read_text())["stages"]["mine"]
    assert rec["status"] == "failed" and "disk full" in rec["error"]
    assert MinedStore(out / "mined").done_indices() == set(written) and len(written) == 3

    def counts(self, result):
        written.append(result.index)
        orig(self, result)

    monkeypatch.setattr(MinedStore, "write_prompt", counts)
    summary, ran, _ = rerun(pair, out)  # no --resume
    assert ran["mine"] and sorted(written) == list(range(SETTINGS["mine_limit"]))  # each prompt mined once
    key = lambda rows: sorted((r["prompt_id"], r["position"], r["label"]) for r in rows)  # noqa: E731
    assert key(MinedStore(out / "mined").label_rows()) == key(MinedStore(base_run / "mined").label_rows())
    state = json.loads((out / "state.json").read_text())
    assert all(state["stages"][st]["status"] == "done" for st in STAGES)
    # the failed session wrote summary.json on its way out, so its wall time is counted too
    assert summary["mining"]["seconds_partial"] is False and summary["mining"]["seconds"] > 0


def test_checks_that_need_no_model_run_before_the_models_load(tmp_path, monkeypatch):
    import autojudge.core.models as models

    def no_models(*a, **kw):
        raise AssertionError("the models were loaded before a check that needs none")

    monkeypatch.setattr(models, "load_pair", no_models)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PipelineError, match="meta.json: missing"):
        Pipeline(RunConfig(out=out, **{**SETTINGS, "mined": empty}))
    assert not out.exists()  # a failed run leaves no empty --out behind
    # the README's command without data and without network: every path tried is named
    monkeypatch.delenv("AJ_DATA_DIR", raising=False)
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AJ_OFFLINE", "1")
    with pytest.raises(PipelineError) as err:
        Pipeline(RunConfig(out=out, **{**SETTINGS, "task": "gsm8k"}))
    msg = str(err.value)
    for name in ("train.jsonl.gz", "train.jsonl"):
        assert f"{tmp_path / 'cache' / 'datasets' / 'gsm8k' / name}\n" in msg + "\n", msg
    assert not out.exists()


def test_speedups_across_sittings_are_flagged(pair, base_run, tmp_path):
    """Rows decoded in another sitting (a --resume) are not timed like the others: their speed-ups are flagged."""
    from autojudge.core.run.evaluate import same_sitting

    s = json.loads((base_run / "summary.json").read_text())
    sittings = {r.get("sitting") for m in s["mode_order"] for r in read_rows(base_run / s["samples"][m])}
    assert len(sittings) == 1 and None not in sittings
    assert s["timing"]["one_sitting"] and s["timing"]["cross_sitting_speedups"] == []
    assert all(s["modes"][m]["speedup_vs_ar_same_sitting"] for m in s["mode_order"])
    assert "†" not in (base_run / "report.md").read_text()
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    sd = out / "eval" / "sd.jsonl"
    sd.write_text(sd.read_text().splitlines()[0] + "\n")
    summary, ran, calls = rerun(pair, out, resume=True)
    assert calls == ["sd", "sd"]
    t, modes = summary["timing"], summary["modes"]
    assert not t["one_sitting"] and len(t["sittings"]) == 2 and "sd" in t["cross_sitting_speedups"]
    assert (
        modes["sd"]["speedup_vs_ar_same_sitting"] is False
        and modes["ar"]["speedup_vs_sd_same_sitting"] is False
    )
    assert modes["topk:2"]["speedup_vs_ar_same_sitting"] is True  # ar and topk:2 were both decoded earlier
    md = (out / "report.md").read_text()
    assert "not like for like" in md and any(
        line.startswith("| sd |") and "†" in line for line in md.splitlines()
    )
    assert not same_sitting([{"prompt_id": "a"}], [{"prompt_id": "b"}])  # older rows: unknown sitting


def test_run_with_a_given_judge_mines_nothing(pair, base_run, tmp_path, monkeypatch):
    """`aj run --judge NAME`: a shipped judge (here: the base run's, shipped under a name) replaces mining and
    training; validation avoids the prompts its labels came from; the report says where the labels came from."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copyfile(base_run / "judge.safetensors", shipped / "toyjudge.safetensors")
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(shipped))
    out = tmp_path / "run"
    summary, ran, calls = rerun(pair, out, judge="toyjudge")
    assert not (out / "mined").exists() and summary["mining"] == {"skipped": True}
    assert (out / "judge.safetensors").read_bytes() == (base_run / "judge.safetensors").read_bytes()
    assert summary["training"]["labels_from"] == "shipped"
    base = json.loads((base_run / "summary.json").read_text())
    assert summary["training"]["n_labels"] == base["training"]["n_labels"]
    val_ids = json.loads((out / "validation" / "selection.json").read_text())["prompt_ids"]
    trained_on = {r["prompt_id"] for r in MinedStore(base_run / "mined").label_rows()}
    assert len(val_ids) == SETTINGS["val_limit"] and not trained_on & set(val_ids)
    assert "shipped judge 'toyjudge'" in (out / "report.md").read_text()
    assert summary["eval_prompt_ids"] == base["eval_prompt_ids"]
    # cached on a rerun; another pair is refused before any decoding
    assert not any(rerun(pair, out, judge="toyjudge")[1].values())
    # the run's own copy, given as a file (the shipped one may have been retrained since): rows kept
    summary, ran, calls = rerun(pair, out, judge=str(out / "judge.safetensors"))
    assert calls == [] and summary["training"]["labels_from"] == "artifact"
    assert (out / "judge.safetensors").read_bytes() == (base_run / "judge.safetensors").read_bytes()
    small = LoadedModel("small-draft", make_tiny_model("qwen2", hidden=32), pair.tokenizer, None, torch.float32,
                        torch.device("cpu"))  # fmt: skip
    with pytest.raises(PipelineError, match="draft model mismatch"):
        rerun(
            ModelPair(draft=small, target=pair.target, tokenizer=pair.tokenizer),
            tmp_path / "run2",
            judge="toyjudge",
        )
    with pytest.raises(PipelineError, match="neither a judge artifact file nor a shipped judge"):
        rerun(pair, tmp_path / "run3", judge="nosuch")
    with pytest.raises(ValueError, match="--mined"):
        RunConfig(out=tmp_path / "x", judge="toyjudge", mined=tmp_path, **SETTINGS)


def test_auto_judge_uses_the_tasks_shipped_judge_only_when_it_fits(pair, base_run, tmp_path, monkeypatch):
    """`--judge auto` (the default): a task naming a shipped judge (`Task.shipped_judge`) that was trained for
    the loaded pair is evaluated without mining; with another pair, a missing artifact or `--judge mine`, the
    run mines and trains as before, and says why."""
    from autojudge.core.run.stages import auto_judge
    from autojudge.plugins.toy import ToyArithmeticTask

    class ToyWithJudge(ToyArithmeticTask):
        shipped_judge = "toyjudge"

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copyfile(base_run / "judge.safetensors", shipped / "toyjudge.safetensors")
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(shipped))
    settings = {**SETTINGS, "mine_limit": 2, "val_limit": 1, "eval_limit": 1}
    assert RunConfig(out=tmp_path / "x", **settings).judge == "auto"
    lines: list[str] = []

    class Console:  # what the pipeline prints
        def print(self, msg: str) -> None:
            lines.append(msg)

    def run(out: Path, run_pair: ModelPair, task, **changes) -> dict:
        return Pipeline(
            RunConfig(out=out, **{**settings, **changes}), pair=run_pair, task=task, console=Console()
        ).run()

    s = run(tmp_path / "auto", pair, ToyWithJudge())
    assert s["mining"] == {"skipped": True} and not (tmp_path / "auto" / "mined").exists()
    assert s["training"]["labels_from"] == "shipped" and s["settings"]["judge"] == "toyjudge"
    assert (tmp_path / "auto" / "judge.safetensors").read_bytes() == (
        shipped / "toyjudge.safetensors"
    ).read_bytes()
    assert any("using the shipped judge 'toyjudge'" in line for line in lines)

    # another draft: the shipped judge does not fit, so the run mines (and says so) instead of failing
    small = LoadedModel("small-draft", make_tiny_model("qwen2", hidden=32), pair.tokenizer, None, torch.float32,
                        torch.device("cpu"))  # fmt: skip
    other = ModelPair(draft=small, target=pair.target, tokenizer=pair.tokenizer)
    lines.clear()
    s = run(tmp_path / "other", other, ToyWithJudge())
    assert s["mining"].get("skipped") is None and (tmp_path / "other" / "mined" / "meta.json").is_file()
    assert any("does not fit this run" in line and "draft model mismatch" in line for line in lines)

    # --judge mine, and a task without a shipped judge: mining as before
    s = run(tmp_path / "mine", pair, ToyWithJudge(), judge="mine")
    assert s["mining"].get("skipped") is None and s["settings"]["judge"] is None
    lines.clear()
    s = run(tmp_path / "plain", pair, ToyArithmeticTask())
    assert s["mining"].get("skipped") is None
    assert any("no judge is shipped for task 'toy-arith'" in line for line in lines)

    # a shipped name whose artifact is not installed
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(tmp_path / "empty"))
    lines.clear()
    s = run(tmp_path / "missing", pair, ToyWithJudge())
    assert s["mining"].get("skipped") is None and any("is not installed" in line for line in lines)
    # a backend without the draft's hidden states (vLLM) passes over a judge that reads them (this one: dd+dt)
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(shipped))
    name, note = auto_judge(ToyWithJudge(), pair, draft_hidden=False)
    assert name is None and "cannot compute" in note
    assert auto_judge(ToyWithJudge(), pair)[0] == "toyjudge"
    # --mined DIR with the default judge: the given labels are used, no shipped judge
    assert RunConfig(out=tmp_path / "y", mined=tmp_path, **settings).judge is None


def test_eval_split_and_no_validation(pair, base_run, tmp_path, monkeypatch):
    """`--eval-split` evaluates another split; validation prompts that are also evaluated are refused (nothing
    evaluated chooses the threshold), and `--val-limit 0` keeps the judge's calibrated threshold unchecked."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copyfile(base_run / "judge.safetensors", shipped / "toyjudge.safetensors")
    monkeypatch.setenv("AJ_SHIPPED_JUDGES", str(shipped))
    base = {
        **SETTINGS,
        "judge": "toyjudge",
        "eval_limit": 9,
        "eval_split": "train",
        "thresholds": (),
        "top_k": (),
    }
    # the judge saw train prompts 0-7, so validation takes train-8, which train's first 9 include
    with pytest.raises(PipelineError, match="also evaluated .*--val-limit 0"):
        run_pipeline(RunConfig(out=tmp_path / "overlap", **{**base, "val_limit": 1}), pair=pair)
    out = tmp_path / "noval"
    s = run_pipeline(RunConfig(out=out, **{**base, "val_limit": 0}), pair=pair)
    cal = s["calibrated_threshold"]
    assert s["eval_split"] == "train" and s["eval_prompt_ids"] == [f"train-{i}" for i in range(9)]
    assert s["recommended_threshold"] == cal and s["validation"]["unchecked"] is True
    assert s["validation"]["prompt_ids"] == [] and not list((out / "validation").glob("*.jsonl"))
    assert set(s["modes"]) == {"ar", "sd", f"judge@{cal:.4g}"}
    assert "NOT checked on validation prompts" in (out / "report.md").read_text()
    with pytest.raises(PipelineError, match="split 'nosuch'"):
        run_pipeline(RunConfig(out=tmp_path / "bad", **{**base, "eval_split": "nosuch"}), pair=pair)


def test_figure3_from_two_runs_at_different_k(pair, base_run, tmp_path):
    """bench/figure3.py merges runs (here k=4 and k=2 on the same problems) into one table, goal lines, a plot."""
    import importlib.util

    out2 = tmp_path / "k2"
    shutil.copytree(
        base_run, out2
    )  # a copy re-run at another k keeps its target-only rows (k is not in their key)
    _, ran, calls = rerun(pair, out2, k=2)
    assert ran["evaluate"] and calls and "ar" not in calls
    assert read_rows(out2 / "eval" / "ar.jsonl") == read_rows(base_run / "eval" / "ar.jsonl")
    spec = importlib.util.spec_from_file_location(
        "figure3", Path(__file__).parents[1] / "bench" / "figure3.py"
    )
    fig3 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig3)
    md, png = tmp_path / "fig3.md", tmp_path / "fig3.png"
    assert fig3.main([str(base_run), str(out2), "--md", str(md), "--png", str(png)]) == 0
    text = md.read_text()
    runs = [fig3.load_run(base_run), fig3.load_run(out2)]
    n_rows = sum(len(s["modes"]) for s in runs)
    assert (
        len(
            [
                line
                for line in text.splitlines()
                if line.startswith(("| run ", "| k2 ", f"| {base_run.name} "))
            ]
        )
        == n_rows + 1
    )
    assert png.read_bytes().startswith(PNG_MAGIC)
    for s in runs:
        g = fig3.goal(
            s, max_drop=100.0
        )  # every threshold within budget: the best is the judge with most tokens/cycle
        judges = [a for a in s["modes"].values() if a["kind"] == "judge"]
        best = max(judges, key=lambda a: a["mean_acceptance_length"])
        assert g["best_within_budget"] == best["name"] and g["k"] == s["settings"]["k"]
        assert g["ratio_vs_sd"] == pytest.approx(
            best["mean_acceptance_length"] / s["modes"]["sd"]["mean_acceptance_length"]
        )
        for v in g[
            "versus_topk"
        ]:  # the rival is the most productive Top-K point at least as accurate, if any
            rivals = [
                t for t in s["modes"].values() if t["kind"] == "topk" and t["accuracy"] >= v["accuracy"]
            ]
            assert (v["topk"] is None) == (not rivals)
    assert "x lossless SD's tokens per cycle" in text or "no judge threshold within" in text
