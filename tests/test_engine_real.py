"""Engine invariants on real weights (marked ``integration``; CI runs them).

SmolLM2-135M-Instruct with a layer-dropped copy of itself as draft, and the
Qwen2.5-Coder 0.5B -> 1.5B pair, in float32: lossless speculative decoding and a
judge that never accepts reproduce target-only greedy output token for token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autojudge.core.engine import SpeculativeEngine
from autojudge.core.judge import NeverAccept, TopKJudge
from autojudge.core.models import layer_dropped_copy, load_model, load_pair

pytestmark = pytest.mark.integration

QUESTIONS = [
    "What is the capital of France? Answer in one sentence.",
    "Tom has 3 apples and buys 5 more. How many apples does he have? Think step by step.",
    "Write a Python function that reverses a string.",
]


def chat(tok, text: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


@pytest.fixture(scope="module")
def smol():
    target = load_model("smollm2-135m-instruct", dtype="float32")
    # the first 24 of 30 layers: ~1.9 tokens per cycle at k=4 (every other layer never agrees)
    draft = layer_dropped_copy(target.model, list(range(24)))
    return target, draft


def test_smollm2_lossless_equals_target_greedy_for_every_k(smol):
    target, draft = smol
    eng = SpeculativeEngine(target.model, draft, target.tokenizer)
    accepted = 0
    for q in QUESTIONS[1:]:
        prompt = chat(target.tokenizer, q)
        ref = eng.generate(prompt, mode="ar", max_new_tokens=32)
        assert ref.tokens
        for k in (1, 4, 7):
            sd = eng.generate(prompt, mode="sd", k=k, max_new_tokens=32)
            assert sd.tokens == ref.tokens, f"k={k}: {sd.text!r} != {ref.text!r}"
            accepted += sd.metrics.num_accepted_tokens
        nv = eng.generate(prompt, mode="judge", judge=NeverAccept(), k=4, max_new_tokens=32)
        assert nv.tokens == ref.tokens
    assert accepted > 0


def test_smollm2_judged_mode_accepts_mismatches(smol):
    target, draft = smol
    eng = SpeculativeEngine(target.model, draft, target.tokenizer)
    prompt = chat(target.tokenizer, QUESTIONS[1])
    sd = eng.generate(prompt, mode="sd", k=5, max_new_tokens=40)
    lossy = eng.generate(prompt, mode="judge", judge=TopKJudge(5), k=5, max_new_tokens=40)
    assert lossy.metrics.num_judge_accepted > 0
    assert lossy.metrics.mean_acceptance_length > sd.metrics.mean_acceptance_length
    # up to the first judge-accepted token the output is the target's own greedy output
    first = next(i for i, (a, b) in enumerate(zip(lossy.tokens, sd.tokens, strict=False)) if a != b)
    assert lossy.tokens[:first] == sd.tokens[:first] and first > 0


def test_qwen_pair_lossless_equals_target_greedy():
    pair = load_pair("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", dtype="float32")
    eng = SpeculativeEngine(pair.target.model, pair.draft.model, pair.tokenizer)
    prompt = chat(pair.tokenizer, QUESTIONS[1])
    ref = eng.generate(prompt, mode="ar", max_new_tokens=24)
    sd = eng.generate(prompt, mode="sd", k=5, max_new_tokens=24)
    assert sd.tokens == ref.tokens
    assert sd.metrics.num_drafts < ref.metrics.num_drafts  # the draft agreed somewhere


def test_aj_decode_prints_text_and_metrics():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "autojudge.cli.main", "decode", "--draft", "smollm2-135m-instruct",
        "--target", "smollm2-135m-instruct", "--prompt", QUESTIONS[0], "--max-new-tokens", "16",
        "--mode", "judge", "--judge", "topk:2", "--dtype", "float32", "--json",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout)
    assert res["mode"] == "judge" and res["judge"]["name"] == "top_k"
    assert "Paris" in res["text"]
    # draft == target: (nearly) every draft token matches
    assert res["metrics"]["draft_acceptance_rate"] >= 0.9
    assert res["metrics"]["num_output_tokens"] == len(res["tokens"])


def test_the_shipped_gsm8k_judge_loads_by_name_on_the_default_pair(monkeypatch):
    """`--judge gsm8k` on the pair it was trained for: threshold 0 is target-only greedy (float32),
    the calibrated threshold accepts some mismatching draft tokens and stays close to it."""
    from autojudge.judges.spec import load_judge_spec

    monkeypatch.delenv("AJ_SHIPPED_JUDGES", raising=False)  # the package's own folder
    pair = load_pair("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", dtype="float32")
    eng = SpeculativeEngine(pair.target.model, pair.draft.model, pair.tokenizer)
    prompt = chat(pair.tokenizer, QUESTIONS[1])
    ref = eng.generate(prompt, mode="ar", max_new_tokens=48)
    never = load_judge_spec("gsm8k", target=pair.target, draft=pair.draft, threshold=0.0)
    assert eng.generate(prompt, mode="judge", judge=never, k=5, max_new_tokens=48).tokens == ref.tokens
    judge = load_judge_spec("gsm8k", target=pair.target, draft=pair.draft)
    assert 0 < judge.threshold < 1
    out = eng.generate(prompt, mode="judge", judge=judge, k=5, max_new_tokens=48)
    assert out.metrics.num_judge_calls > 0
    assert out.text.strip()
    # `aj run --judge auto` (the default) picks it for GSM8K on this pair, and mines for 8-shot prompts
    from autojudge.core.run.stages import auto_judge
    from autojudge.plugins.code.humaneval import HumanEvalTask
    from autojudge.plugins.math.gsm8k import GSM8K8ShotTask, GSM8KTask

    assert auto_judge(GSM8KTask(), pair)[0] == "gsm8k"
    assert auto_judge(GSM8K8ShotTask(), pair)[0] is None
    assert auto_judge(HumanEvalTask(), pair)[0] == "code"  # trained on MBPP train, fits the same pair
