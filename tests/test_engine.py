"""Correctness of the speculative decoding engine on tiny random float32 models.

The invariants: lossless speculative decoding and judged decoding with a judge
that never accepts reproduce target-only greedy output token for token, for
every draft length k (so KV rollback is exact); judged decoding matches a
deliberately naive reimplementation (full recompute, no cache) for judges that
do accept; stops, EOS and budgets are honoured identically in every mode.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import count_forwards, make_tiny_model, never_accept_dd, noisy_copy

from autojudge.core.drafters import FallbackDrafter, LookupDrafter, NullDrafter, RejoinDrafter
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.judge import AlwaysAccept, Judge, LinearJudge, MismatchFeatures, NeverAccept


def random_prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(0, 96) for _ in range(rng.randint(1, 24))] for _ in range(n)]


class TopKJudge(Judge):
    """Accepts a mismatching draft token when it is among the target's top-K (test-local copy)."""

    name = "topk-test"
    threshold = 0.5

    def __init__(self, k: int):
        self.k = k

    def p_important(self, feats: MismatchFeatures) -> torch.Tensor:
        topk = feats.target_logits.topk(self.k, dim=-1).indices
        return (~(topk == feats.draft_tokens[:, None]).any(-1)).float()


def naive_generate(target, draft, prompt, *, mode, judge=None, k=4, max_new_tokens=40, eos=None):
    """Speculative decoding recomputed from scratch every step: no KV cache, no rollback."""
    eos = set() if eos is None else eos

    def full(model, ids):
        out = model.model(input_ids=torch.tensor([ids]))
        h = out.last_hidden_state[0]
        return h, model.lm_head(h)

    seq = list(prompt)
    out: list[int] = []
    out.append(int(full(target, seq)[1][-1].argmax()))
    while len(out) < max_new_tokens and out[-1] not in eos:
        m = 0 if mode == "ar" else min(k, max_new_tokens - len(out) - 1)
        cur = seq + out
        d = []
        for _ in range(m):
            d.append(int(full(draft, cur + d)[1][-1].argmax()))
        h, logits = full(target, cur + d)
        n0 = len(cur)
        accepted = 0
        for i in range(m):
            g = int(logits[n0 - 1 + i].argmax())
            if d[i] == g:
                accepted += 1
                continue
            if judge is not None:
                dh = full(draft, cur + d[: i + 1])[0][-1:] if judge.needs_draft_hidden else None
                feats = MismatchFeatures(
                    draft_tokens=torch.tensor([d[i]]),
                    target_tokens=torch.tensor([g]),
                    target_logits=logits[n0 - 1 + i : n0 + i],
                    target_hidden=h[n0 + i : n0 + i + 1],
                    draft_hidden=dh,
                )
                if bool(judge.accept(feats)[0]):
                    accepted += 1
                    continue
            break
        new = d[:accepted] + [int(logits[n0 - 1 + accepted].argmax())]
        for t in new:
            out.append(t)
            if t in eos or len(out) >= max_new_tokens:
                break
    return out


@pytest.fixture(scope="module")
def engine(tiny_pair, char_tokenizer):
    target, draft = tiny_pair
    return SpeculativeEngine(target, draft, char_tokenizer)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_lossless_and_never_accept_match_target_greedy_for_every_k(arch):
    target = make_tiny_model(arch, seed=3)
    draft = noisy_copy(target, 0.15, seed=4)
    eng = SpeculativeEngine(target, draft)
    accepted_any = False
    for prompt in random_prompts(8, seed=hash(arch) % 1000):
        ref = eng.generate(prompt, mode="ar", max_new_tokens=48, eos_token_ids=())
        assert len(ref.tokens) == 48
        for k in (1, 2, 3, 5, 8):
            sd = eng.generate(prompt, mode="sd", k=k, max_new_tokens=48, eos_token_ids=())
            assert sd.tokens == ref.tokens, f"lossless SD diverged (k={k})"
            nv = eng.generate(
                prompt, mode="judge", judge=NeverAccept(), k=k, max_new_tokens=48, eos_token_ids=()
            )
            assert nv.tokens == ref.tokens, f"never-accept judge diverged (k={k})"
            accepted_any |= sd.metrics.num_accepted_tokens > 0
            assert nv.metrics.num_judge_accepted == 0
    assert accepted_any, "fixture too weak: the draft never matched, rollback untested"


def test_linear_judge_at_threshold_zero_reproduces_target_greedy(engine):
    h = engine.target_model.config.hidden_size
    judge = LinearJudge({"dt": torch.randn(h)}, bias=-50.0, threshold=0.0, blocks=("dt",))
    for prompt in random_prompts(5, seed=11):
        ref = engine.generate(prompt, mode="ar", max_new_tokens=40, eos_token_ids=())
        out = engine.generate(prompt, mode="judge", judge=judge, k=4, max_new_tokens=40, eos_token_ids=())
        assert out.tokens == ref.tokens
        assert out.metrics.num_judge_calls > 0  # the judge was asked, and declined


@pytest.mark.parametrize(
    "judge_factory", [AlwaysAccept, lambda: TopKJudge(3), NeverAccept], ids=["always", "top3", "never"]
)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_judged_decoding_matches_naive_full_recompute(tiny_pair, judge_factory, k):
    target, draft = tiny_pair
    eng = SpeculativeEngine(target, draft)
    for prompt in random_prompts(4, seed=k):
        judge = judge_factory()
        ours = eng.generate(prompt, mode="judge", judge=judge, k=k, max_new_tokens=30, eos_token_ids=())
        ref = naive_generate(target, draft, prompt, mode="judge", judge=judge, k=k, max_new_tokens=30)
        assert ours.tokens == ref


@pytest.mark.parametrize("k", [1, 3, 6])
def test_a_dd_judge_that_accepts_some_mismatches_matches_naive_full_recompute(tiny_pair, k):
    """The window judged in two parts (the last proposal's `dd` costs a draft step) decides like one by one."""
    target, draft = tiny_pair
    g = torch.Generator().manual_seed(7)
    weights = {
        "dd": torch.randn(draft.config.hidden_size, generator=g),
        "dt": torch.randn(target.config.hidden_size, generator=g),
    }
    judge = LinearJudge(weights, bias=0.0, threshold=0.5, blocks=("dd", "dt"))
    eng = SpeculativeEngine(target, draft)
    accepted = 0
    for prompt in random_prompts(4, seed=30 + k):
        ours = eng.generate(prompt, mode="judge", judge=judge, k=k, max_new_tokens=30, eos_token_ids=())
        ref = naive_generate(target, draft, prompt, mode="judge", judge=judge, k=k, max_new_tokens=30)
        assert ours.tokens == ref
        accepted += ours.metrics.num_judge_accepted
    assert accepted > 0  # at k = 1 every judged mismatch is the last proposal, decided by the second call


def test_always_accept_is_draft_proposals_plus_one_bonus_per_cycle(tiny_pair):
    target, draft = tiny_pair
    eng = SpeculativeEngine(target, draft)
    res = eng.generate(
        [5, 6, 7], mode="judge", judge=AlwaysAccept(), k=4, max_new_tokens=41, eos_token_ids=()
    )
    met = res.metrics
    assert met.accepted_per_cycle == met.proposed_per_cycle  # every draft token accepted
    assert all(e == p + 1 for e, p in zip(met.emitted_per_cycle, met.proposed_per_cycle, strict=True))
    assert met.num_drafts == 8 and len(res.tokens) == 41  # 1 prefill token + 8 cycles x (4 drafts + 1 bonus)


def test_judge_features_are_taken_at_the_draft_token_position(tiny_pair):
    target, draft = tiny_pair
    seen: list[tuple[list[int], MismatchFeatures]] = []

    class Recorder(Judge):
        name = "recorder"
        needs_draft_hidden = True
        threshold = 0.5

        def p_important(self, feats):
            seen.append((list(prompt) + list(eng_out), feats))
            return torch.ones(feats.draft_tokens.shape[0])

    eng = SpeculativeEngine(target, draft)
    prompt = [3, 1, 4, 1, 5]
    eng_out: list[int] = []
    # replay step by step: record the sequence state through the drafter's view
    orig_propose = eng._draft_drafter.propose

    def spy(seq, k):
        eng_out[:] = seq[len(prompt) :]
        return orig_propose(seq, k)

    eng._draft_drafter.propose = spy
    eng.generate(prompt, mode="judge", judge=Recorder(), k=4, max_new_tokens=30, eos_token_ids=())
    assert seen, "no mismatch happened"
    for seq, feats in seen:
        # row 0 is the first mismatch; the drafts before it equal the target's greedy choices,
        # so walk those from the cycle's sequence until the target's token at the mismatch
        ctx = list(seq)
        while True:
            g = int(
                target.lm_head(target.model(input_ids=torch.tensor([ctx])).last_hidden_state[0, -1]).argmax()
            )
            if g == int(feats.target_tokens[0]):
                break
            ctx.append(g)
            assert len(ctx) < len(seq) + 8
        ctx_d = ctx + [int(feats.draft_tokens[0])]
        th = target.model(input_ids=torch.tensor([ctx_d])).last_hidden_state[0, -1]
        dh = draft.model(input_ids=torch.tensor([ctx_d])).last_hidden_state[0, -1]
        tl = target.lm_head(target.model(input_ids=torch.tensor([ctx])).last_hidden_state[0, -1])
        torch.testing.assert_close(feats.target_hidden[0], th, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(feats.draft_hidden[0], dh, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(feats.target_logits[0], tl, atol=1e-3, rtol=1e-4)
        assert int(feats.draft_tokens[0]) != int(feats.target_tokens[0])


def test_the_extra_draft_step_for_dd_is_taken_only_when_the_decision_reaches_the_last_position():
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    forwards = count_forwards(draft.model)

    eng = SpeculativeEngine(target, draft)
    needing = judged = 0
    for prompt in random_prompts(4, seed=21):
        kw = dict(k=4, max_new_tokens=40, eos_token_ids=(), reuse_cache=False)
        forwards[0] = 0
        sd = eng.generate(prompt, mode="sd", **kw)
        sd_forwards, forwards[0] = forwards[0], 0
        res = eng.generate(prompt, mode="judge", judge=never_accept_dd(), **kw)
        assert res.tokens == sd.tokens
        met = res.metrics
        pairs = list(zip(met.accepted_per_cycle, met.proposed_per_cycle, strict=True))
        # the judge rejects the first mismatch, so the last proposal's draft state is needed only
        # when that mismatch is the last proposal
        n_last = sum(a == p - 1 for a, p in pairs)
        assert forwards[0] == sd_forwards + n_last
        needing += n_last
        judged += sum(a < p for a, p in pairs)
    assert 0 < needing < judged  # the fixture has both kinds of cycle


def test_eos_stops_every_mode_at_the_same_token(engine):
    prompt = [10, 20, 30]
    free = engine.generate(prompt, mode="ar", max_new_tokens=40, eos_token_ids=())
    eos_tok = free.tokens[7]
    cut = free.tokens.index(eos_tok) + 1
    for mode, judge in (("ar", None), ("sd", None), ("judge", NeverAccept())):
        r = engine.generate(prompt, mode=mode, judge=judge, k=5, max_new_tokens=40, eos_token_ids={eos_tok})
        assert r.tokens == free.tokens[:cut]
        assert r.finish_reason == "eos"


def test_stop_sequence_truncates_text_and_tokens(engine):
    prompt = [40, 41, 42]
    free = engine.generate(prompt, mode="ar", max_new_tokens=40, eos_token_ids=())
    text = engine.tokenizer.decode(free.tokens, skip_special_tokens=True)
    stop = text[12:15]
    pos = text.find(stop)
    for mode in ("ar", "sd"):
        r = engine.generate(
            prompt, mode=mode, k=6, max_new_tokens=40, stop_sequences=(stop,), eos_token_ids=()
        )
        assert r.finish_reason == "stop"
        assert r.text == text[:pos]
        assert engine.tokenizer.decode(r.tokens, skip_special_tokens=True).find(stop) == pos
        assert stop not in engine.tokenizer.decode(r.tokens[:-1], skip_special_tokens=True)


@pytest.mark.parametrize("budget", [1, 2, 7, 13])
def test_max_new_tokens_is_exact(engine, budget):
    for mode, judge in (("ar", None), ("sd", None), ("judge", AlwaysAccept())):
        r = engine.generate([1, 2], mode=mode, judge=judge, k=5, max_new_tokens=budget, eos_token_ids=())
        assert len(r.tokens) == budget and r.finish_reason == "length"


def test_metrics_are_consistent(engine):
    r = engine.generate([9, 8, 7], mode="sd", k=4, max_new_tokens=60, eos_token_ids=())
    m = r.metrics
    assert sum(m.emitted_per_cycle) + 1 == m.num_output_tokens == 60
    assert sum(m.acceptance_histogram()) == m.num_drafts
    assert m.num_accepted_tokens == sum(m.accepted_per_cycle)
    assert m.num_target_forwards == m.num_drafts + 1
    assert 1.0 <= m.mean_acceptance_length <= 5.0
    assert 0.0 <= m.draft_acceptance_rate <= 1.0
    rates = m.acceptance_per_position()
    assert len(rates) == 4 and all(
        a >= b for a, b in zip(rates, rates[1:], strict=False)
    )  # acceptance is a prefix
    ar = engine.generate([9, 8, 7], mode="ar", max_new_tokens=20, eos_token_ids=()).metrics
    assert ar.mean_acceptance_length == 1.0 and ar.num_draft_tokens == 0 and ar.num_drafts == 19


def test_lookup_drafter_is_lossless_and_saves_target_passes(engine):
    prompt = [11, 12, 13, 14]
    ref = engine.generate(prompt, mode="ar", max_new_tokens=50, eos_token_ids=())
    look = LookupDrafter(ref.tokens)
    r = engine.generate(prompt, mode="sd", drafter=look, k=16, max_new_tokens=50, eos_token_ids=())
    assert r.tokens == ref.tokens
    assert r.metrics.num_target_forwards <= ref.metrics.num_target_forwards // 4
    # a reference that diverges midway: lookup proposals get rejected, fallback to the draft model
    wrong = ref.tokens[:20] + [(t + 1) % 96 for t in ref.tokens[20:]]
    fb = FallbackDrafter(LookupDrafter(wrong, max_ngram=3), engine._draft_drafter)
    r2 = engine.generate(prompt, mode="sd", drafter=fb, k=8, max_new_tokens=50, eos_token_ids=())
    assert r2.tokens == ref.tokens


def test_rejoin_drafter_is_lossless_and_stops_wasting_rejected_lookups(engine):
    prompt = [11, 12, 13, 14]
    ref = engine.generate(prompt, mode="ar", max_new_tokens=60, eos_token_ids=())
    # a reference that follows the target, diverges for 12 tokens, then re-joins it
    bad = [(t + 1) % 96 for t in ref.tokens[20:32]]
    ref_mixed = ref.tokens[:20] + bad + ref.tokens[32:]
    runs = {}
    for name, combine in (("rejoin", lambda lk: RejoinDrafter(lk, engine._draft_drafter, fallback_k=4)),
                          ("fallback", lambda lk: FallbackDrafter(lk, engine._draft_drafter))):  # fmt: skip
        lookup = LookupDrafter(max_ngram=3, positional=True)
        lookup.set_reference(ref_mixed, start=0, seq_len=len(prompt))
        drafter = combine(lookup)
        r = engine.generate(prompt, mode="sd", drafter=drafter, k=32, max_new_tokens=60, eos_token_ids=())
        assert r.tokens == ref.tokens, name  # lossless whichever drafter proposes
        runs[name] = (r.metrics, drafter)
    m, rejoin = runs["rejoin"]
    assert rejoin.lookup_proposals >= 2 and rejoin.fallback_proposals >= 1  # switched away and came back
    # rejected lookups cost whole verify windows: the adaptive drafter feeds fewer tokens to the target
    assert m.num_target_tokens < runs["fallback"][0].num_target_tokens
    assert m.num_target_forwards < ref.metrics.num_target_forwards // 3
    with pytest.raises(ValueError, match="min_k"):
        RejoinDrafter(LookupDrafter(), NullDrafter(), min_k=0)


def test_null_drafter_and_bad_arguments(engine):
    assert engine.generate(
        [1], mode="sd", drafter=NullDrafter(), max_new_tokens=5, eos_token_ids=()
    ).tokens == (engine.generate([1], mode="ar", max_new_tokens=5, eos_token_ids=()).tokens)
    with pytest.raises(ValueError, match="unknown mode"):
        engine.generate([1], mode="fast")
    with pytest.raises(ValueError, match="needs a judge"):
        engine.generate([1], mode="judge")
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([], mode="ar")
    no_draft = SpeculativeEngine(engine.target_model)
    with pytest.raises(ValueError, match="needs a draft model"):
        no_draft.generate([1], mode="sd")
    needs_dd = LinearJudge({"dd": torch.zeros(64)}, bias=0.0, threshold=0.5, blocks=("dd",))
    with pytest.raises(ValueError, match="needs draft hidden states"):
        engine.generate([1], mode="judge", judge=needs_dd, drafter=LookupDrafter([1, 2]))


def test_logits_path_check_accepts_supported_models(tiny_pair):
    from autojudge.core.runner import ModelRunner, UnsupportedModelError

    target, _ = tiny_pair
    ModelRunner(target).check_logits_path()  # Qwen2: logits = lm_head(last hidden state)

    class Scaled(torch.nn.Module):  # a model whose logits are post-processed
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def get_decoder(self):
            return self.inner.get_decoder()

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = out.logits * 0.5
            return out

    with pytest.raises(UnsupportedModelError, match="not lm_head"):
        ModelRunner(Scaled(target)).check_logits_path()


def test_open_engine_builds_the_transformers_engine_behind_the_engine_protocol(tiny_pair, char_tokenizer):
    from autojudge.core.backends import BACKENDS, open_engine
    from autojudge.core.engine import Engine

    target, draft = tiny_pair
    engine = open_engine("transformers", target, draft, tokenizer=char_tokenizer)
    assert isinstance(engine, SpeculativeEngine) and isinstance(engine, Engine)
    assert (
        engine.target_model is target and engine.draft_model is draft and engine.tokenizer is char_tokenizer
    )
    ref = SpeculativeEngine(target, draft, char_tokenizer).generate(
        [9, 8, 7], mode="sd", k=3, max_new_tokens=12
    )
    assert engine.generate([9, 8, 7], mode="sd", k=3, max_new_tokens=12).tokens == ref.tokens
    assert open_engine("transformers", target).draft_model is None  # target-only
    assert BACKENDS == ("transformers", "vllm")
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        open_engine("tgi", target, draft)
    with pytest.raises(TypeError, match="loaded models"):
        open_engine("transformers", "smollm2-135m-instruct")
    with pytest.raises(TypeError, match="vllm backend only"):
        open_engine("transformers", target, draft, kv_cache_gib=1.0)
