"""Helpers shared by the vLLM backend tests: a layer-dropped SmolLM2 draft and a judge that accepts mismatches."""

from __future__ import annotations

from pathlib import Path

import torch

from autojudge.core.models import layer_dropped_copy, load_model
from autojudge.judges.artifact import save_judge

QUESTIONS = [
    "What is the capital of France? Answer in one sentence.",
    "Tom has 3 apples and buys 5 more. How many apples does he have? Think step by step.",
    "Write a Python function that reverses a string, and explain how it works in detail with an example.",
    "List three prime numbers.",
]


def chat(tok, text: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def save_layer_dropped_draft(out: Path, layers: int = 24) -> Path:
    """A draft model directory: the first ``layers`` decoder layers of SmolLM2-135M (bf16 weights, as cached)."""
    target = load_model("smollm2-135m-instruct", dtype="bfloat16")
    layer_dropped_copy(target.model, list(range(layers))).save_pretrained(out)
    target.tokenizer.save_pretrained(out)
    return out


def linear_judge_artifact(path: Path, target, draft) -> Path:
    """A ``dt+x`` judge that accepts some mismatches: mostly "accept when p_draft > ~0.17", plus a random dt term."""
    g = torch.Generator().manual_seed(0)
    weights = {
        "dt": torch.randn(target.hidden_size, generator=g) * 0.05,
        "x": torch.tensor([-12.0, 0.3, 0.0]),
    }
    return save_judge(
        path, weights, 2.0, ["dt", "x"], threshold=0.5, draft=draft.fingerprint(), target=target.fingerprint()
    )
