"""Unfinished prompts keep their labels: a stop mid-prompt, then --resume, loses and repeats (almost) nothing."""

from __future__ import annotations

import json

import pytest
import torch
from test_mining import MAX_NEW, mined_content
from test_mining_batched import assert_same_labels

from autojudge.core.mining.run import mine_task
from autojudge.core.mining.steps import Miner, MiningConfig
from autojudge.core.mining.store import MinedStore, read_mined
from autojudge.plugins.toy import ToyArithmeticTask

LIMIT = 6


@pytest.fixture(scope="module")
def pair(loaded_tiny_pair):
    return loaded_tiny_pair


class _Stop(Exception):
    """What a killed run looks like to the store: the work stops at some check."""


class _CountingTask(ToyArithmeticTask):
    """The toy task counting its equivalence checks; raises :class:`_Stop` at check number ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.stop_at, self.calls = stop_at, 0

    def equivalent_outcomes(self, items):
        out = []
        for item in items:
            self.calls += 1
            if self.stop_at is not None and self.calls >= self.stop_at:
                raise _Stop(f"stopped at check {self.calls}")
            out += super().equivalent_outcomes([item])
        return out


def test_a_prompt_resumes_from_its_latest_label(pair, tmp_path):
    """Miner level: stop a prompt after some labels, resume it from the journal: the records of one run."""
    cfg = MiningConfig(max_new_tokens=MAX_NEW)
    base = ToyArithmeticTask()
    examples = base.load("train", limit=LIMIT)
    miner = Miner(base, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
    ref = [miner.mine(ex, i) for i, ex in enumerate(examples)]
    i, ref_res = max(enumerate(ref), key=lambda t: len(t[1].records))
    assert len(ref_res.records) >= 3, "fixture too weak: no prompt with 3 labels"

    journal = MinedStore(tmp_path).journal()
    stopping = _CountingTask(stop_at=3)  # the third equivalence check of the prompt fails
    crashed = Miner(stopping, pair.target.model, pair.draft.model, pair.tokenizer, cfg, journal=journal)
    with pytest.raises(_Stop):
        crashed.mine(examples[i], i)
    saved = json.loads((tmp_path / "partial" / f"{i:06d}.json").read_text())
    assert len(saved["rows"]) >= 2, "the labels decided before the stop were not saved"

    counting = _CountingTask()
    resumed = Miner(counting, pair.target.model, pair.draft.model, pair.tokenizer, cfg, journal=journal)
    res = resumed.mine(examples[i], i)
    assert_same_labels(res, ref_res)
    assert res.rollouts == ref_res.rollouts
    checks_in_reference = sum(r.answer_alternative is not None for r in ref_res.records)
    assert counting.calls == checks_in_reference - len(saved["rows"]) + sum(
        r["answer_alternative"] is None for r in saved["rows"]
    ), "the resumed run re-checked labels it had saved"


@pytest.mark.parametrize("driver", ["sequential", "batched"])
def test_mine_task_stopped_mid_prompt_then_resumed_equals_one_run(pair, tmp_path, driver, capsys):
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=2 if driver == "batched" else 1)
    kw = dict(limit=LIMIT, config=cfg, progress=False, driver=driver)
    clean_task = _CountingTask()
    mine_task(clean_task, pair, tmp_path / "clean", **kw)
    total = clean_task.calls

    stopped = tmp_path / "stopped"
    first = _CountingTask(stop_at=total // 2)
    with pytest.raises(_Stop):
        mine_task(first, pair, stopped, **kw)
    store = MinedStore(stopped)
    waiting = store.unfinished_counts()
    assert waiting["labels_unfinished"] >= 1, "no unfinished prompt kept its labels"
    # the labels decided so far are final: training may use them before the prompts finish
    finished = len(store.label_rows())
    with_partial = read_mined(stopped, ("dt", "x"), include_unfinished=True)
    assert with_partial.n == finished + waiting["labels_unfinished"]
    assert any(name.startswith("partial/") for name in with_partial.shards)
    before = finished + waiting["labels_unfinished"]
    second = _CountingTask()
    summary = mine_task(second, pair, stopped, resume=True, **{**kw, "progress": True})
    # the progress line counts the directory's labels: the carried-over ones once, the new ones as "+N"
    last = [line for line in capsys.readouterr().err.splitlines() if "labels " in line][-1]
    on_disk = summary["labels"] + summary["labels_unfinished"]
    assert f"labels {on_disk} (+{on_disk - before} in this run)" in last, last
    # at most the check that was running in each in-flight prompt is repeated (not whole prompts)
    assert (first.calls - 1) + second.calls <= total + cfg.inflight
    rows_s, t_s = mined_content(stopped)
    rows_c, t_c = mined_content(tmp_path / "clean")
    assert rows_s == rows_c and rows_c
    assert t_s.keys() == t_c.keys()
    assert summary["prompts"] == LIMIT and summary["labels_unfinished"] == 0
    assert not (stopped / "partial").exists() or not list((stopped / "partial").iterdir())


def test_aj_mine_reports_a_broken_check_pool_keeps_the_labels_and_resumes(pair, tmp_path, monkeypatch):
    """Checks that cannot run stop `aj mine` with one actionable line; --resume then equals one run."""
    from click.testing import CliRunner

    import autojudge.core.models as models
    import autojudge.plugins.manager as manager
    from autojudge.cli.mine_cmd import mine
    from autojudge.core.compare.pool import BROKEN_PREFIX, PoolBrokenError

    class _BrokenPoolTask(_CountingTask):
        def equivalent_outcomes(self, items):
            if self.calls + len(items) >= 4:
                raise PoolBrokenError(BROKEN_PREFIX + "3 workers in a row did not start in time")
            return super().equivalent_outcomes(items)

    monkeypatch.setattr(models, "load_pair", lambda *a, **k: pair)
    args = ["--task", "toy-arith", "--limit", str(LIMIT), "--max-new-tokens", str(MAX_NEW), "--no-progress",
            "--driver", "sequential"]  # fmt: skip
    monkeypatch.setattr(manager, "get_task", lambda name, dataset=None: _CountingTask())
    assert CliRunner().invoke(mine, [*args, "--out", str(tmp_path / "clean")]).exit_code == 0

    out = tmp_path / "broken"
    monkeypatch.setattr(manager, "get_task", lambda name, dataset=None: _BrokenPoolTask())
    res = CliRunner().invoke(mine, [*args, "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "did not start in time" in res.output and "--resume" in res.output, res.output
    summary = json.loads((out / "summary.json").read_text())  # written on the way out, as for Ctrl-C
    assert summary["labels"] + summary["labels_unfinished"] >= 1

    monkeypatch.setattr(manager, "get_task", lambda name, dataset=None: _CountingTask())
    again = CliRunner().invoke(mine, [*args, "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    rows, _ = mined_content(out)
    assert rows and rows == mined_content(tmp_path / "clean")[0]


def test_unusable_progress_is_set_aside_and_the_prompt_starts_over(pair, tmp_path):
    cfg = MiningConfig(max_new_tokens=MAX_NEW)
    task = ToyArithmeticTask()
    examples = task.load("train", limit=LIMIT)
    ref = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg).mine(examples[0], 0)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "000000.json").write_text('{"format": "autojudge-partial/1", "rows": [')  # torn by a crash
    journal = MinedStore(tmp_path).journal()
    miner = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg, journal=journal)
    with pytest.warns(UserWarning, match="unusable progress"):
        res = miner.mine(examples[0], 0)
    assert_same_labels(res, ref)
    assert (partial / "000000.json.bad").is_file(), "the damaged file must be kept for inspection"


def test_progress_of_another_prompt_is_not_used(pair, tmp_path):
    cfg = MiningConfig(max_new_tokens=MAX_NEW)
    task = ToyArithmeticTask()
    examples = task.load("train", limit=LIMIT)
    journal = MinedStore(tmp_path).journal()
    miner = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg, journal=journal)
    done = next(r for r in (miner.mine(ex, i) for i, ex in enumerate(examples)) if r.records)
    state_path = tmp_path / "partial" / f"{done.index:06d}.json"
    assert state_path.is_file()  # the finished prompt's progress stays until the store writes the prompt
    other = (done.index + 1) % LIMIT
    state_path.rename(tmp_path / "partial" / f"{other:06d}.json")
    with pytest.warns(UserWarning, match="not the progress of prompt"):
        res = miner.mine(examples[other], other)
    ref = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg).mine(examples[other], other)
    assert_same_labels(res, ref)


def test_unfinished_labels_read_back_ignore_a_torn_extra_row(pair, tmp_path):
    """A kill between the two writes leaves one tensor row the JSON does not count: it is not read."""
    from safetensors.torch import load_file, save_file

    cfg = MiningConfig(max_new_tokens=MAX_NEW)
    task = _CountingTask(stop_at=3)
    store = MinedStore(tmp_path)
    from autojudge.core.mining.run import mining_meta

    store.open(mining_meta(task, "train", pair, cfg, None), resume=False)
    examples = task.load("train", limit=LIMIT)
    miner = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg, journal=store.journal())
    with pytest.raises(_Stop):
        for i, ex in enumerate(examples):
            store.write_prompt(miner.mine(ex, i))
    state = next((tmp_path / "partial").glob("*.json"))
    n = len(json.loads(state.read_text())["rows"])
    tensors = load_file(state.with_suffix(".safetensors"))
    torn = {
        k: torch.cat([v, 1 - v[-1:] if k == "label" else v[-1:]]).contiguous() for k, v in tensors.items()
    }
    save_file(torn, state.with_suffix(".safetensors"))  # one row more, with the other label
    data = read_mined(tmp_path, ("dt",), include_unfinished=True)
    assert data.n == len(store.label_rows()) + n


def test_sigterm_stops_aj_mine_keeping_progress_and_writing_the_summary(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import save_tiny_pair

    save_tiny_pair(tmp_path)
    out = tmp_path / "mined"
    cmd = [
        sys.executable, "-m", "autojudge.cli.main", "mine", "--task", "toy-arith",
        "--draft", str(tmp_path / "draft"), "--target", str(tmp_path / "target"), "--dtype", "float32",
        "--limit", "12", "--max-new-tokens", str(MAX_NEW), "--out", str(out), "--no-progress", "--inflight", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "prompts").is_dir() and len(list((out / "prompts").glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "mining finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped:" in err and "--resume" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == len(list((out / "prompts").glob("*.json"))) >= 2
    assert summary["seconds"] > 0 and "labels_unfinished" in summary
