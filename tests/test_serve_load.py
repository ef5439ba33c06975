"""``aj serve`` under load (issue 17): 32 concurrent clients, bad requests, memory, SIGTERM drain.

One real ``aj serve`` on 127.0.0.1: SmolLM2-135M-Instruct in float32, its first 8 layers as
draft, ``k`` = 3, the ``topk:3`` judge, 32 sequences per batch. The load is the one of
``bench/bench_serve_load.py`` (imported from there): a mix of streaming and non-streaming
``/v1/completions`` and ``/v1/chat/completions`` requests, greedy, 8-24 new tokens, each
client sending at most ``PER_CLIENT`` requests within ``DURATION`` seconds, twice: a warm-up
run, then the measured one. About 4 minutes on 2 busy cores (start-up included).

Invariants (over the load phase, where every request is greedy and unconstrained):

* every request answers 200 and completes (finish reason ``length`` or ``stop``, streams end
  with ``[DONE]``, usage reported), nothing is lost: one result per request sent;
* ``/autojudge/metrics`` counters never decrease between samples;
* each verification of a request emits its accepted draft tokens plus one target token, and
  each request's prefill emits one token; tokens past ``max_tokens`` or a stop are cut, and a
  finished request is never verified again. So, with N requests, D = delta ``num_drafts``,
  A = delta ``num_accepted_tokens`` and T = the completion tokens the responses report:
  ``N + D <= T <= N + D + A``;
* ``num_draft_tokens == k * num_drafts`` (every verification checks ``k`` drafts: no request
  comes near ``max_model_len``); every draft token is eligible for the judge
  (``num_eligible_draft_tokens == num_draft_tokens``); ``0 < num_judge_accepted <=
  num_mismatches_reached <= num_judge_accepted + num_drafts`` (a verification reaches the
  mismatches the judge accepted and at most one it rejected), ``num_judge_accepted <=
  num_accepted_tokens <= num_draft_tokens``, ``num_judged_steps <= num_verify_steps``; after the run the
  per-position counts sum to ``num_accepted_tokens`` and do not increase with the position;
* the RSS of the server's process tree (API server, engine core, worker), during and after the
  load, stays less than ``RSS_GROWTH_BOUND`` above the highest RSS seen during a warm-up run of
  the same load (see the constant);
* bad requests get a 4xx with vLLM's JSON error and a message; requests with parameters the
  judge does not handle (sampling, penalties, grammars) answer 200 and add no draft token to the
  judge's eligible count; a normal request afterwards still answers 200;
* SIGTERM with requests in flight: they all complete with 200 (``aj serve`` passes
  ``--shutdown-timeout``), a new request meanwhile gets 503, and the process exits with 0
  within ``EXIT_BOUND`` seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
from vllm_helpers import save_layer_dropped_draft

from autojudge.core.backends.vllm import require_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

_spec = importlib.util.spec_from_file_location(
    "bench_serve_load", Path(__file__).resolve().parents[1] / "bench" / "bench_serve_load.py"
)
load = importlib.util.module_from_spec(_spec)
sys.modules["bench_serve_load"] = load  # dataclasses look their module up by name
_spec.loader.exec_module(load)

K = 3
CLIENTS = 32
DURATION = 30.0  # seconds in which clients start requests
PER_CLIENT = 3  # requests per client at most
MIN_TOKENS, MAX_TOKENS = 8, 24
START_TIMEOUT = 900  # seconds: vLLM's two processes start on a busy 2-core CI machine
#: RSS growth allowed over the load, bytes, from the highest RSS seen during the warm-up burst (two
#: requests per client, the load's shapes). The tree (API server, engine core, its worker: each imports
#: torch and vLLM; the worker holds the fp32 target and draft and the 0.5 GiB KV cache) holds ~4 GiB.
#: Measured (docs/vllm.md "Under load"): in the first minute of load the RSS rises by up to ~170 MiB
#: (the worker's glibc heap: logits of up to 32 x 4 rows x 49,152 floats per step, allocated and
#: trimmed, plus new batch shapes; 117 and 131 MiB over a one-request-per-client warm-up in two runs of
#: this test, 203 MiB over a two-request-per-client one in CI), then stays flat (+29 MiB over the next
#: 4 minutes and ~370 requests of a 300 s bench run). So the warm-up is the load itself, run once:
#: the measured second run starts past that rise. 192 MiB then clears allocator noise; a leak of
#: 2.5 MiB per request (~80 requests here: e.g. a finished request's logits or hidden states kept)
#: exceeds it. Smaller leaks need the bench's longer runs.
RSS_GROWTH_BOUND = 192 * 2**20
EXIT_BOUND = 90.0  # seconds from SIGTERM to exit: the drain (a few seconds) + vLLM's teardown (~20 s)


def test_aj_serve_under_load(tmp_path):
    require_vllm()
    draft = save_layer_dropped_draft(tmp_path / "draft8", layers=8)
    port = load.free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    cmd = load.serve_command(port, draft, judge="topk:3", k=K, max_num_seqs=CLIENTS, kv_cache_gib=0.5)
    proc = load.start_server(cmd, log_path)
    t_start = time.monotonic()
    report: dict = {}
    try:
        report["start_s"] = load.wait_ready(base, proc, log_path, START_TIMEOUT)

        # warm-up: the load itself, once, so its batch shapes and the allocator pools they need
        # exist before the memory baseline (a two-request-per-client burst left up to 203 MiB of
        # allocator growth to the measured load in CI)
        warm = load.run_load(base, clients=CLIENTS, duration=DURATION, requests_per_client=PER_CLIENT,
                             min_tokens=MIN_TOKENS, max_tokens=MAX_TOKENS, server_pid=proc.pid)  # fmt: skip
        assert all(r.ok for r in warm.results), [r.error for r in warm.results if not r.ok][:3]

        # ---- the load
        run = load.run_load(base, clients=CLIENTS, duration=DURATION, requests_per_client=PER_CLIENT,
                            min_tokens=MIN_TOKENS, max_tokens=MAX_TOKENS, server_pid=proc.pid)  # fmt: skip
        summary = load.summarize(run)
        report["load"] = summary
        bad = [f"{r.kind} {r.status}: {r.error[:300]}" for r in run.results if not r.ok]
        assert not bad, bad[:5]
        assert len(run.results) >= CLIENTS  # each client sent at least one request, none lost
        assert all(
            len(r.finish_reasons) == 1 and r.finish_reasons[0] in ("length", "stop") for r in run.results
        )
        assert all(1 <= r.completion_tokens <= MAX_TOKENS for r in run.results)
        assert {r.kind for r in run.results} == set(load.KINDS)

        # ---- metrics consistent with the responses
        series = [run.metrics_before, *run.metrics_samples, run.metrics_after]
        for name in load.COUNTERS:
            values = [m[name] for m in series]
            assert values == sorted(values), (name, values)
        d = {name: run.delta(name) for name in load.COUNTERS}
        n = len(run.results)
        tokens = sum(r.completion_tokens for r in run.results)
        assert n + d["num_drafts"] <= tokens <= n + d["num_drafts"] + d["num_accepted_tokens"], (n, tokens, d)
        assert d["num_draft_tokens"] == K * d["num_drafts"], d
        assert d["num_eligible_draft_tokens"] == d["num_draft_tokens"], d
        assert 0 < d["num_judge_accepted"] <= d["num_mismatches_reached"], d
        # reached = the judge's accepts + at most one rejected mismatch per (request, verification)
        assert d["num_mismatches_reached"] - d["num_judge_accepted"] <= d["num_drafts"], d
        assert d["num_judge_accepted"] <= d["num_accepted_tokens"] <= d["num_draft_tokens"], d
        assert d["num_judged_steps"] <= d["num_verify_steps"], d
        after = run.metrics_after
        per_position = after["accepted_per_position"]
        assert len(per_position) == K and sum(per_position) == after["num_accepted_tokens"]
        assert per_position == sorted(per_position, reverse=True)

        # ---- memory flat
        baseline = max(warm.rss_before, *warm.rss_samples, warm.rss_after, run.rss_before)
        report["rss_mib"] = {"warm-up": [round(x / 2**20) for x in (warm.rss_before, *warm.rss_samples)],
                             "load": [round(x / 2**20) for x in (run.rss_before, *run.rss_samples, run.rss_after)],
                             "baseline": round(baseline / 2**20)}  # fmt: skip
        assert run.rss_before > 500 * 2**20  # the tree was found (model + KV cache)
        assert run.rss_after - baseline < RSS_GROWTH_BOUND, report["rss_mib"]
        assert max(run.rss_samples) - baseline < RSS_GROWTH_BOUND, report["rss_mib"]

        # ---- bad requests: 4xx with a message; unhandled parameters: 200, lossless; server alive
        rows = load.run_bad(base)
        report["bad"] = rows
        for row in rows:
            if row["expect"] == "4xx":
                assert 400 <= row["status"] < 500, row
                assert json.loads(row["message"])["error"]["message"], row
            else:
                assert row["status"] == 200 and not row["message"], row
                assert row["completion_tokens"] >= 1, row
                if not row["judged"]:
                    assert row["delta_num_eligible_draft_tokens"] == 0, row
                    assert row["delta_num_judge_accepted"] == 0, row
        res = load.request(base, "chat", load.payload_for("chat", 0, 8))
        assert res.ok and res.completion_tokens >= 1, res
        assert load.get_json(base, "/health")[0] == 200

        # ---- SIGTERM while requests are in flight: drained, then a clean exit
        s = load.run_sigterm(base, proc, inflight=4, max_tokens=MAX_TOKENS)
        report["sigterm"] = {"statuses": [r.status for r in s["results"]], "late": s["late"].status,
                             "returncode": s["returncode"], "exit_s": s["exit_s"]}  # fmt: skip
        assert len(s["results"]) == 4 and s["alive_threads"] == 0, report["sigterm"]
        assert all(r.ok and r.completion_tokens >= 1 for r in s["results"]), [r.error for r in s["results"]]
        assert s["late"].status in (503, 0), s["late"]  # refused (503) or the port already closed
        assert s["returncode"] == 0 and s["exit_s"] < EXIT_BOUND, report["sigterm"]
    finally:
        report["total_s"] = round(time.monotonic() - t_start, 1)
        print(json.dumps(report, indent=1, default=str))
        if proc.poll() is None:
            load.stop_server(proc)
