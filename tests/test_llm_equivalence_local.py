"""The local comparer backend on a real small chat model (SmolLM2-135M-Instruct, float32)."""

from __future__ import annotations

import copy

import pytest

from autojudge.core.compare.llm import (
    ComparerSettings,
    LLMEquivalenceChecker,
    LocalChatComparer,
    ReplyCache,
    Verdict,
)

pytestmark = pytest.mark.integration

Q = "What is the capital of France?"
ITEMS = [(Q, "Paris", "The capital of France is Paris."), (Q, "Answer: Paris", "It is Lyon.")]
SHORT = ComparerSettings(max_tokens=24)  # short replies keep the test quick on a shared CPU


@pytest.fixture(scope="module")
def smollm2():
    import torch

    from autojudge.core.models import load_model

    torch.manual_seed(0)
    return load_model("smollm2-135m-instruct", dtype="float32")


def test_model_loads_lazily_and_replies_are_cached(smollm2, tmp_path, monkeypatch):
    comparer = LocalChatComparer("smollm2-135m-instruct", dtype="float32")
    assert not comparer.loaded  # nothing loaded at construction: a task holding it stays light
    loads = []
    real_load = LocalChatComparer.load

    def counting_load(self):
        loads.append(self)
        if self._model is None:  # reuse the module's copy instead of reading the weights again
            self._model, self._tokenizer = smollm2.model, smollm2.tokenizer
        return real_load(self)

    monkeypatch.setattr(LocalChatComparer, "load", counting_load)
    checker = LLMEquivalenceChecker(comparer, SHORT, cache=ReplyCache(tmp_path / "c.sqlite3"))
    results = checker.check_many(ITEMS)
    assert comparer.loaded and checker.stats.backend_calls == 4
    for r in results:
        assert len(r.replies) == 2 and all(isinstance(t, str) and t.strip() for t in r.replies)
        assert r.orders == ("ab", "ba") and r.verdict in set(Verdict)
    # what the tiny model says is recorded, whatever it is: 135M parameters rarely follow the format
    assert sum(checker.stats.as_dict()["verdicts"].values()) == 2

    # a fresh comparer (as after a restart) answers from the cache and never loads the model
    fresh = LocalChatComparer("smollm2-135m-instruct", dtype="float32")
    n_loads = len(loads)
    again = LLMEquivalenceChecker(fresh, SHORT, cache=ReplyCache(tmp_path / "c.sqlite3")).check_many(ITEMS)
    assert [r.replies for r in again] == [r.replies for r in results]
    assert not fresh.loaded and len(loads) == n_loads

    # the same requests without the cache reproduce the replies (greedy decoding)
    no_cache = LLMEquivalenceChecker(comparer, SHORT).check_many(ITEMS)
    assert [r.replies for r in no_cache] == [r.replies for r in results]
    # copies (worker processes) drop the model and reload on use
    clone = copy.copy(comparer)
    assert comparer.loaded and not clone.loaded and clone.comparer_id == comparer.comparer_id


def test_seeded_samples_are_reproducible(smollm2):
    settings = ComparerSettings(both_orders=False, samples=3, temperature=0.9, max_tokens=12)

    def run():
        comparer = LocalChatComparer(
            "smollm2-135m-instruct", dtype="float32", model=smollm2.model, tokenizer=smollm2.tokenizer
        )
        return LLMEquivalenceChecker(comparer, settings).check(*ITEMS[1])

    first, second = run(), run()
    assert len(first.replies) == 3 and first.replies == second.replies and first.votes == second.votes


def test_comparer_id_names_the_model_and_dtype():
    a = LocalChatComparer("smollm2-135m-instruct", dtype="float32").comparer_id
    b = LocalChatComparer("smollm2-135m-instruct", dtype="bfloat16").comparer_id
    c = LocalChatComparer("qwen2.5-coder-1.5b-instruct", dtype="float32").comparer_id
    assert len({a, b, c}) == 3 and a.startswith("local:smollm2-135m-instruct@float32#b179c9523d0e")


@pytest.mark.slow
def test_agreement_benchmark_smoke(tmp_path):
    """bench/bench_llm_judge_agreement.py on 2 pairs with SmolLM2 (the figures come from full runs)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(repo / "bench" / "bench_llm_judge_agreement.py"), "--models", "smollm2-135m-instruct",
         "--n", "2", "--source", "synthetic", "--max-tokens", "8", "--json", str(tmp_path / "r.json")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for rule in ("restated answers checked", "verdict only (before)"):
        for orders in ("both", "(a, b) only"):
            assert f"| smollm2-135m-instruct | {rule} | {orders} |" in out.stdout
    (report,) = json.loads((tmp_path / "r.json").read_text())["reports"]
    assert report["pairs"] == 2 and report["equivalent_pairs"] == 1 and report["requests"] == 4
    assert 0 <= report["both_orders"]["agreement"] <= 1 and len(report["rows"]) == 2
    assert 0 <= report["both_orders"]["false_equivalent_of_non_equivalent"] <= 1


@pytest.mark.slow
def test_agreement_benchmark_general_set_and_scoring_from_the_cache(tmp_path):
    """The general-knowledge set through the benchmark, then scored again from the reply cache alone."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(repo / "bench" / "bench_llm_judge_agreement.py"), "--models", "smollm2-135m-instruct",
            "--set", "general", "--n", "2", "--max-tokens", "8", "--batch", "2",
            "--cache", str(tmp_path / "c.sqlite3")]  # fmt: skip
    reports = []
    for extra in ([], ["--cached-only"]):
        path = tmp_path / f"r{len(reports)}.json"
        out = subprocess.run(base + extra + ["--json", str(path)], env=env, capture_output=True, text=True,
                             timeout=900)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        (report,) = json.loads(path.read_text())["reports"]
        reports.append(report)
    first, again = reports
    assert first["pairs"] == 2 and first["equivalent_pairs"] == 1 and first["requests"] == 4
    assert again["requests"] == 0 and again["load_seconds"] == 0  # no model: every reply came from the cache
    assert [r["replies"] for r in again["rows"]] == [r["replies"] for r in first["rows"]]
    assert again["both_orders"] == first["both_orders"]
