"""`-k auto`: the cost model, the measured curve and acceptance, the cache, the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import make_char_tokenizer, save_tiny_pair

from autojudge.core import kchoice
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.kchoice import CostCurve, best_k, expected_tokens, predicted_speedup


def test_expected_tokens():
    assert expected_tokens(0.0, 5) == 1.0 and expected_tokens(1.0, 5) == 6.0
    assert expected_tokens(0.5, 1) == pytest.approx(1.5)
    assert expected_tokens(0.8, 4) == pytest.approx(sum(0.8**i for i in range(5)))


def test_best_k_follows_the_costs():
    # a GPU-like curve (verify costs about one step): long drafts pay
    flat = CostCurve(draft_step=0.01, verify={k: 0.1 for k in range(0, 33)}, context=256)
    assert best_k(flat, 0.9)[0] >= 10
    # a CPU-like curve (verify cost grows with k) and a weak pair: short drafts
    steep = CostCurve(draft_step=0.03, verify={k: 0.1 * (1 + 0.3 * k) for k in range(0, 33)}, context=256)
    k, speedup = best_k(steep, 0.5)
    assert k <= 3 and speedup == pytest.approx(predicted_speedup(steep, 0.5, k))
    # when nothing pays, the prediction says so (< 1x)
    awful = CostCurve(draft_step=0.2, verify={k: 0.1 * (1 + k) for k in range(0, 33)}, context=256)
    assert best_k(awful, 0.3)[1] < 1.0


def test_measured_curve_and_cached_choice(tiny_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path))
    target, draft = tiny_pair
    curve = kchoice.measure_costs(target, draft, ks=(1, 2, 4), context=16, reps=1)
    assert (
        set(curve.verify) == {0, 1, 2, 4}
        and all(v > 0 for v in curve.verify.values())
        and curve.draft_step > 0
    )
    engine = SpeculativeEngine(target, draft, make_char_tokenizer())
    calls = []
    orig = kchoice.measure_costs
    monkeypatch.setattr(
        kchoice, "measure_costs", lambda *a, **kw: calls.append(1) or orig(*a, context=16, reps=1)
    )
    choice = kchoice.choose_k(engine, {"pair": "tiny"})
    assert choice["k"] in kchoice.K_CANDIDATES and 0.0 <= choice["alpha"] <= 1.0
    again = kchoice.choose_k(engine, {"pair": "tiny"})
    assert again == choice and len(calls) == 1  # measured once, then read from the cache
    cached = json.loads((tmp_path / kchoice.CACHE_FILE).read_text())
    (entry,) = cached.values()
    assert entry["pair"]["pair"] == "tiny" and len(entry["alpha"]) == 1
    assert next(iter(entry["alpha"])).startswith("sd:")


def test_aj_decode_k_auto(tmp_path, monkeypatch):
    from autojudge.cli.main import build_cli

    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    draft, target = save_tiny_pair(tmp_path)
    args = ["decode", "--draft", str(draft), "--target", str(target), "--dtype", "float32", "--raw", "-p", "12+3=",
            "--max-new-tokens", "8", "--json"]  # fmt: skip
    res = CliRunner().invoke(build_cli(), [*args, "-k", "auto"])
    assert res.exit_code == 0, res.output
    assert "-k auto: k = " in res.output
    bad = CliRunner().invoke(build_cli(), [*args, "-k", "many"])
    assert bad.exit_code != 0 and "integer or 'auto'" in bad.output
