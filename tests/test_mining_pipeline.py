"""Mining with several prompts in flight (PipelinedMiner): same records as Miner.mine, checks overlap model work."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from test_mining import MAX_NEW, mined_content

from autojudge.core.mining.pipelined import PipelinedMiner
from autojudge.core.mining.run import mine_task
from autojudge.core.mining.steps import Miner, MiningConfig, PromptResult
from autojudge.core.mining.store import MinedStore
from autojudge.core.models import ModelPair
from autojudge.plugins.toy import ToyArithmeticTask


@pytest.fixture(scope="module")
def pair(loaded_tiny_pair) -> ModelPair:
    return loaded_tiny_pair


def assert_same_results(a: PromptResult, b: PromptResult) -> None:
    """Same records, responses and answers (speed counters of the first response aside)."""
    assert (a.prompt_id, a.index, a.response, a.answer, a.correct, a.skipped, a.final_response) == (
        b.prompt_id, b.index, b.response, b.answer, b.correct, b.skipped, b.final_response,
    )  # fmt: skip
    assert [r.row() for r in a.records] == [r.row() for r in b.records]
    for ra, rb in zip(a.records, b.records, strict=True):
        for name in ("dt", "tt", "dd", "x", "draft_rank"):
            torch.testing.assert_close(ra.features[name], rb.features[name])


class TracedToy(ToyArithmeticTask):
    """toy-arith whose equivalence checks wait (up to ``wait`` s) until a rollout starts after they did.

    With a driver that runs model work while checks are pending, the wait ends at once; with one
    that does not, it times out. Either way the labels are the toy task's.
    """

    def __init__(self, wait: float = 5.0, waits: int = 4):
        self.wait, self.waits = (
            wait,
            waits,
        )  # only the first ``waits`` calls wait (later ones may have no company)
        self.trace: list[tuple[str, int]] = []
        self.cond = threading.Condition()

    def event(self, kind: str, index: int) -> None:
        with self.cond:
            self.trace.append((kind, index))
            self.cond.notify_all()

    def equivalent_outcomes(self, items):
        with self.cond:
            seen = len(self.trace)
            if self.waits > 0:
                self.waits -= 1
                self.cond.wait_for(
                    lambda: any(k == "rollout_start" for k, _ in self.trace[seen:]), timeout=self.wait
                )
        return super().equivalent_outcomes(items)


def test_pipelined_records_equal_sequential(pair):
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=3)
    items = list(enumerate(task.load("train", limit=7)))
    seq = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
    ref = {i: seq.mine(ex, i) for i, ex in items}
    got = list(
        PipelinedMiner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg).mine_many(items)
    )
    assert sorted(r.index for r in got) == [i for i, _ in items]  # each prompt once
    for r in got:
        assert_same_results(r, ref[r.index])
    assert sum(len(r.records) for r in got) >= 10 and {x.label for r in got for x in r.records} == {0, 1}


def test_checks_run_while_other_prompts_roll_out(pair):
    task = TracedToy()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=3)
    items = list(enumerate(task.load("train", limit=5)))
    miner = PipelinedMiner(
        task, pair.target.model, pair.draft.model, pair.tokenizer, cfg, on_event=task.event
    )
    got = {r.index: r for r in miner.mine_many(items)}
    trace = task.trace
    # an event trace: some prompt's check was pending while another prompt's rollout ran
    overlaps = 0
    for n, (kind, idx) in enumerate(trace):
        if kind != "check_submit":
            continue
        end = next(m for m in range(n + 1, len(trace)) if trace[m] == ("check_done", idx))
        overlaps += any(k == "rollout_start" and j != idx for k, j in trace[n + 1 : end])
    assert overlaps >= 2, trace
    assert [k for k, i in trace if k == "finish"] and len({i for k, i in trace if k == "finish"}) == len(
        items
    )
    # ... and the labels are those of the sequential miner on the plain toy task
    plain = ToyArithmeticTask()
    seq = Miner(plain, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
    for i, ex in items:
        assert_same_results(got[i], seq.mine(ex, i))


class CrashWhenOutOfOrder:
    """Event hook that raises (a simulated crash) once a prompt finished before a lower-indexed one."""

    def __init__(self):
        self.started: set[int] = set()
        self.finished: set[int] = set()

    def __call__(self, kind: str, index: int) -> None:
        if kind == "start":
            self.started.add(index)
        elif kind == "finish":
            self.finished.add(index)
        elif kind == "rollout_start" and any(
            j < i for i in self.finished for j in self.started - self.finished
        ):
            raise RuntimeError("simulated crash")


def test_out_of_order_completion_then_resume_loses_and_duplicates_nothing(pair, tmp_path: Path, monkeypatch):
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=3)
    clean = tmp_path / "clean"
    mine_task(
        task, pair, clean, limit=8, config=MiningConfig(max_new_tokens=MAX_NEW, inflight=1), progress=False
    )
    crash = CrashWhenOutOfOrder()
    orig = PipelinedMiner.__init__
    monkeypatch.setattr(
        PipelinedMiner, "__init__", lambda self, *a, **kw: orig(self, *a, **{**kw, "on_event": crash})
    )
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        mine_task(task, pair, out, limit=8, config=cfg, progress=False)
    monkeypatch.undo()
    done = MinedStore(out).done_indices()
    missing = set(range(8)) - done
    assert missing and any(i > min(missing) for i in done), (
        f"expected out-of-order completion, got {sorted(done)}"
    )
    mine_task(task, pair, out, limit=8, config=cfg, resume=True, progress=False)
    assert MinedStore(out).done_indices() == set(range(8))
    rows_c, t_c = mined_content(clean)
    rows_k, t_k = mined_content(out)
    assert rows_k == rows_c and rows_c
    assert t_k.keys() == t_c.keys()
    for name in t_c:
        for key in t_c[name]:
            torch.testing.assert_close(t_k[name][key], t_c[name][key])


def test_inflight_one_and_many_write_the_same_store(pair, tmp_path: Path):
    task = ToyArithmeticTask()
    t0 = time.perf_counter()
    mine_task(
        task,
        pair,
        tmp_path / "one",
        limit=5,
        config=MiningConfig(max_new_tokens=MAX_NEW, inflight=1),
        progress=False,
    )
    mine_task(
        task,
        pair,
        tmp_path / "four",
        limit=5,
        config=MiningConfig(max_new_tokens=MAX_NEW, inflight=4),
        progress=False,
    )
    assert time.perf_counter() - t0 < 300
    rows1, t1 = mined_content(tmp_path / "one")
    rows4, t4 = mined_content(tmp_path / "four")
    assert rows1 == rows4 and rows1
    for name in t1:
        for key in t1[name]:
            torch.testing.assert_close(t1[name][key], t4[name][key])
    # inflight is a speed setting: the two directories hold the same run (they would merge / resume)
    meta1 = MinedStore(tmp_path / "one").read_meta()
    meta4 = MinedStore(tmp_path / "four").read_meta()
    assert meta1["settings"] == meta4["settings"]


def test_inflight_must_be_positive(pair):
    with pytest.raises(ValueError, match="inflight"):
        PipelinedMiner(
            ToyArithmeticTask(), pair.target.model, pair.draft.model, pair.tokenizer, MiningConfig(inflight=0)
        )


def test_aj_mine_options():
    from click.testing import CliRunner

    from autojudge.cli.mine_cmd import mine

    res = CliRunner().invoke(mine, ["--task", "toy-arith", "--backend", "vllm", "--naive"])
    assert res.exit_code != 0 and "--naive" in res.output
    res = CliRunner().invoke(mine, ["--task", "toy-arith", "--inflight", "0"])
    assert res.exit_code != 0 and "--inflight" in res.output
