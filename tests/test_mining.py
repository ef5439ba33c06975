"""Mining (Algorithm 1) on tiny float32 models and the toy task: labels, speed-ups, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_pair
from safetensors.torch import load_file

from autojudge.core.mining.run import mine_task
from autojudge.core.mining.steps import Miner, MiningConfig, MismatchRecord, PromptResult
from autojudge.core.mining.store import MINED_FORMAT, MinedDataError, MinedStore, merge_stores, read_mined
from autojudge.core.models import ModelPair
from autojudge.plugins.toy import ToyArithmeticTask

MAX_NEW = 32


@pytest.fixture(scope="module")
def pair(loaded_tiny_pair) -> ModelPair:
    return loaded_tiny_pair


#: per-label speed counters: they depend on the driver and, with the batched driver, on which prompts
#: shared the batch (the width of each step); labels, answers and features do not
SPEED_FIELDS = ("rollout_target_forwards", "rollout_target_tokens")


def mined_content(root: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """A mined directory's label rows (without the speed counters) and its shard tensors."""
    store = MinedStore(root)
    rows = sorted(
        ({k: v for k, v in r.items() if k not in SPEED_FIELDS} for r in store.label_rows()),
        key=lambda r: (r["prompt_id"], r["position"]),
    )
    tensors = {p.name: load_file(p) for p in sorted((root / "shards").glob("*.safetensors"))}
    return rows, tensors


def test_fast_mining_gives_the_naive_labels_with_fewer_target_passes(pair):
    task = ToyArithmeticTask()
    examples = task.load("train", limit=6)
    fast = Miner(
        task, pair.target.model, pair.draft.model, pair.tokenizer, MiningConfig(max_new_tokens=MAX_NEW)
    )
    naive = Miner(
        task,
        pair.target.model,
        pair.draft.model,
        pair.tokenizer,
        MiningConfig(max_new_tokens=MAX_NEW, naive=True),
    )
    n_labels = fast_fwd = naive_fwd = 0
    both_labels = set()
    for i, ex in enumerate(examples):
        a, b = fast.mine(ex, i), naive.mine(ex, i)
        assert a.response == b.response and a.skipped == b.skipped
        assert [r.row() for r in a.records] == [r.row() | {
            "rollout_target_forwards": ra.rollout_target_forwards, "rollout_target_tokens": ra.rollout_target_tokens,
        } for r, ra in zip(b.records, a.records, strict=True)]  # fmt: skip
        for ra, rb in zip(a.records, b.records, strict=True):
            for name in ("dt", "tt", "dd", "x"):
                torch.testing.assert_close(ra.features[name], rb.features[name], atol=2e-4, rtol=1e-4)
            assert int(ra.features["draft_rank"]) == int(rb.features["draft_rank"])
        assert a.final_response == b.final_response
        n_labels += len(a.records)
        both_labels |= {r.label for r in a.records}
        fast_fwd += sum(r.rollout_target_forwards for r in a.records)
        naive_fwd += sum(r.rollout_target_forwards for r in b.records)
    assert n_labels >= 10, "fixture too weak: few mismatches"
    assert both_labels == {0, 1}, "expected both important and unimportant labels"
    # random tiny models rarely re-join the original wording after a swap, so the gain here is small;
    # bench/bench_mining.py measures the real one on real models
    assert fast_fwd * 1.3 <= naive_fwd, f"rollouts not cheaper: {fast_fwd} vs {naive_fwd} target passes"


def test_algorithm_invariants(pair):
    task = ToyArithmeticTask()
    miner = Miner(
        task, pair.target.model, pair.draft.model, pair.tokenizer, MiningConfig(max_new_tokens=MAX_NEW)
    )
    for i, ex in enumerate(task.load("train", limit=5)):
        res = miner.mine(ex, i)
        positions = [r.position for r in res.records]
        assert positions == sorted(set(positions)), "mismatches are visited once, in order"
        for r in res.records:
            assert r.draft_token != r.target_token
            assert r.label == int(not task.equivalent(r.answer_original, r.answer_alternative, ex))
            assert r.answer_original == res.answer  # labels compare with the target's own answer
            assert r.features["dt"].shape == (pair.target.hidden_size,)
            assert r.features["dd"].shape == (pair.draft.hidden_size,)
            assert r.features["x"].shape == (3,) and 0 <= float(r.features["x"][0]) <= 1
            assert int(r.features["draft_rank"]) >= 1  # the draft token is not the target's argmax
        if not any(r.label == 0 for r in res.records):
            assert res.final_response == res.response  # nothing adopted


class _FailingChecks(ToyArithmeticTask):
    """The toy task whose equivalence check always fails (a sandbox or judge endpoint that is down)."""

    def equivalent_outcomes(self, items):
        from autojudge.core.compare.pool import CheckOutcome

        return [CheckOutcome(error="SandboxError: daemon unreachable") for _ in items]


def test_a_failed_check_labels_important_and_keeps_the_error(pair, tmp_path):
    task = _FailingChecks()
    miner = Miner(
        task, pair.target.model, pair.draft.model, pair.tokenizer, MiningConfig(max_new_tokens=MAX_NEW)
    )
    records = [r for i, ex in enumerate(task.load("train", limit=4)) for r in miner.mine(ex, i).records]
    with_answer = [r for r in records if r.answer_alternative is not None]
    assert with_answer, "fixture too weak: no rollout with an answer"
    for r in with_answer:
        assert r.label == 1 and r.check_error == "SandboxError: daemon unreachable" and not r.timed_out
    ok = Miner(
        ToyArithmeticTask(),
        pair.target.model,
        pair.draft.model,
        pair.tokenizer,
        MiningConfig(max_new_tokens=MAX_NEW),
    )
    assert all(r.check_error is None for r in ok.mine(task.load("train", limit=1)[0], 0).records)


def test_store_resume_rejects_other_settings_and_cleans_orphans(pair, tmp_path):
    task = ToyArithmeticTask()
    out = tmp_path / "mined"
    cfg = MiningConfig(max_new_tokens=MAX_NEW)
    s1 = mine_task(task, pair, out, limit=3, config=cfg, progress=False)
    assert s1["prompts"] == 3
    with pytest.raises(MinedDataError, match="--resume"):
        mine_task(task, pair, out, limit=3, config=cfg, progress=False)
    with pytest.raises(MinedDataError, match="different settings"):
        mine_task(
            task,
            pair,
            out,
            limit=3,
            config=MiningConfig(max_new_tokens=MAX_NEW + 1),
            resume=True,
            progress=False,
        )
    # an orphan shard (crash after the tensors, before the completion marker) is removed on resume
    orphan = out / "shards" / "shard-000004.safetensors"
    orphan.write_bytes(b"partial")
    s2 = mine_task(task, pair, out, limit=5, config=cfg, resume=True, progress=False)
    assert s2["prompts"] == 5
    assert not orphan.exists() or load_file(orphan)  # replaced by a whole file, or the prompt had no labels
    rows = MinedStore(out).label_rows()
    assert len({(r["prompt_id"], r["position"]) for r in rows}) == len(rows)


def test_shards_merge_into_the_full_run(pair, tmp_path):
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW)
    mine_task(task, pair, tmp_path / "full", limit=6, config=cfg, progress=False)
    mine_task(task, pair, tmp_path / "s0", limit=6, config=cfg, shard=(0, 2), progress=False)
    mine_task(task, pair, tmp_path / "s1", limit=6, config=cfg, shard=(1, 2), progress=False)
    merge_stores([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    full_rows, full_t = mined_content(tmp_path / "full")
    merged_rows, merged_t = mined_content(tmp_path / "merged")
    assert merged_rows == full_rows and full_rows
    assert full_t.keys() == merged_t.keys()
    for name in full_t:
        for key in full_t[name]:
            torch.testing.assert_close(full_t[name][key], merged_t[name][key])
    with pytest.raises(MinedDataError, match="overlapping"):
        merge_stores([tmp_path / "s0", tmp_path / "full"], tmp_path / "bad")
    mine_task(
        task,
        pair,
        tmp_path / "other",
        limit=2,
        config=MiningConfig(max_new_tokens=8),
        shard=(1, 2),
        progress=False,
    )
    with pytest.raises(MinedDataError, match="different models, task or settings"):
        merge_stores([tmp_path / "s0", tmp_path / "other"], tmp_path / "bad2")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    """`aj mine` killed with SIGKILL, then resumed, equals an uninterrupted run."""
    save_tiny_pair(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def aj_mine(out: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "autojudge.cli.main", "mine", "--task", "toy-arith",
            "--draft", str(tmp_path / "draft"), "--target", str(tmp_path / "target"), "--dtype", "float32",
            "--limit", "10", "--max-new-tokens", str(MAX_NEW), "--out", str(out), "--no-progress", "--inflight", "2",
            *extra,
        ]  # fmt: skip

    killed = tmp_path / "killed"
    proc = subprocess.Popen(aj_mine(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = list((killed / "prompts").glob("*.json")) if (killed / "prompts").is_dir() else []
        if len(done) >= 3 or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        f"mining finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list((killed / "prompts").glob("*.json")))
    assert 3 <= n_before < 10
    subprocess.run(aj_mine(killed, "--resume"), env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run(aj_mine(clean), env=env, check=True, capture_output=True)
    rows_k, t_k = mined_content(killed)
    rows_c, t_c = mined_content(clean)
    assert rows_k == rows_c and rows_c
    assert t_k.keys() == t_c.keys()
    for name in t_c:
        for key in t_c[name]:
            torch.testing.assert_close(t_k[name][key], t_c[name][key])
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["prompts"] == 10
    assert not [p for p in (killed / "shards").iterdir() if p.name.startswith(".")], "temporary files left"


def test_aj_mine_merge_cli(pair, tmp_path):
    from click.testing import CliRunner

    from autojudge.cli.mine_cmd import mine_merge

    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=16)
    for i in range(2):
        mine_task(task, pair, tmp_path / f"s{i}", limit=4, config=cfg, shard=(i, 2), progress=False)
    res = CliRunner().invoke(
        mine_merge, [str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["prompts"] == 4
    res = CliRunner().invoke(mine_merge, [str(tmp_path / "s0"), "--out", str(tmp_path / "m")])
    assert res.exit_code != 0 and "already exists" in str(res.exception)


def _fake_result(index: int, n: int) -> PromptResult:
    """A prompt result with ``n`` labelled mismatches and features of the store's shapes (hidden 6/4)."""
    g = torch.Generator().manual_seed(index)
    records = [
        MismatchRecord(
            prompt_id=f"p{index}",
            position=i,
            draft_token=1,
            target_token=2,
            label=i % 2,
            answer_original="1",
            answer_alternative="1" if i % 2 == 0 else "2",
            correct_original=True,
            correct_alternative=i % 2 == 0,
            timed_out=False,
            rollout_target_forwards=1,
            rollout_target_tokens=1,
            features={
                "dt": torch.randn(6, generator=g),
                "tt": torch.randn(6, generator=g),
                "dd": torch.randn(4, generator=g),
                "x": torch.rand(3, generator=g),
                "draft_rank": torch.tensor(i, dtype=torch.int32),
            },
        )  # fmt: skip
        for i in range(n)
    ]
    return PromptResult(prompt_id=f"p{index}", index=index, response="r", answer="1", correct=True, records=records,
                        final_response="r")  # fmt: skip


def test_the_store_reads_what_it_writes_with_one_finished_rule(tmp_path):
    """Writer (resume) and reader agree: a prompt is finished when its prompts/NNNNNN.json exists."""
    store = MinedStore(tmp_path / "m")
    meta = {"task": "toy", "split": "train", "draft": {"id": "d", "hidden_size": 4},
            "target": {"id": "t", "hidden_size": 6}, "settings": {}}  # fmt: skip
    store.open(meta, resume=False)
    for index, n in ((0, 3), (1, 0), (2, 2)):
        store.write_prompt(_fake_result(index, n))
    assert store.done_indices() == {0, 1, 2} and not (store.shards / "shard-000001.jsonl").exists()
    data = read_mined(store.root, ("dt", "dd", "x"))
    assert data.n == 5 and data.shards == ["shard-000000", "shard-000002"]
    assert data.prompt_ids.tolist() == ["p0"] * 3 + ["p2"] * 2 and data.positions.tolist() == [0, 1, 2, 0, 1]
    assert data.features["dt"].shape == (5, 6) and data.features["dd"].shape == (5, 4)
    assert data.labels.tolist() == [0, 1, 0, 0, 1] and data.draft_rank is not None
    assert [r["prompt_id"] for r in store.label_rows()] == data.prompt_ids.tolist()
    # an interrupted write: prompt 3's shard without its completion marker
    store.write_prompt(_fake_result(3, 2))
    store.marker_path(3).unlink()
    with pytest.raises(MinedDataError, match="not finished"):
        read_mined(store.root)
    assert read_mined(store.root, skip_incomplete=True).n == 5 and len(store.label_rows()) == 5
    assert store.summary()["prompts"] == 3 and store.summary()["labels"] == 5
    store.open(meta, resume=True)  # the writer drops the same shard on resume
    assert not list(store.shards.glob("shard-000003.*")) and read_mined(store.root).n == 5
    # a finished prompt missing a shard file is damaged, skip_incomplete or not
    (store.shards / "shard-000002.jsonl").unlink()
    with pytest.raises(MinedDataError, match="damaged"):
        read_mined(store.root, skip_incomplete=True)
    # one format constant for both: another version is refused by the reader and by resume
    assert json.loads(store.meta_path.read_text())["format"] == MINED_FORMAT == "autojudge-mined/1"
    store.meta_path.write_text(
        json.dumps({**json.loads(store.meta_path.read_text()), "format": "autojudge-mined/2"})
    )
    for action in (
        lambda: read_mined(store.root, skip_incomplete=True),
        lambda: store.open(meta, resume=True),
    ):
        with pytest.raises(MinedDataError, match="not supported"):
            action()


def test_summary_seconds_is_wall_time_not_the_overlapping_prompt_times(pair, tmp_path):
    """Issue 17: with prompts in flight their own times overlap; `seconds` is the wall time of the sessions."""
    task, out = ToyArithmeticTask(), tmp_path / "mined"
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=4)
    t0 = time.perf_counter()
    s1 = mine_task(task, pair, out, limit=6, config=cfg, progress=False)
    wall1 = time.perf_counter() - t0
    assert s1["prompt_seconds_summed"] == pytest.approx(
        sum(p["seconds"] for p in MinedStore(out).prompt_rows())
    )
    assert 0 < s1["seconds"] <= wall1 and s1["seconds_partial"] is False
    assert s1["prompt_seconds_summed"] > s1["seconds"]  # 4 in flight: each prompt's time includes the others'
    # a resumed session adds its wall time to the one recorded; the file on disk says the same
    t0 = time.perf_counter()
    s2 = mine_task(task, pair, out, limit=8, config=cfg, resume=True, progress=False)
    wall2 = time.perf_counter() - t0
    assert s1["seconds"] < s2["seconds"] <= s1["seconds"] + wall2 and s2["seconds_partial"] is False
    assert json.loads((out / "summary.json").read_text())["seconds"] == s2["seconds"]
    # a summary written before the key existed: its `seconds` was the summed figure, never read as wall time
    old = {k: v for k, v in s2.items() if k not in ("prompt_seconds_summed", "seconds_partial")}
    (out / "summary.json").write_text(json.dumps(old))
    assert MinedStore(out).recorded_wall_seconds() == (None, False)
    s3 = mine_task(task, pair, out, limit=9, config=cfg, resume=True, progress=False)
    assert s3["seconds_partial"] is True and s3["seconds"] < s2["seconds"]


def test_a_failing_summary_write_does_not_hide_the_error_that_stopped_mining(pair, tmp_path, monkeypatch):
    """A session that fails (a full disk) reports its own error even when the summary cannot be written."""
    task, out = ToyArithmeticTask(), tmp_path / "mined"
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=2)
    orig = MinedStore.write_prompt
    written: list[int] = []

    def fails_after_one(self, result):
        if written:
            raise OSError("disk full")
        written.append(result.index)
        orig(self, result)

    def no_summary(self, **kw):
        raise OSError("no space left for summary.json")

    monkeypatch.setattr(MinedStore, "write_prompt", fails_after_one)
    monkeypatch.setattr(MinedStore, "write_summary", no_summary)
    with pytest.raises(OSError, match="disk full") as err:
        mine_task(task, pair, out, limit=4, config=cfg, progress=False)
    assert any("summary.json was not written" in n for n in err.value.__notes__)
    assert MinedStore(out).done_indices() == set(written)
    # without an error of its own, a failing summary write is the error
    monkeypatch.setattr(MinedStore, "write_prompt", orig)
    with pytest.raises(OSError, match="summary.json"):
        mine_task(task, pair, out, limit=4, config=cfg, resume=True, progress=False)
