"""``aj run --backend vllm``: the whole pipeline with vLLM decoding equals the transformers one.

SmolLM2-135M-Instruct target and its first 24 of 30 layers as draft, float32, the toy task.
The run mines and trains with autojudge's transformers engine; the same mined data then
goes through a second run whose validation and evaluation decode inside vLLM with the
judge. Every mode (target-only, lossless SD, the judge at a threshold, Top-K) must produce
the same outputs, answers and correctness as the transformers run. Marked ``integration``
and ``vllm``; fails with the install hint when vLLM is missing.
"""

from __future__ import annotations

import pytest
from vllm_helpers import save_layer_dropped_draft

from autojudge.core import presets
from autojudge.core.backends.vllm import require_vllm
from autojudge.core.run.evaluate import read_rows
from autojudge.core.run.pipeline import RunConfig, run_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]


def test_aj_run_backend_vllm_equals_transformers(tmp_path):
    require_vllm()
    draft_dir = save_layer_dropped_draft(tmp_path / "draft24")
    common = dict(
        task="toy-arith", draft=str(draft_dir), target=presets.SMOLLM2, dtype="float32", mine_limit=3,
        val_limit=1, eval_limit=2, max_new_tokens=32, max_mismatches=6, k=4, thresholds=(0.3,),
        val_thresholds=(), top_k=(4,), features="dt+x", progress=False,
    )  # fmt: skip
    hf = run_pipeline(RunConfig(out=tmp_path / "hf", **common))
    vl = run_pipeline(
        RunConfig(out=tmp_path / "vllm", backend="vllm", mined=tmp_path / "hf" / "mined", **common)
    )

    assert vl["training"]["n_labels"] == hf["training"]["n_labels"] > 0
    modes = {"ar", "sd", "judge@0.3", "topk:4"}
    assert modes <= set(hf["modes"]) and modes <= set(vl["modes"])
    for name in modes:
        a = {r["prompt_id"]: r for r in read_rows(tmp_path / "hf" / hf["samples"][name])}
        b = {r["prompt_id"]: r for r in read_rows(tmp_path / "vllm" / vl["samples"][name])}
        assert a.keys() == b.keys() and len(a) == 2
        for pid in a:
            assert b[pid]["output"] == a[pid]["output"], (name, pid)
            assert b[pid]["answer"] == a[pid]["answer"] and b[pid]["correct"] == a[pid]["correct"]
        assert vl["modes"][name]["accuracy"] == hf["modes"][name]["accuracy"]
        if name != "ar":  # the vLLM path reports the judge's accepts like the engine does
            assert sum(r["metrics"]["num_judge_accepted"] for r in b.values()) == sum(
                r["metrics"]["num_judge_accepted"] for r in a.values()
            ), name
    assert vl["modes"]["sd"]["mean_acceptance_length"] > 1.0
