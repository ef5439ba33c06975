"""Mining on the batched engine (BatchedMiner): the records of Miner.mine, rollouts sharing passes."""

from __future__ import annotations

import pytest
import torch
from test_mining import MAX_NEW, SPEED_FIELDS

from autojudge.core.mining.batched import BatchedMiner, BatchedRollouts, choose_width, default_inflight
from autojudge.core.mining.steps import Miner, MiningConfig
from autojudge.plugins.toy import ToyArithmeticTask

SPEED = SPEED_FIELDS


@pytest.fixture(scope="module")
def pair(loaded_tiny_pair):
    return loaded_tiny_pair


def assert_same_labels(a, b) -> None:
    """Same responses, records and features; speed counters (backend-specific) aside."""
    assert (a.prompt_id, a.index, a.response, a.answer, a.correct, a.skipped, a.final_response) == (
        b.prompt_id, b.index, b.response, b.answer, b.correct, b.skipped, b.final_response,
    )  # fmt: skip
    rows = lambda res: [{k: v for k, v in r.row().items() if k not in SPEED} for r in res.records]  # noqa: E731
    assert rows(a) == rows(b)
    for ra, rb in zip(a.records, b.records, strict=True):
        for name in ("dt", "tt", "dd", "x", "draft_rank"):
            torch.testing.assert_close(ra.features[name], rb.features[name])


@pytest.mark.parametrize("inflight", [1, 3, 8])
def test_batched_records_equal_sequential(pair, inflight):
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=inflight)
    items = list(enumerate(task.load("train", limit=9)))
    seq = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
    ref = {i: seq.mine(ex, i) for i, ex in items}
    miner = BatchedMiner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
    got = list(miner.mine_many(items))
    assert sorted(r.index for r in got) == [i for i, _ in items]  # each prompt once
    for r in got:
        assert r.backend == "batched"
        assert_same_labels(r, ref[r.index])
    assert sum(len(r.records) for r in got) >= 10 and {x.label for r in got for x in r.records} == {0, 1}
    ro: BatchedRollouts = miner.rollouts  # type: ignore[assignment]
    assert ro.steps > 0 and not ro.busy
    if inflight > 1:  # rollouts of several prompts shared passes
        assert ro.computed_tokens > ro.steps


def test_batched_rows_follow_the_reference_with_lookup(pair):
    """A rollout that re-joins its reference is verified in bulk: fewer passes than tokens."""
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=4)
    items = list(enumerate(task.load("train", limit=6)))
    got = list(BatchedMiner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg).mine_many(items))
    recs = [x for r in got for x in r.records]
    assert recs
    assert sum(x.rollout_target_forwards for x in recs) < sum(x.rollout_target_tokens for x in recs)


def test_choose_width_trades_padding_for_proposals():
    assert choose_width([], 0.8) == 1
    assert choose_width([0, 0, 0], 0.8) == 1
    # two rows that follow their reference: verify their proposals
    assert choose_width([16, 16], 0.9) == 17
    # many plain rows and one proposer: padding every row to 17 would cost more than it brings
    assert choose_width([0] * 31 + [16], 0.9) == 1
    # proposals the target rarely accepts are not worth padding for
    assert choose_width([8, 8, 8], 0.0) == 1


def test_labels_record_finish_and_audit_text(pair):
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, inflight=2)
    got = list(BatchedMiner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg).mine_many(
        enumerate(task.load("train", limit=4))
    ))  # fmt: skip
    rows = [x.row() for r in got for x in r.records]
    assert rows
    for row in rows:
        assert row["finish_alternative"] in {"eos", "stop", "length"}
        assert row["truncated"] == (row["finish_alternative"] == "length")
        assert row["alternative_text"]
    assert all(r.finish_reason in {"eos", "stop", "length"} for r in got)


def test_rollout_budget_has_headroom():
    cfg = MiningConfig(max_new_tokens=100)
    assert cfg.headroom == 50 and cfg.rollout_budget(9) == 140
    assert MiningConfig(max_new_tokens=100, rollout_headroom=0).rollout_budget(9) == 90
    assert cfg.label_settings()["rollout_headroom"] == 50


def test_default_inflight_is_bounded_by_memory(pair):
    t, d = pair.target.model, pair.draft.model
    n = default_inflight(t, d, 512)
    assert 4 <= n <= 48
    # no memory left beyond the weights: the floor
    assert default_inflight(t, d, 512, cap_bytes=1) == 4


def test_batched_miner_refuses_naive(pair):
    with pytest.raises(ValueError, match="naive"):
        BatchedMiner(ToyArithmeticTask(), pair.target.model, pair.draft.model, pair.tokenizer,
                     MiningConfig(naive=True))  # fmt: skip


def test_training_leaves_out_truncated_labels(pair, tmp_path):
    """Rows whose rollout hit its budget are flagged in the store and dropped by load_mined (counted)."""
    from autojudge.core.mining.run import mine_task
    from autojudge.core.mining.store import MinedStore
    from autojudge.judges.dataset import load_mined

    task = ToyArithmeticTask()
    # no headroom and a tight budget: some rollouts are cut
    cfg = MiningConfig(max_new_tokens=MAX_NEW, rollout_headroom=0, inflight=4)
    mine_task(task, pair, tmp_path / "m", limit=8, config=cfg, progress=False)
    rows = MinedStore(tmp_path / "m").label_rows()
    n_trunc = sum(r["truncated"] for r in rows)
    assert 0 < n_trunc < len(rows)
    assert MinedStore(tmp_path / "m").summary()["truncated"] == n_trunc
    data = load_mined(tmp_path / "m", ("dt",))
    assert data.n == len(rows) - n_trunc and data.excluded_truncated == n_trunc
    assert not data.truncated.any()
    every = load_mined(tmp_path / "m", ("dt",), keep_truncated=True)
    assert every.n == len(rows) and int(every.truncated.sum()) == n_trunc


def test_pack_halves_the_features_and_reads_back(pair, tmp_path):
    """`aj mine-pack`: hidden states as float16 on disk, read as float32 within float16 precision."""
    import numpy as np
    from click.testing import CliRunner

    from autojudge.cli.main import build_cli
    from autojudge.core.mining.run import mine_task
    from autojudge.judges.dataset import load_mined

    task = ToyArithmeticTask()
    mine_task(
        task, pair, tmp_path / "m", limit=4, config=MiningConfig(max_new_tokens=MAX_NEW), progress=False
    )
    before = load_mined(tmp_path / "m", ("dt", "dd", "x"), keep_truncated=True)
    res = CliRunner().invoke(build_cli(), ["mine-pack", str(tmp_path / "m")])
    assert res.exit_code == 0 and "packed" in res.output, res.output
    after = load_mined(tmp_path / "m", ("dt", "dd", "x"), keep_truncated=True)
    for b in ("dt", "dd"):
        assert after.features[b].dtype == np.float32
        np.testing.assert_allclose(after.features[b], before.features[b], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(after.features["x"], before.features["x"])  # x stays float32
    np.testing.assert_array_equal(after.labels, before.labels)
