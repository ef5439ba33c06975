"""Greedy agreement of int8 weight-only vs bfloat16 target-only output on GSM8K test prompts.

    OMP_NUM_THREADS=1 AJ_DATA_DIR=../shared/datasets .venv/bin/python bench/quant_agreement.py \
        --model qwen2.5-coder-1.5b-instruct --n 20 --max-new-tokens 64

Decodes the first ``--n`` GSM8K test prompts (the gsm8k task's chat prompt) greedily (mode ``ar``,
:class:`~autojudge.core.batched.BatchedEngine`, ``--max-batch`` rows at once) once with the
bfloat16 model and once after ``quantize_int8_``, then prints, per prompt, the number of tokens
identical up to the first divergence, and overall the fraction of prompts fully identical.
Results as JSON to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from autojudge.core.batched import BatchedEngine
from autojudge.core.models import load_model
from autojudge.core.quant import quantize_int8_
from autojudge.plugins.manager import get_task


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=10)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    task = get_task("gsm8k")
    examples = task.load("test", limit=a.n)
    lm = load_model(a.model, dtype="bfloat16")
    prompts = [task.render_prompt(ex, lm.tokenizer) for ex in examples]

    def run(label: str) -> list[list[int]]:
        eng = BatchedEngine(lm.model, None, lm.tokenizer)
        t0 = time.perf_counter()
        res = eng.generate_batch(prompts, mode="ar", max_new_tokens=a.max_new_tokens, max_batch=a.max_batch)
        print(f"{label}: {time.perf_counter() - t0:.1f}s for {len(prompts)} prompts", flush=True)
        return [list(r.tokens) for r in res]

    ref = run("bf16")
    quantize_int8_(lm.model)
    q = run("int8")
    rows = []
    for i, (x, y) in enumerate(zip(ref, q, strict=True)):
        p = _prefix(x, y)
        rows.append(
            {"i": i, "bf16_len": len(x), "int8_len": len(y), "identical_prefix": p, "identical": x == y}
        )
        print(f"prompt {i:2d}: {p:3d}/{len(x)} tokens identical{'  (full)' if x == y else ''}")
    full = sum(r["identical"] for r in rows)
    mean_prefix = sum(r["identical_prefix"] for r in rows) / len(rows)
    tot = sum(r["identical_prefix"] for r in rows)
    tot_len = sum(r["bf16_len"] for r in rows)
    summary = {
        "model": a.model,
        "n": len(rows),
        "max_new_tokens": a.max_new_tokens,
        "fully_identical": full,
        "mean_identical_prefix": mean_prefix,
        "identical_prefix_tokens": tot,
        "bf16_tokens": tot_len,
        "torch": torch.__version__,
    }
    print(json.dumps(summary))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
