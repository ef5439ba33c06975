"""`aj run --task code` plumbing on tiny random models (float32, char tokenizer): every stage and the report.

Tiny random models write no code, so every answer is ``None`` (no judge is trained: the run says
so and recommends lossless SD); what is tested is that the code task goes through the whole
pipeline: resolution of ``code`` to ``humaneval``, prompts, extraction, pass@1 in the report.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_char_tokenizer, make_tiny_model, noisy_copy

from autojudge.core.models import LoadedModel, ModelPair
from autojudge.core.run.pipeline import PipelineError, RunConfig, run_pipeline


@pytest.fixture(scope="module")
def pair() -> ModelPair:
    tok = make_char_tokenizer()
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    mk = lambda name, m: LoadedModel(name, m, tok, None, torch.float32, torch.device("cpu"))  # noqa: E731
    return ModelPair(draft=mk("tiny-draft", draft), target=mk("tiny-target", target), tokenizer=tok)


def test_code_task_runs_end_to_end_with_pass_at_1(pair, tmp_path):
    out = tmp_path / "run"
    s = run_pipeline(RunConfig(task="code", out=out, mine_limit=2, val_limit=1, eval_limit=2, max_new_tokens=6, k=3,
                               top_k=(2,), progress=False), pair=pair)  # fmt: skip
    assert s["task"] == "humaneval" and s["metric"] == "pass@1" and s["settings"]["dataset"] is None
    assert s["eval_split"] == "eval" and len(s["eval_prompt_ids"]) == 2
    assert all(i.startswith("humaneval-") for i in s["eval_prompt_ids"])
    assert s["mode_order"][:2] == ["ar", "sd"] and s["recommended_mode"] == "sd"
    meta = json.loads((out / "mined" / "meta.json").read_text())
    assert meta["task"] == "humaneval" and meta["dataset"] == "humaneval" and meta["split"] == "mine"
    assert "pass@1" in (out / "report.md").read_text()
    assert all(0.0 <= a["accuracy"] <= 1.0 for a in s["modes"].values())


def test_unknown_dataset_stops_the_run_before_any_work(pair, tmp_path):
    with pytest.raises(PipelineError, match="valid datasets"):
        run_pipeline(RunConfig(task="code", dataset="apps", out=tmp_path / "r", progress=False), pair=pair)
