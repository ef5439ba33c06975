"""Evaluation of decoding modes: mode specs, per-sample rows, resume, aggregation, threshold choice."""

from __future__ import annotations

import json

import pytest
import torch

from autojudge.core.engine import SpeculativeEngine
from autojudge.core.run.evaluate import (
    EvalSettings,
    ModeSpec,
    aggregate_modes,
    aggregate_rows,
    build_modes,
    evaluate_modes,
    key_file_matches,
    load_mode_rows,
    make_judge,
    metrics_from_row,
    mode_key,
    read_rows,
)
from autojudge.core.run.pipeline import select_threshold
from autojudge.plugins.toy import ToyArithmeticTask


def test_mode_names_order_and_dedupe():
    modes = build_modes([0.3, 0.1, 0.1, 0.30000001], [8, 2, 2])
    assert [m.name for m in modes] == ["ar", "sd", "judge@0.1", "judge@0.3", "topk:2", "topk:8"]
    assert ModeSpec("topk", top_k=4).file_stem == "topk_4"
    assert ModeSpec("judge", threshold=0.25).engine_mode == "judge"
    with pytest.raises(ValueError):
        ModeSpec("judge", threshold=1.5)
    with pytest.raises(ValueError):
        ModeSpec("topk", top_k=0)
    assert make_judge(ModeSpec("sd")) is None
    assert make_judge(ModeSpec("topk", top_k=3)).k == 3


def _row(pid: str, correct: bool, emitted: list[int], wall: float, answer=None, judge_acc: int = 0) -> dict:
    accepted = [e - 1 for e in emitted]
    return {
        "prompt_id": pid,
        "correct": correct,
        "answer": answer,
        "finish_reason": "eos",
        "metrics": {
            "num_output_tokens": sum(emitted) + 1, "num_drafts": len(emitted),
            "num_draft_tokens": 4 * len(emitted), "num_accepted_tokens": sum(accepted),
            "num_judge_accepted": judge_acc, "wall_time": wall,
        },
        "cycles": {"proposed": [4] * len(emitted), "accepted": accepted, "emitted": emitted},
    }  # fmt: skip


def test_aggregation_is_recomputed_from_rows():
    rows = {
        "ar": [_row("a", True, [1] * 9, 2.0, answer="1"), _row("b", False, [1] * 19, 4.0, answer="2")],
        "sd": [_row("a", True, [3, 3, 3], 1.0, answer="1"), _row("b", False, [2, 2, 2, 2, 2, 2, 2, 2, 2, 1], 2.0, answer="2")],
        "judge@0.2": [_row("a", True, [5, 4], 0.5, answer="1", judge_acc=2), _row("b", True, [5, 5, 5, 4], 1.0, answer="3", judge_acc=3)],
    }  # fmt: skip
    modes = [ModeSpec("ar"), ModeSpec("sd"), ModeSpec("judge", threshold=0.2)]
    aggs = aggregate_modes(rows, modes)
    ar, sd, j = aggs["ar"], aggs["sd"], aggs["judge@0.2"]
    assert ar["accuracy"] == 0.5 and j["accuracy"] == 1.0
    assert j["accuracy_delta_points"] == pytest.approx(50.0)
    assert ar["mean_acceptance_length"] == pytest.approx(1.0)
    assert sd["mean_acceptance_length"] == pytest.approx((9 + 19) / 13)
    assert j["mean_acceptance_length"] == pytest.approx(28 / 6)
    assert ar["tokens_per_s"] == pytest.approx(30 / 6.0)
    assert j["speedup_vs_ar"] == pytest.approx((30 / 1.5) / (30 / 6.0))
    assert j["speedup_vs_sd"] == pytest.approx((30 / 1.5) / (30 / 3.0))
    assert j["num_judge_accepted"] == 5 and j["threshold"] == 0.2
    assert j["answer_agreement_vs_ar"] == 0.5
    assert sum(j["acceptance_histogram"]) == 6 and j["acceptance_histogram"][4] == 4
    m = metrics_from_row(rows["sd"][0])
    assert m.mean_acceptance_length == 3.0 and m.num_drafts == 3


def test_a_report_on_part_of_a_batch_counts_that_batch_s_throughput():
    """A report on fewer problems than a cached batched run decoded: without the mode's whole file,
    the subset is charged the batch's time up to its last row (too slow); with it, the batch's time
    in proportion to the subset's tokens, i.e. the batch's throughput."""

    def row(pid: str, tokens: int, finish: float, batch_id: str = "b1") -> dict:
        r = _row(pid, True, [1] * (tokens - 1), finish)  # _row adds the prefill token
        r["batch"] = {"size": 4, "id": batch_id, "wall_time": finish}
        return r

    whole = [
        row("a", 10, 2.0),
        row("b", 30, 5.0),
        row("c", 40, 6.0),
        row("d", 20, 10.0),
        row("e", 50, 4.0, "b2"),
    ]
    subset = [whole[0], whole[3]]  # 30 of batch b1's 100 tokens, its last row finishing at 10 s
    assert aggregate_rows(subset)["tokens_per_s"] == pytest.approx(30 / 10.0)
    agg = aggregate_rows(subset, whole)
    assert agg["wall_time"] == pytest.approx(10.0 * 30 / 100)
    assert agg["tokens_per_s"] == pytest.approx(100 / 10.0)  # batch b1's throughput
    # the whole batch (and a batch with all of its rows present) counts its time once, as before
    assert aggregate_rows(whole[:4], whole)["wall_time"] == pytest.approx(10.0)
    assert aggregate_rows(whole, whole)["wall_time"] == pytest.approx(14.0)
    # two batches partly present: each charged its own share
    assert aggregate_rows([whole[0], whole[4]], whole)["wall_time"] == pytest.approx(1.0 + 4.0)
    modes = [ModeSpec("ar")]
    aggs = aggregate_modes({"ar": subset}, modes, context_by_mode={"ar": whole})
    assert aggs["ar"]["tokens_per_s"] == pytest.approx(10.0)


def test_threshold_selection_uses_only_the_given_validation_aggregates():
    def agg(kind, acc, t=None):
        return {"kind": kind, "accuracy": acc, "threshold": t}

    val = {
        "ar": agg("ar", 0.80),
        "judge@0.1": agg("judge", 0.80, 0.1),
        "judge@0.2": agg("judge", 0.795, 0.2),
        "judge@0.5": agg("judge", 0.70, 0.5),
        "topk:8": agg("topk", 0.99),  # a baseline never becomes the recommendation
    }
    sel = select_threshold(val, max_drop_points=1.0)
    assert sel["recommended_threshold"] == 0.2 and sel["recommended_mode"] == "judge@0.2"
    assert [c["within_budget"] for c in sel["candidates"]] == [True, True, False]
    assert select_threshold(val, max_drop_points=0.0)["recommended_threshold"] == 0.1
    none = select_threshold({"ar": agg("ar", 0.9), "judge@0.5": agg("judge", 0.5, 0.5)}, 1.0)
    assert (
        none["recommended_threshold"] == 0.0
        and none["recommended_mode"] == "sd"
        and not none["within_budget"]
    )
    with pytest.raises(ValueError, match="target-only"):
        select_threshold({"judge@0.5": agg("judge", 0.5, 0.5)}, 1.0)


def test_read_rows_drops_a_truncated_last_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert read_rows(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(ValueError, match="corrupt row"):
        read_rows(p)
    assert read_rows(tmp_path / "missing.jsonl") == []


class CountingEngine(SpeculativeEngine):
    calls: list[str]

    def generate(self, prompt, **kw):
        self.calls.append(kw["mode"])
        return super().generate(prompt, **kw)


@pytest.fixture()
def engine(tiny_pair, char_tokenizer):
    target, draft = tiny_pair
    eng = CountingEngine(target, draft, char_tokenizer)
    eng.calls = []
    return eng


def test_evaluate_rows_resume_and_cache_keys(engine, tmp_path):
    task = ToyArithmeticTask()
    examples = task.load("test", limit=3)
    modes = [ModeSpec("ar"), ModeSpec("sd"), ModeSpec("topk", top_k=3)]
    judges = {"topk:3": make_judge(modes[2])}
    kw = dict(settings=EvalSettings(k=4, max_new_tokens=24), judges=judges, base_key={"x": 1})
    rows = evaluate_modes(task, engine, examples, modes, tmp_path, **kw)
    assert len(engine.calls) == 9
    for m in modes:
        on_disk = read_rows(tmp_path / f"{m.file_stem}.jsonl")
        assert on_disk == rows[m.name] and [r["prompt_id"] for r in on_disk] == [e.id for e in examples]
        for r, ex in zip(on_disk, examples, strict=True):
            assert r["mode"] == m.name
            assert r["answer"] == task.extract_answer(r["output"])
            assert r["correct"] == (r["answer"] is not None and task.is_correct(r["answer"], ex))
            assert metrics_from_row(r).num_output_tokens == r["metrics"]["num_output_tokens"]
    # float32: lossless SD gives exactly the target-only text
    assert [r["output"] for r in rows["sd"]] == [r["output"] for r in rows["ar"]]
    assert aggregate_rows(rows["ar"])["mean_acceptance_length"] == pytest.approx(1.0)

    # complete files with the same key are reused: nothing decoded
    engine.calls.clear()
    evaluate_modes(task, engine, examples, modes, tmp_path, **kw)
    assert engine.calls == []

    # rows lost (crash): resume decodes only the missing ones; a torn last line is dropped
    sd_path = tmp_path / "sd.jsonl"
    lines = sd_path.read_text().splitlines()
    sd_path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    again = evaluate_modes(task, engine, examples, modes, tmp_path, resume=True, **kw)
    assert engine.calls == ["sd", "sd"]
    assert [r["output"] for r in again["sd"]] == [r["output"] for r in rows["sd"]]

    # without resume, an incomplete mode file is recomputed from scratch
    engine.calls.clear()
    sd_path.write_text(sd_path.read_text().splitlines()[0] + "\n")
    evaluate_modes(task, engine, examples, modes, tmp_path, **kw)
    assert engine.calls == ["sd"] * 3

    # another key (settings changed) invalidates the cached rows
    engine.calls.clear()
    evaluate_modes(task, engine, examples, modes[:1], tmp_path, **{**kw, "base_key": {"x": 2}})
    assert engine.calls == ["ar"] * 3
    assert json.loads((tmp_path / "ar.key.json").read_text())["base"] == {"x": 2}


def test_extending_the_examples_decodes_only_the_new_ones_and_keeps_other_rows(engine, tmp_path):
    task = ToyArithmeticTask()
    examples = task.load("test", limit=4)
    modes = [ModeSpec("ar"), ModeSpec("sd")]
    kw = dict(settings=EvalSettings(k=4, max_new_tokens=24), judges={}, base_key={"x": 1})
    first = evaluate_modes(task, engine, examples[:2], modes, tmp_path, **kw)
    engine.calls.clear()
    more = evaluate_modes(task, engine, examples, modes, tmp_path, resume=True, **kw)
    assert engine.calls == ["ar", "sd", "ar", "sd"]  # two new examples per mode, the first two kept
    assert more["ar"][:2] == first["ar"]
    # back to fewer examples: nothing decoded, only those rows returned, the others kept on disk
    engine.calls.clear()
    fewer = evaluate_modes(task, engine, examples[1:3], modes, tmp_path, **kw)
    assert engine.calls == [] and [r["prompt_id"] for r in fewer["sd"]] == [e.id for e in examples[1:3]]
    assert sorted(r["prompt_id"] for r in read_rows(tmp_path / "sd.jsonl")) == sorted(e.id for e in examples)
    assert [r["prompt_id"] for r in load_mode_rows(tmp_path, modes[1], [examples[3].id])] == [examples[3].id]


def test_a_key_file_that_held_the_example_ids_is_still_reused(engine, tmp_path):
    """Run directories written before the key dropped the ids keep their rows (and a changed judge does not)."""
    task = ToyArithmeticTask()
    examples = task.load("test", limit=2)
    mode = ModeSpec("sd")
    kw = dict(settings=EvalSettings(k=4, max_new_tokens=24), judges={}, base_key={"x": 1})
    evaluate_modes(task, engine, examples, [mode], tmp_path, **kw)
    old_base = {"x": 1, "ids": [e.id for e in examples]}
    legacy = {"key": mode_key(old_base, mode, None), "mode": mode.describe(), "base": old_base}
    (tmp_path / "sd.key.json").write_text(json.dumps(legacy))
    engine.calls.clear()
    evaluate_modes(task, engine, examples, [mode], tmp_path, **kw)
    assert engine.calls == []
    assert json.loads((tmp_path / "sd.key.json").read_text())["key"] == mode_key({"x": 1}, mode, None)
    judged = ModeSpec("judge", threshold=0.5)
    assert key_file_matches(
        {"key": mode_key(old_base, judged, "sha-a"), "base": old_base},
        mode_key({"x": 1}, judged, "sha-a"),
        judged,
        "sha-a",
    )
    assert not key_file_matches(  # the rows came from another judge file
        {"key": mode_key(old_base, judged, "sha-a"), "base": old_base},
        mode_key({"x": 1}, judged, "sha-b"),
        judged,
        "sha-b",
    )
    assert not key_file_matches(  # other settings
        {"key": mode_key(old_base, mode, None), "base": old_base}, mode_key({"x": 2}, mode, None), mode, None
    )


def test_evaluate_refuses_duplicate_ids(engine, tmp_path):
    task = ToyArithmeticTask()
    ex = task.load("test", limit=1)
    with pytest.raises(ValueError, match="unique"):
        evaluate_modes(
            task, engine, ex + ex, [ModeSpec("ar")], tmp_path, settings=EvalSettings(), judges={}, base_key={}
        )


def test_make_judge_loads_an_artifact_with_the_mode_threshold(tmp_path, tiny_pair):
    from autojudge.judges.artifact import save_judge

    target, draft = tiny_pair
    rec = {"id": "t", "config_sha256": "x", "vocab_sha256": "y", "hidden_size": target.config.hidden_size}
    path = save_judge(tmp_path / "j.safetensors", {"dt": torch.zeros(target.config.hidden_size)}, 0.0, ["dt"],
                      threshold=0.5, draft=rec, target=rec)  # fmt: skip
    judge = make_judge(ModeSpec("judge", threshold=0.125), path)
    assert judge.threshold == 0.125
    with pytest.raises(ValueError, match="artifact"):
        make_judge(ModeSpec("judge", threshold=0.1))


TIMING_KEYS = ("prefill_time", "draft_time", "target_time", "judge_time", "wall_time", "tokens_per_s")


def _untimed(row: dict) -> dict:
    """A row without what depends on the clock or the batch (times, sitting, batch record)."""
    r = {k: v for k, v in row.items() if k not in ("sitting", "batch")}
    r["metrics"] = {k: v for k, v in row["metrics"].items() if k not in TIMING_KEYS}
    return r


def test_batched_evaluation_rows_equal_batch_1_rows(tiny_pair, char_tokenizer, tmp_path):
    """eval batch 4 (BatchedEngine) writes the same rows as batch 1 (SpeculativeEngine), minus timings."""
    from autojudge.core.batched import BatchedEngine
    from autojudge.core.judge import LinearJudge

    target, draft = tiny_pair
    task = ToyArithmeticTask()
    examples = task.load("test", limit=6)
    g = torch.Generator().manual_seed(5)
    w = {
        "dd": torch.randn(draft.config.hidden_size, generator=g),
        "dt": torch.randn(target.config.hidden_size, generator=g),
    }
    modes = [ModeSpec("ar"), ModeSpec("sd"), ModeSpec("judge", threshold=0.5), ModeSpec("topk", top_k=3)]
    judges = {
        "judge@0.5": LinearJudge(w, bias=0.0, threshold=0.5, blocks=("dd", "dt")),
        "topk:3": make_judge(modes[3]),
    }
    kw = dict(settings=EvalSettings(k=4, max_new_tokens=24), judges=judges, base_key={"x": 1})
    single = evaluate_modes(task, SpeculativeEngine(target, draft, char_tokenizer), examples, modes,
                            tmp_path / "b1", **kw)  # fmt: skip
    batched_engine = BatchedEngine(target, draft, char_tokenizer)
    batched = evaluate_modes(task, SpeculativeEngine(target, draft, char_tokenizer), examples, modes,
                             tmp_path / "b4", batch=4, batch_engine=batched_engine, **kw)  # fmt: skip
    for m in modes:
        assert [_untimed(r) for r in batched[m.name]] == [_untimed(r) for r in single[m.name]], m.name
        on_disk = read_rows(tmp_path / "b4" / f"{m.file_stem}.jsonl")  # in finishing order
        assert sorted(on_disk, key=lambda r: r["index"]) == batched[m.name]
        # one continuous-batching call per mode: 4 rows at once, the next example takes a finished row's slot
        assert [r["batch"]["size"] for r in batched[m.name]] == [4] * 6
        assert len({r["batch"]["id"] for r in batched[m.name]}) == 1
        assert all(r["batch"] == {"size": 1} for r in single[m.name])
    for name in ("judge@0.5", "topk:3"):  # the judges did decide: some mismatches accepted
        assert sum(r["metrics"]["num_judge_accepted"] for r in batched[name]) > 0, name
    agg4, agg1 = aggregate_rows(batched["sd"]), aggregate_rows(single["sd"])
    assert agg4["tokens_per_s_kind"] == "throughput" and agg4["batch_sizes"] == [4]
    assert agg1["tokens_per_s_kind"] == "latency" and agg1["batch_sizes"] == [1]
    # each row records the call's time up to its finish; the call's wall time is that of its last row
    walls = [r["batch"]["wall_time"] for r in read_rows(tmp_path / "b4" / "sd.jsonl")]
    assert walls == sorted(walls) and agg4["wall_time"] == pytest.approx(max(walls))

    # a crash mid-run: rows already written are kept, resume decodes only the rest, no duplicates
    path = tmp_path / "b4" / "ar.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:4]))
    again = evaluate_modes(task, SpeculativeEngine(target, draft, char_tokenizer), examples, modes,
                           tmp_path / "b4", batch=4, batch_engine=batched_engine, resume=True, **kw)  # fmt: skip
    assert [_untimed(r) for r in again["ar"]] == [_untimed(r) for r in single["ar"]]
    assert sorted(r["batch"]["size"] for r in read_rows(path)) == [2, 2, 4, 4, 4, 4]
    assert len(read_rows(path)) == len(examples)


def test_wilson_interval_and_paired_change():
    from autojudge.core.run.evaluate import paired_change, wilson_interval

    lo, hi = wilson_interval(80, 100)
    assert 0.71 < lo < 0.72 and 0.86 < hi < 0.87  # textbook values 0.711, 0.867
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None
    ref = [True] * 6 + [False] * 4
    mine = [True] * 5 + [False] + [True] + [False] * 3  # one lost (index 5), one gained (index 6)
    pc = paired_change(mine, ref)
    assert (pc["gained"], pc["lost"], pc["delta_points"]) == (1, 1, 0.0)
    assert pc["ci95_points"][0] < 0 < pc["ci95_points"][1]
    same = paired_change(ref, ref)
    assert same["ci95_points"] == [0.0, 0.0] and same["gained"] == same["lost"] == 0


def test_aggregate_modes_reports_intervals_flips_and_output_agreement():
    from autojudge.core.run.evaluate import ModeSpec, aggregate_modes

    def row(pid, correct, output):
        return {"prompt_id": pid, "correct": correct, "output": output, "answer": output[-1],
                "metrics": {}, "wall_time": 1.0}  # fmt: skip

    ar = [row("a", True, "x=1"), row("b", True, "y=2"), row("c", False, "z=3")]
    sd = [row("a", True, "x=1"), row("b", False, "y=5"), row("c", True, "z=4")]
    modes = [ModeSpec("ar"), ModeSpec("sd")]
    aggs = aggregate_modes({"ar": ar, "sd": sd}, modes)
    s = aggs["sd"]
    assert s["paired_vs_ar"]["gained"] == 1 and s["paired_vs_ar"]["lost"] == 1
    assert s["identical_output_vs_ar"] == pytest.approx(1 / 3)
    assert s["common_prefix_vs_ar"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert s["accuracy_ci95"][0] < 2 / 3 < s["accuracy_ci95"][1]
    assert aggs["ar"]["identical_output_vs_ar"] == 1.0
