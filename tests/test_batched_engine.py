"""Correctness of the batched engine (autojudge.core.batched) on tiny random float32 models.

The invariants: every row of a batch (prompts of different lengths) equals the
batch-1 SpeculativeEngine's output for that prompt, token for token, with the
same per-row cycle metrics, in modes ar, sd and judge; the judge sees the same
features; lossless rows equal target-only rows; a row's output does not depend
on its batch mates, the batch size or slot refill; stops and budgets cut each
row exactly like the batch-1 engine.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import count_forwards, make_tiny_model, never_accept_dd, noisy_copy

from autojudge.core.batched import BatchedEngine, BatchedRunner
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.judge import AlwaysAccept, Judge, LinearJudge, MismatchFeatures, NeverAccept, TopKJudge


def prompts_of_different_lengths(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [1, 24, 7, 15, 3, 11, 19, 5][:n] + [rng.randint(1, 24) for _ in range(max(0, n - 8))]
    return [[rng.randrange(0, 96) for _ in range(ln)] for ln in lengths]


def linear_dd_dt_judge(target, draft) -> LinearJudge:
    """A judge reading both hidden-state blocks that accepts some mismatches and rejects others."""
    g = torch.Generator().manual_seed(5)
    w = {
        "dd": torch.randn(draft.config.hidden_size, generator=g),
        "dt": torch.randn(target.config.hidden_size, generator=g),
    }
    return LinearJudge(w, bias=0.0, threshold=0.5, blocks=("dd", "dt"))


JUDGES = {
    "top3": lambda t, d: TopKJudge(3),
    "always": lambda t, d: AlwaysAccept(),
    "never": lambda t, d: NeverAccept(),
    "linear-dd-dt": linear_dd_dt_judge,
}

METRIC_FIELDS = (
    "num_drafts", "num_draft_tokens", "num_accepted_tokens", "num_judge_accepted", "num_judge_calls",
    "num_target_forwards", "num_target_tokens", "num_output_tokens", "num_prompt_tokens",
    "accepted_per_cycle", "proposed_per_cycle", "emitted_per_cycle",
)  # fmt: skip


def assert_same_row(batched, single, where: str = "") -> None:
    assert batched.tokens == single.tokens, where
    assert batched.finish_reason == single.finish_reason, where
    assert batched.text == single.text, where
    assert batched.prompt_tokens == single.prompt_tokens, where
    for f in METRIC_FIELDS:
        assert getattr(batched.metrics, f) == getattr(single.metrics, f), f"{where}: {f}"
    torch.testing.assert_close(batched.prefill_hidden, single.prefill_hidden, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def engines(tiny_pair, char_tokenizer):
    target, draft = tiny_pair
    return SpeculativeEngine(target, draft, char_tokenizer), BatchedEngine(target, draft, char_tokenizer)


@pytest.mark.parametrize(
    "mode,judge_name",
    [
        ("ar", None),
        ("sd", None),
        ("judge", "top3"),
        ("judge", "always"),
        ("judge", "never"),
        ("judge", "linear-dd-dt"),
    ],
)
@pytest.mark.parametrize("k", [1, 4])
def test_every_row_equals_the_batch1_engine(engines, tiny_pair, mode, judge_name, k):
    single, batched = engines
    judge = JUDGES[judge_name](*tiny_pair) if judge_name else None
    prompts = prompts_of_different_lengths(5, seed=k)
    res = batched.generate_batch(prompts, mode=mode, judge=judge, k=k, max_new_tokens=32, eos_token_ids=())
    assert len(res) == len(prompts)
    for i, (p, r) in enumerate(zip(prompts, res, strict=True)):
        ref = single.generate(
            p, mode=mode, judge=judge, k=k, max_new_tokens=32, eos_token_ids=(), reuse_cache=False
        )
        assert_same_row(r, ref, f"row {i} ({len(p)} prompt tokens)")
    if mode == "sd":
        assert sum(r.metrics.num_accepted_tokens for r in res) > 0, "fixture too weak: nothing accepted"
        assert any(
            a < p
            for r in res
            for a, p in zip(r.metrics.accepted_per_cycle, r.metrics.proposed_per_cycle, strict=True)
        )
    if judge_name in ("top3", "linear-dd-dt"):
        assert sum(r.metrics.num_judge_accepted for r in res) > 0, (
            "the judge never accepted: judged path untested"
        )


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_lossless_and_never_accept_rows_equal_target_greedy(arch):
    target = make_tiny_model(arch, seed=3)
    draft = noisy_copy(target, 0.15, seed=4)
    eng = BatchedEngine(target, draft)
    prompts = prompts_of_different_lengths(5, seed=7)
    ar = [r.tokens for r in eng.generate_batch(prompts, mode="ar", max_new_tokens=40, eos_token_ids=())]
    assert all(len(t) == 40 for t in ar)
    for k in (2, 5):
        sd = eng.generate_batch(prompts, mode="sd", k=k, max_new_tokens=40, eos_token_ids=())
        assert [r.tokens for r in sd] == ar, f"lossless SD diverged (k={k})"
        nv = eng.generate_batch(
            prompts, mode="judge", judge=NeverAccept(), k=k, max_new_tokens=40, eos_token_ids=()
        )
        assert [r.tokens for r in nv] == ar, f"never-accept judge diverged (k={k})"
        assert all(r.metrics.num_judge_accepted == 0 for r in nv)
        assert sum(r.metrics.num_judge_calls for r in nv) > 0


@pytest.mark.parametrize("mode,judge", [("sd", None), ("judge", TopKJudge(2))])
def test_a_row_does_not_depend_on_its_batch(tiny_pair, mode, judge):
    target, draft = tiny_pair
    eng = BatchedEngine(target, draft)
    prompts = prompts_of_different_lengths(6, seed=3)
    kw = dict(mode=mode, judge=judge, k=3, max_new_tokens=24, eos_token_ids=())
    full = eng.generate_batch(prompts, **kw)
    alone = [eng.generate_batch([p], **kw)[0] for p in prompts]
    # continuous batching: slots refilled as rows finish
    seen: list[tuple[int, object]] = []  # on_result: each row once, as it finishes
    refill = eng.generate_batch(prompts, max_batch=3, on_result=lambda i, r: seen.append((i, r)), **kw)
    assert sorted(i for i, _ in seen) == list(range(len(prompts)))
    assert all(r is refill[i] for i, r in seen)
    for a, b, c in zip(full, alone, refill, strict=True):
        assert a.tokens == b.tokens == c.tokens
        assert a.metrics.accepted_per_cycle == b.metrics.accepted_per_cycle == c.metrics.accepted_per_cycle


def test_rows_finishing_at_different_times_leave_and_refill(engines):
    """Different budgets via EOS: rows end at different cycles, freed slots take queued prompts."""
    single, batched = engines
    prompts = prompts_of_different_lengths(7, seed=21)
    free = [single.generate(p, mode="ar", max_new_tokens=30, eos_token_ids=()).tokens for p in prompts]
    eos = {free[0][5], free[3][2]}  # tokens that end some rows early, at different points
    res = batched.generate_batch(prompts, mode="sd", k=4, max_new_tokens=30, eos_token_ids=eos, max_batch=3)
    for p, r in zip(prompts, res, strict=True):
        ref = single.generate(p, mode="sd", k=4, max_new_tokens=30, eos_token_ids=eos, reuse_cache=False)
        assert_same_row(r, ref)
    assert {r.finish_reason for r in res} == {"eos", "length"}


def test_judge_is_called_at_most_twice_per_cycle_with_the_batch1_features(tiny_pair):
    target, draft = tiny_pair
    calls: list[MismatchFeatures] = []

    class Recorder(Judge):
        name = "recorder"
        needs_draft_hidden = True
        threshold = 0.5

        def p_important(self, feats):
            calls.append(feats)
            # deterministic, position-wise: accept when the draft token is in the target's top 2
            return TopKJudge(2).p_important(feats)

    prompts = prompts_of_different_lengths(5, seed=9)
    kw = dict(mode="judge", judge=Recorder(), k=4, max_new_tokens=32, eos_token_ids=())
    res = BatchedEngine(target, draft).generate_batch(prompts, **kw)
    batched_calls = list(calls)
    calls.clear()
    single = SpeculativeEngine(target, draft)
    refs = [single.generate(p, reuse_cache=False, **kw) for p in prompts]
    for r, ref in zip(res, refs, strict=True):
        assert_same_row(r, ref)
    # per batched cycle, one call with every row's positions before its last, and one with the last
    # positions the decisions reach (their `dd` costs a draft step); batch 1 makes that split per row
    assert len(batched_calls) <= 2 * max(r.metrics.num_drafts for r in res)
    assert len(batched_calls) < len(calls) <= 2 * sum(r.metrics.num_judge_calls for r in res)

    def rows(fs: list[MismatchFeatures]) -> dict[str, torch.Tensor]:
        cat = {
            "dt": torch.cat([f.target_hidden for f in fs]),
            "dd": torch.cat([f.draft_hidden for f in fs]),
            "logits": torch.cat([f.target_logits for f in fs]),
            "tok": torch.cat([torch.stack([f.draft_tokens, f.target_tokens], -1) for f in fs]),
        }
        order = cat["dt"][:, 0].argsort()  # same positions, different order: sort by a feature
        return {k: v[order] for k, v in cat.items()}

    a, b = rows(batched_calls), rows(calls)
    assert a["tok"].shape == b["tok"].shape and a["tok"].shape[0] > 5
    assert torch.equal(a["tok"], b["tok"])
    for key in ("dt", "dd", "logits"):
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)


def test_the_extra_draft_step_for_dd_is_taken_only_in_cycles_whose_decision_reaches_the_last_position():
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    forwards = count_forwards(draft.model)
    prompts = prompts_of_different_lengths(6, seed=4)
    eng = BatchedEngine(target, draft)
    kw = dict(k=4, max_new_tokens=40, eos_token_ids=())
    sd = eng.generate_batch(prompts, mode="sd", **kw)
    sd_forwards, forwards[0] = forwards[0], 0
    res = eng.generate_batch(prompts, mode="judge", judge=never_accept_dd(), **kw)
    for r, s in zip(res, sd, strict=True):
        assert r.tokens == s.tokens
    # every row was admitted at once, so cycle c of each row is batched cycle c; a step is needed in the
    # cycles where some row's first mismatch is its last proposal (the judge rejects all earlier ones)
    cycles = max(len(r.metrics.proposed_per_cycle) for r in res)

    def cycles_where(pred) -> int:  # batched cycles in which some row's (accepted, proposed) satisfy pred
        return sum(
            any(
                pred(a[c], p[c])
                for a, p in ((r.metrics.accepted_per_cycle, r.metrics.proposed_per_cycle) for r in res)
                if c < len(p)
            )
            for c in range(cycles)
        )

    needing = cycles_where(lambda a, p: a == p - 1)
    judged = cycles_where(lambda a, p: a < p)
    assert 0 < needing < judged  # the fixture has both kinds of cycle
    assert forwards[0] == sd_forwards + needing


@pytest.mark.parametrize("budget", [1, 2, 7, 13])
def test_max_new_tokens_cuts_each_row_like_batch1(engines, budget):
    single, batched = engines
    prompts = prompts_of_different_lengths(4, seed=budget)
    for mode, judge in (("ar", None), ("sd", None), ("judge", AlwaysAccept())):
        res = batched.generate_batch(
            prompts, mode=mode, judge=judge, k=5, max_new_tokens=budget, eos_token_ids=()
        )
        for p, r in zip(prompts, res, strict=True):
            ref = single.generate(
                p, mode=mode, judge=judge, k=5, max_new_tokens=budget, eos_token_ids=(), reuse_cache=False
            )
            assert len(r.tokens) == budget and r.finish_reason == "length"
            assert_same_row(r, ref, f"{mode} budget {budget}")


def test_stop_sequences_cut_each_row_like_batch1(engines):
    single, batched = engines
    tok = single.tokenizer
    prompts = prompts_of_different_lengths(4, seed=31)
    free = [single.generate(p, mode="ar", max_new_tokens=40, eos_token_ids=()) for p in prompts]
    # stop strings taken from two rows' outputs, at different depths
    stops = (
        tok.decode(free[0].tokens, skip_special_tokens=True)[10:13],
        tok.decode(free[2].tokens, skip_special_tokens=True)[4:6],
    )
    for mode, judge in (("ar", None), ("sd", None), ("judge", TopKJudge(3))):
        res = batched.generate_batch(
            prompts, mode=mode, judge=judge, k=6, max_new_tokens=40, stop_sequences=stops, eos_token_ids=()
        )
        for p, r in zip(prompts, res, strict=True):
            ref = single.generate(
                p,
                mode=mode,
                judge=judge,
                k=6,
                max_new_tokens=40,
                stop_sequences=stops,
                eos_token_ids=(),
                reuse_cache=False,
            )
            assert_same_row(r, ref, mode)
        assert res[0].finish_reason == "stop" and res[2].finish_reason == "stop"
        assert all(not any(s in r.text for s in stops) for r in res)


def test_compaction_keeps_outputs_and_bounds_the_cache(tiny_pair):
    target, draft = tiny_pair
    prompts = prompts_of_different_lengths(4, seed=2)
    kw = dict(mode="sd", k=8, max_new_tokens=40, eos_token_ids=())
    ref = [r.tokens for r in BatchedEngine(target, draft).generate_batch(prompts, **kw)]
    # no slack: the cache is compacted whenever holes outnumber the longest row's tokens
    eager = BatchedEngine(target, draft, compact_slack=0)
    compactions = []
    orig = BatchedRunner.compact

    def spy(self):
        compactions.append(self.slots)
        orig(self)
        assert self.slots == int(self.length.max())

    BatchedRunner.compact = spy
    try:
        out = [r.tokens for r in eager.generate_batch(prompts, **kw)]
    finally:
        BatchedRunner.compact = orig
    assert out == ref
    assert compactions, "no compaction happened"


def test_runner_holes_give_the_hidden_states_of_a_plain_forward(tiny_pair):
    """extend / crop / compact / select / merge: hidden states equal a cache-free forward of each row's sequence."""
    target, _ = tiny_pair
    r = BatchedRunner(target, compact_slack=0)
    r.reset(2)
    seqs = [[5, 6, 7, 8, 9], [1, 2]]
    tok = torch.tensor([[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]])
    r.extend(tok, torch.tensor([5, 2]))
    r.extend(torch.tensor([[10, 11, 12], [3, 0, 0]]), torch.tensor([3, 1]))
    seqs[0] += [10, 11, 12]
    seqs[1] += [3]
    r.crop(torch.tensor([6, 3]))  # row 0 rejects 11, 12: holes
    seqs[0] = seqs[0][:6]
    other = BatchedRunner(target)
    other.reset(1)
    other.extend(torch.tensor([[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]]), torch.tensor([12]))
    r.merge(other)
    seqs.append(list(range(40, 52)))
    r.select([2, 0])
    seqs = [seqs[2], seqs[0]]
    r.compact()
    h = r.extend(torch.tensor([[60, 61], [62, 0]]), torch.tensor([2, 1]))
    seqs[0] += [60, 61]
    seqs[1] += [62]
    for row, n in ((0, 2), (1, 1)):
        full = target.model(input_ids=torch.tensor([seqs[row]])).last_hidden_state[0, -n:]
        torch.testing.assert_close(h[row, :n], full, atol=1e-4, rtol=1e-4)
    assert r.length.tolist() == [len(s) for s in seqs]


def test_bad_arguments(engines, tiny_pair):
    _, batched = engines
    with pytest.raises(ValueError, match="unknown mode"):
        batched.generate_batch([[1]], mode="fast")
    with pytest.raises(ValueError, match="needs a judge"):
        batched.generate_batch([[1]], mode="judge")
    with pytest.raises(ValueError, match="empty prompt"):
        batched.generate_batch([[1], []], mode="ar")
    with pytest.raises(ValueError, match="needs a draft model"):
        BatchedEngine(tiny_pair[0]).generate_batch([[1]], mode="sd")
    with pytest.raises(ValueError, match="max_batch"):
        batched.generate_batch([[1]], mode="ar", max_batch=0)
    assert batched.generate_batch([], mode="ar") == []
    text = batched.generate_batch(["ab", "c"], mode="sd", k=3, max_new_tokens=5, eos_token_ids=())
    assert [len(r.tokens) for r in text] == [5, 5] and text[0].prompt_tokens == batched.encode("ab")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_grouped_attention_matches_sdpa(arch):
    """The batched runner's CPU attention kernel equals SDPA (float32) with holes, without a mask, at T=1 and T>1."""
    from autojudge.core.batched import BatchedRunner

    model = make_tiny_model(arch, seed=5)
    outs = {}
    for fast in (False, True):
        torch.manual_seed(11)
        r = BatchedRunner(model, fast_attention=fast)
        assert r.fast_attention == fast
        r.reset(3)
        steps = [
            (torch.randint(0, 60, (3, 12)), torch.tensor([12, 7, 9])),  # prefill (ragged)
            (torch.randint(0, 60, (3, 4)), torch.tensor([4, 1, 3])),  # a verify
            (torch.randint(0, 60, (3, 1)), torch.tensor([1, 1, 1])),  # a 1-token step
        ]
        hs = []
        for tok, n in steps:
            h = r.extend(tok, n)
            hs.append([h[b, : int(n[b])] for b in range(3)])
        r.crop(torch.tensor([10, 6, 9]))  # holes
        tok, n = torch.randint(0, 60, (3, 3)), torch.tensor([3, 2, 3])
        h = r.extend(tok, n)
        hs.append([h[b, : int(n[b])] for b in range(3)])
        # one row, no holes: transformers skips the mask (plain causal)
        one = BatchedRunner(model, fast_attention=fast)
        one.reset(1)
        one.extend(torch.randint(0, 60, (1, 6)), torch.tensor([6]))
        hs.append([one.extend(torch.randint(0, 60, (1, 5)), torch.tensor([5]))[0]])
        outs[fast] = hs
    for a_step, b_step in zip(outs[False], outs[True], strict=True):
        for a, b in zip(a_step, b_step, strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
