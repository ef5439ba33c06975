"""The vLLM backend's per-step judge decision, in plain torch (no vLLM needed), against a naive loop.

``judge_step`` + ``force_accept`` must reproduce the engine's rule for every request of a
flattened batch: keep draft tokens while they match the target's greedy choice or the
judge accepts the mismatch (eligible requests only), stop at the first other position.
"""

from __future__ import annotations

import sys

import pytest
import torch

from autojudge.core.backends.vllm import VLLMUnavailableError, require_vllm
from autojudge.core.backends.vllm.judging import JudgeCounters, force_accept, judge_step, token_request_index
from autojudge.core.judge import AlwaysAccept, LinearJudge, MismatchFeatures, NeverAccept

V, H = 50, 8


def make_batch(num_draft: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = sum(num_draft)
    logits = torch.randn(n, V, generator=g) * 3
    hidden = torch.randn(n, H, generator=g)
    target = logits.argmax(-1)
    # half of the draft tokens match the target, the rest are random other tokens
    draft = torch.where(torch.rand(n, generator=g) < 0.5, target, torch.randint(0, V, (n,), generator=g))
    cu = torch.tensor(num_draft).cumsum(0).to(torch.int32)
    return draft.to(torch.int32), logits, hidden, cu


def naive(judge, draft, logits, hidden, num_draft, eligible):
    """Per request: (number of kept draft tokens, judge-accepted mismatches among them)."""
    out, start = [], 0
    for r, m in enumerate(num_draft):
        kept = judged = 0
        for i in range(start, start + m):
            d, g = int(draft[i]), int(logits[i].argmax())
            if d == g:
                kept += 1
                continue
            feats = MismatchFeatures(
                draft[i : i + 1].long(), logits[i : i + 1].argmax(-1), logits[i : i + 1], hidden[i : i + 1]
            )
            if bool(eligible[r]) and bool(judge.accept(feats)[0]) and torch.isfinite(logits[i, d]):
                kept += 1
                judged += 1
                continue
            break
        out.append((kept, judged))
        start += m
    return out


def greedy_kernel(processed, draft, num_draft):
    """What vLLM's greedy rejection kernel accepts per request after force_accept."""
    out, start = [], 0
    for m in num_draft:
        n = 0
        while n < m and int(processed[start + n].argmax()) == int(draft[start + n]):
            n += 1
        out.append(n)
        start += m
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_judge_step_matches_the_engine_rule(seed):
    num_draft = [3, 0, 5, 2, 4]
    draft, logits, hidden, cu = make_batch(num_draft, seed)
    judge = LinearJudge(
        {"dt": torch.randn(H, generator=torch.Generator().manual_seed(seed + 10))}, 0.0, 0.5, ("dt",)
    )
    eligible = torch.tensor([True, True, True, False, True])
    logits[1, int(draft[1])] = float(
        "-inf"
    )  # a forbidden draft token (bad words, allowed ids...) is never accepted
    ref = naive(judge, draft, logits, hidden, num_draft, eligible)
    dec = judge_step(
        judge, draft_tokens=draft, raw_logits=logits, processed_logits=logits.clone(), target_hidden=hidden,
        cu_num_draft_tokens=cu, eligible_requests=eligible,
    )  # fmt: skip
    req, _ = token_request_index(cu, draft.shape[0])
    kept = [int((dec.effective & (req == r)).sum()) for r in range(len(num_draft))]
    judged = [int((dec.effective & dec.accept & (req == r)).sum()) for r in range(len(num_draft))]
    assert list(zip(kept, judged, strict=True)) == ref
    processed = logits.clone()
    force_accept(processed, draft, dec.accept)
    assert greedy_kernel(processed, draft, num_draft) == [k for k, _ in ref]
    # rows the judge did not accept are untouched
    untouched = ~dec.accept
    assert torch.equal(processed[untouched], logits[untouched])
    assert sum(j for _, j in ref) > 0 or seed != 0  # the judge accepts something in this batch


def test_never_and_always_bound_the_decision():
    num_draft = [4, 4, 1]
    draft, logits, hidden, cu = make_batch(num_draft, 5)
    eligible = torch.ones(3, dtype=torch.bool)
    kw = dict(draft_tokens=draft, raw_logits=logits, processed_logits=logits, target_hidden=hidden,
              cu_num_draft_tokens=cu, eligible_requests=eligible)  # fmt: skip
    never = judge_step(NeverAccept(), **kw)
    assert not never.accept.any()
    assert torch.equal(never.kept, never.match)
    always = judge_step(AlwaysAccept(), **kw)
    assert always.effective.all() and torch.equal(always.accept, ~always.match)
    # an ineligible request (sampling, grammar, penalties) stays lossless even with AlwaysAccept
    ineligible = judge_step(AlwaysAccept(), **{**kw, "eligible_requests": torch.tensor([False, True, False])})
    req, _ = token_request_index(cu, draft.shape[0])
    assert not ineligible.accept[req != 1].any() and ineligible.accept[req == 1].any()


def test_judge_positions_keep_the_tail_of_a_window_lossless():
    """Near max_tokens the engine proposes fewer drafts; the judge must not accept past that point."""
    num_draft = [4, 4, 4]
    draft, logits, hidden, cu = make_batch(num_draft, 7)
    draft = torch.where(draft == logits.argmax(-1), (draft + 1) % V, draft)  # every draft token mismatches
    kw = dict(draft_tokens=draft, raw_logits=logits, processed_logits=logits, target_hidden=hidden,
              cu_num_draft_tokens=cu, eligible_requests=torch.ones(3, dtype=torch.bool))  # fmt: skip
    dec = judge_step(AlwaysAccept(), judge_positions=torch.tensor([4, 2, 0]), **kw)
    req, pos = token_request_index(cu, draft.shape[0])
    assert [int((dec.effective & (req == r)).sum()) for r in range(3)] == [4, 2, 0]
    assert torch.equal(dec.accept, pos < torch.tensor([4, 2, 0])[req])
    assert torch.equal(judge_step(AlwaysAccept(), **kw).accept, torch.ones_like(dec.accept))


def test_counters_count_a_sampler_output():
    c = JudgeCounters("cpu", max_positions=3)
    sampled = torch.tensor([[5, 6, -1, -1], [7, -1, -1, -1], [1, 2, 3, 4]])  # accepted 1, 0 (no drafts), 3
    c.add_verification(sampled, [3, 0, 3])
    d = c.as_dict()
    assert (d["num_drafts"], d["num_draft_tokens"], d["num_accepted_tokens"]) == (2, 6, 4)
    assert d["accepted_per_position"] == [2, 1, 1]
    c.reset()
    assert c.as_dict()["num_accepted_tokens"] == 0


def test_missing_vllm_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(VLLMUnavailableError, match=r"ajspec\[vllm\]"):
        require_vllm()


def test_engine_style_metrics_are_rebuilt_from_per_position_counts():
    from autojudge.core.metrics import GenerationMetrics

    # 5 verifications: accepted lengths {0, 1, 1, 2, 3} -> position counts [4, 2, 1]
    m = GenerationMetrics(num_drafts=5, num_draft_tokens=15, num_accepted_tokens=7, accepted_per_position=[4, 2, 1],
                          num_output_tokens=13, wall_time=2.0)  # fmt: skip
    g = m.with_cycles(k=3)
    assert sorted(g.accepted_per_cycle) == [0, 1, 1, 2, 3]
    assert sum(g.accepted_per_cycle) == m.num_accepted_tokens
    assert g.mean_acceptance_length == m.mean_acceptance_length == 12 / 5
    assert g.acceptance_histogram() == [1, 2, 1, 1]


def test_engine_judges_reach_vllm_workers_as_descriptions():
    """A judge travels as its JSON description; the worker rebuilds an equal judge through the registry."""
    import json

    from autojudge.core.backends.vllm.worker import build_judge
    from autojudge.core.judge import ProbThresholdJudge, TopKJudge

    lin = LinearJudge({"dt": torch.randn(H), "x": torch.randn(3)}, 0.3, 0.25, ("dt", "x"))
    draft, logits, hidden, _ = make_batch([4, 3])
    feats = MismatchFeatures(draft.long(), logits.argmax(-1), logits, hidden)
    for judge in (NeverAccept(), AlwaysAccept(), TopKJudge(3), ProbThresholdJudge(0.2), lin):
        description = json.loads(
            json.dumps(judge.describe())
        )  # what collective_rpc and $AUTOJUDGE_VLLM_JUDGE carry
        rebuilt = build_judge(description)
        assert type(rebuilt) is type(judge) and rebuilt.describe() == judge.describe()
        assert torch.equal(rebuilt.p_important(feats), judge.p_important(feats))  # float32 weights: exact
    assert TopKJudge(3).describe() == {"kind": "topk", "name": "top_k", "k": 3, "threshold": 0.5}
    assert ProbThresholdJudge(0.2).describe() == {
        "kind": "prob",
        "name": "prob",
        "p_min": 0.2,
        "threshold": 0.5,
    }
    assert lin.summary() == {"kind": "linear", "name": "linear", "blocks": ["dt", "x"], "bias": 0.3,
                             "threshold": 0.25, "block_dims": {"dt": H, "x": 3}}  # fmt: skip
    with pytest.raises(ValueError, match="unknown kind 'nope'.*topk"):
        build_judge({"kind": "nope", "threshold": 0.5})
    with pytest.raises(ValueError, match="bad 'linear' judge description.*bias"):
        build_judge({**lin.describe(), "bias": float("nan")})
    with pytest.raises(ValueError, match="threshold"):
        build_judge({**TopKJudge(3).describe(), "threshold": 2})


def test_dd_judges_are_refused_for_vllm(tmp_path):
    from autojudge.core.backends.vllm.worker import check_vllm_features
    from autojudge.core.run.pipeline import RunConfig

    with pytest.raises(ValueError, match=r"'dd\+dt'.*supports 'dt', 'dt\+x'"):
        check_vllm_features(LinearJudge({"dd": torch.zeros(H), "dt": torch.zeros(H)}, 0.0, 0.5, ("dd", "dt")))
    check_vllm_features(LinearJudge({"dt": torch.zeros(H), "x": torch.zeros(3)}, 0.0, 0.5, ("dt", "x")))
    for features in ("dd+dt", "all", "dt,dd+dt+x"):
        with pytest.raises(ValueError, match="--features dt"):
            RunConfig(task="gsm8k", out=tmp_path, backend="vllm", features=features)
    assert RunConfig(task="gsm8k", out=tmp_path, backend="vllm", features="dt+x").backend == "vllm"


def test_serve_passes_the_judge_description_inline_or_as_a_file(tmp_path, monkeypatch):
    """``aj serve`` puts the description in $AUTOJUDGE_VLLM_JUDGE (a file's path when large); workers read either."""
    from autojudge.cli.serve_cmd import MAX_INLINE_JUDGE, judge_env_value
    from autojudge.core.backends.vllm.plugin import ENV_JUDGE, _judge_summary, judge_description_from_env
    from autojudge.core.backends.vllm.worker import build_judge
    from autojudge.core.judge import TopKJudge

    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    small = {**TopKJudge(3).describe(), "spec": "topk:3"}
    big_judge = LinearJudge({"dt": torch.randn(2048), "x": torch.randn(3)}, -0.5, 0.4, ("dt", "x"))
    big = {**big_judge.describe(), "spec": "/abs/judge.safetensors"}
    inline, path = judge_env_value(small), judge_env_value(big)
    assert inline.startswith("{") and len(inline) <= MAX_INLINE_JUDGE
    assert not path.startswith("{") and path.startswith(str(tmp_path / "cache" / "serve"))
    assert judge_env_value(big) == path  # one file per distinct description
    for value, description in ((inline, small), (path, big)):
        monkeypatch.setenv(ENV_JUDGE, value)
        assert judge_description_from_env() == description
        assert build_judge(judge_description_from_env()).describe() == {
            k: v for k, v in description.items() if k != "spec"
        }
    summary = _judge_summary(path)  # what GET /autojudge/metrics shows: no weights
    assert summary["spec"] == "/abs/judge.safetensors" and summary["block_dims"] == {"dt": 2048, "x": 3}
    assert "weights" not in summary
    monkeypatch.setenv(ENV_JUDGE, str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="cannot read"):
        judge_description_from_env()
    monkeypatch.setenv(ENV_JUDGE, '{"spec": "topk:3"}')
    with pytest.raises(ValueError, match="'kind'"):
        judge_description_from_env()
    monkeypatch.delenv(ENV_JUDGE)
    assert judge_description_from_env() is None


def test_serve_drains_in_flight_requests_on_sigterm_by_default():
    """Regression (issue 17): vLLM's default --shutdown-timeout 0 aborted in-flight requests with 500."""
    from autojudge.cli.serve_cmd import DEFAULT_DRAIN_TIMEOUT, drain_args

    assert DEFAULT_DRAIN_TIMEOUT > 0
    assert drain_args(DEFAULT_DRAIN_TIMEOUT, ()) == ["--shutdown-timeout", str(DEFAULT_DRAIN_TIMEOUT)]
    assert drain_args(0, ["--max-num-seqs", "4"]) == ["--shutdown-timeout", "0"]
    assert drain_args(120, ["--shutdown-timeout", "5"]) == []  # an explicit vLLM flag wins
    assert drain_args(120, ["--shutdown-timeout=5"]) == []


def test_requests_arriving_while_the_server_drains_get_503(monkeypatch):
    """Regression (issue 17): a POST after SIGTERM got vLLM's 500 "cannot schedule new futures after shutdown"."""
    import asyncio
    import json
    import threading

    from autojudge.core.backends.vllm import plugin

    monkeypatch.setattr(plugin, "DRAINING", threading.Event())
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def call(method: str, path: str) -> tuple[int, bytes]:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": method, "path": path}
        asyncio.run(plugin.DrainGuard(app)(scope, receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    class Client:  # an engine client: the launcher calls its shutdown(timeout=...) on SIGTERM
        def shutdown(self, timeout=None):
            self.timeout = timeout
            return "stopped"

    client = Client()
    plugin._flag_shutdown(client)
    plugin._flag_shutdown(client)  # idempotent
    assert call("POST", "/v1/completions") == (200, b"{}")
    assert client.shutdown(timeout=120) == "stopped" and client.timeout == 120
    assert plugin.DRAINING.is_set()
    status, body = call("POST", "/v1/chat/completions")
    assert status == 503
    error = json.loads(body)["error"]
    assert error["code"] == 503 and "shutting down" in error["message"]
    assert call("GET", "/health")[0] == 200  # GETs pass
    assert calls == ["/v1/completions", "/health"]
